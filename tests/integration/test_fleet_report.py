"""`linkedge-image fleet report` end to end: a real served model (2 gunicorn workers, capture
and a shadow on) is asked about rows with one shifted feature; Debian's Prometheus scrapes it
with the fleet's alert rules loaded; the report is written from Prometheus, a fleet status and
a rollout report, and Chromium renders it: the screenshot shows the drifted feature's red bar
and the firing alert's badge, and the page names the trucks, the feature and the alert."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import requests

from inference_image.fleet_metrics import PrometheusAccess, PrometheusError, query
from inference_image.fleet_report import ALERT, OVER
from inference_image.fleet_status import fleet_rows, summary
from inference_image.schema import APS_FEATURES
from tests.conftest import synthetic_aps
from tests.png import colours, rows_with
from tests.unit.test_drift_metrics import records

from .test_gunicorn_server import Server, free_port

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "roles" / "monitoring" / "files" / "linkedge-rules.yml"
READER, READER_PASSWORD = "report-reader", "a reader's password"
with warnings.catch_warnings():  # deprecated (PEP 594), and what makes a bcrypt hash here
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt
PROMETHEUS = "/usr/bin/prometheus"
SHIFTED = APS_FEATURES[7]
# The real rules wait 10 minutes; this one fires at once, so the test sees a firing alert.
TEST_RULE = """groups:
  - name: test
    rules:
      - alert: LinkEdgeDriftNow
        expr: max by (truck) (linkedge_drift_psi_max) > 0.25
        labels: {severity: warning}
"""


@pytest.fixture
def prometheus(tmp_path: Path):
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is missing: apt-get install prometheus (make test-tools)")

    def start(target_port: int) -> str:
        """Prometheus scraping the server, its API behind a user (as the role monitoring's
        depot: basic_auth_users with a bcrypt hash)."""
        assert RULES.is_file(), RULES
        port = free_port()
        hashed = crypt.crypt(READER_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
        (tmp_path / "web.yml").write_text(json.dumps({"basic_auth_users": {READER: hashed}}))
        (tmp_path / "test-rule.yml").write_text(TEST_RULE)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES), str(tmp_path / "test-rule.yml")],
            "scrape_configs": [
                {
                    "job_name": "linkedge-inference",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{target_port}"], "labels": {"truck": "truck-1"}}
                    ],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(json.dumps(config))
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.config.file={tmp_path / 'web.yml'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append((process, log))
        return f"http://127.0.0.1:{port}"

    processes: list = []
    yield start
    for process, log in processes:
        process.terminate()
        process.wait(20)
        log.close()


def wait_for(url: str, expression: str, timeout: float = 60) -> list:
    access = PrometheusAccess(url, READER, READER_PASSWORD)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = query(access, expression, timeout=5)
        except PrometheusError:
            result = []
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{expression} never had a result at {url}")


def test_the_report_shows_drift_alerts_capture_and_rollouts(
    tiny_bundle, tmp_path: Path, prometheus
) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is missing: apt-get install chromium (make test-tools)")
    server = Server(
        tiny_bundle.path,
        tmp_path,
        nthread=1,
        via_env=True,
        extra_env={
            "LINKEDGE_CAPTURE_DIR": str(tmp_path / "capture"),
            "LINKEDGE_SHADOW_BUNDLE": str(tiny_bundle.path),
        },
    )
    try:
        server.wait_ready()
        rows, _ = synthetic_aps(600, seed=21)
        rows[:, 7] *= 4  # a sensor reading four times too high
        for start in range(0, 600, 50):
            body = {"instances": records(rows[start : start + 50])}
            assert requests.post(f"{server.base}/predict", json=body, timeout=10).status_code == 200
        url = prometheus(server.port)
        wait_for(url, 'ALERTS{alertname="LinkEdgeDriftNow",alertstate="firing"}')
        wait_for(url, "linkedge_shadow_rows_total")

        now = time.time()
        statuses = {
            "truck-1": {
                "serving_version": tiny_bundle.version,
                "channel": "stable",
                "outcome": "updated",
                "finished_at": now - 60,
            },
            "truck-2": {
                "serving_version": "aps-xgb-old",
                "channel": "stable",
                "outcome": "failed",
                "reason": "depot_unavailable",
                "finished_at": now - 30,
            },
        }
        trucks = fleet_rows(statuses, {"stable": tiny_bundle.version}, now, 7200)
        (tmp_path / "status.json").write_text(
            json.dumps({"summary": summary(trucks), "trucks": trucks})
        )
        reports = tmp_path / "rollout-reports"
        reports.mkdir()
        (reports / "20261202T070000Z.json").write_text(
            json.dumps(
                {
                    "playbook": "rollout.yml",
                    "finished": "2026-12-02T07:00:00+00:00",
                    "duration_seconds": 42.0,
                    "counts": {"updated": 1, "failed": 1},
                    "trucks": {"truck-1": {"new_version": tiny_bundle.version}},
                }
            )
        )
        out = tmp_path / "report" / "fleet.html"
        (tmp_path / "reader.pw").write_text(READER_PASSWORD + "\n")
        command = [
            sys.executable,
            "-m",
            "inference_image",
            "fleet",
            "report",
            "--out",
            str(out),
            "--status",
            str(tmp_path / "status.json"),
            "--rollouts",
            str(reports),
            "--prometheus",
            url,
        ]
        # Without the user: one line naming the refusal, exit 2, no page.
        refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2, refused.stderr
        assert "401" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert not out.exists()
        user = [
            "--prometheus-user",
            READER,
            "--prometheus-password-file",
            str(tmp_path / "reader.pw"),
        ]
        result = subprocess.run(
            command + user, cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()

    page = out.read_text()
    assert "<script" not in page and "http" not in page.split("</style>")[1].split("Generated")[0]
    screenshot = out.with_suffix(".png")
    shot = subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,1600",
            f"--screenshot={screenshot}",
            out.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    dom = subprocess.run(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--dump-dom", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for text in (
        "truck-1",
        "truck-2",
        "behind",
        SHIFTED,
        "LinkEdgeDriftNow",
        "rollout.yml",
        "100.0% of 600 rows",
    ):
        assert text in dom, text
    pixels = colours(screenshot)
    red_bar = bytes.fromhex(OVER.lstrip("#"))
    badge = bytes.fromhex(ALERT.lstrip("#"))
    assert pixels.get(red_bar, 0) > 200, "no drifted feature's bar in the screenshot"
    assert pixels.get(badge, 0) > 100, "no firing alert's badge in the screenshot"
    assert rows_with(screenshot, ALERT)[0] < rows_with(screenshot, OVER)[0]  # alerts come first
    kept = REPO / "build" / "figures" / "fleet-report.png"  # for docs and the closing note
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, kept)
    shutil.copyfile(out, kept.with_suffix(".html"))

"""The MLOps loop on the MQTT scenario's truck and depot, end to end with real parts.

Runs last (file order). The truck was converged with site.yml and the role
linkedge.edge.monitoring: Debian's prometheus-node-exporter (with the outcome record's
textfile metrics) and vmagent from Debian's victoria-metrics, which scrapes the node exporter and
the inference service every 5 s and sends to the depot's Prometheus (Debian's package, same role
in depot mode) over TLS, keeping what it cannot send on disk. The serving container captures
every answer (rate 1.0, 256 KiB segments) and keeps a 2-minute drift window. Proven here:

- the truck's node, container and LinkEdge metrics reach the depot, labelled with the truck;
- the forwarder loses no samples while the depot is down and the forwarder restarts meanwhile;
- unshifted real rows keep every PSI under the threshold and raise no alert; rows with one
  sensor reading ten times too high raise LinkEdgeDriftAboveThreshold in Prometheus (the
  scenario shortens its `for:` to 30 s), naming that feature;
- rows answered before a power cut are all collected afterwards (collect.yml), each once, whole
  and with the answer the client got; a second collect brings nothing;
- a retrain on the official rows plus the collected rows and a maintenance-labels file goes
  through the paired champion-vs-challenger gate.

Figures go to build/figures/mqtt-telemetry.json (time from drift to alert, the monitoring parts'
memory on the truck, what capture collected).
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
from truck_api import Playbooks, Release, save_figures, truck_http, truck_ip

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
sys.path.insert(0, str(PROJECT))
from inference_image.capture_spool import read_segment  # noqa: E402
from inference_image.data import load_aps_csv  # noqa: E402
from inference_image.schema import APS_FEATURES  # noqa: E402

TRUCK, DEPOT, NETWORK = "mqtt-truck", "mqtt-depot", "linkedge-mqtt"
PKI = PROJECT / "build" / "mqtt-pki"
SECRETS = json.loads((PKI / "secrets.json").read_text())
DATA = Path(os.environ.get("LINKEDGE_DATA_DIR", PROJECT.parent / "shared" / "aps"))
SPOOL = "/var/lib/linkedge/capture"
PLAYBOOKS = Playbooks(PROJECT, EPHEMERAL)
SHIFTED = "aa_000"  # the sensor that reads ten times too high on the drifting truck
FIGURES: dict = {}


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield FIGURES
    save_figures("mqtt-telemetry", FIGURES, PROJECT, EPHEMERAL)


class Prometheus:
    """The depot's Prometheus over HTTPS, its certificate checked against the scenario's CA (by
    the CA, not the name: the certificate names mqtt-depot, which the host cannot resolve)."""

    def __init__(self, address: str, user: str | None = "depot-reader") -> None:
        self.base = f"https://{address}:9090"
        self.context = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
        self.context.check_hostname = False
        self.headers = {}
        if user:
            token = base64.b64encode(f"{user}:{SECRETS['metrics-reader']}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers=self.headers)
        with urllib.request.urlopen(request, context=self.context, timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        return self.get("/api/v1/query", **params)["result"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def firing(self, alert: str) -> list[dict]:
        return self.query(f'ALERTS{{alertname="{alert}", alertstate="firing", truck="{TRUCK}"}}')


@pytest.fixture(scope="module")
def prometheus() -> Prometheus:
    return Prometheus(truck_ip(DEPOT, NETWORK))


def wait_for(what: str, check, timeout: float, interval: float = 1.0):
    """CHECK's first truthy answer within TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def on(host: str, *command: str) -> str:
    return subprocess.run(
        ["docker", "exec", host, *command], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """The unlabeled APS sample as /predict records (null for a missing value)."""
    rows = load_aps_csv(DATA / "aps_failure_test_set.unlabeled-sample.csv").features
    return [
        {
            name: None if math.isnan(value) else value
            for name, value in zip(APS_FEATURES, row, strict=True)
        }
        for row in rows.astype(float).tolist()
    ]


def predict(batch: list[dict]) -> list[dict]:
    status, body = truck_http(TRUCK, "POST", "/predict", {"instances": batch}, timeout=30)
    assert status == 200, body
    return body["predictions"]


def test_the_truck_reports_to_the_depot(prometheus: Prometheus) -> None:
    for job in ("node", "linkedge-inference"):
        wait_for(
            f"{TRUCK}'s {job} at the depot",
            lambda job=job: prometheus.value(f'up{{truck="{TRUCK}", job="{job}"}}') == 1,
            120,
        )
    status, meta = truck_http(TRUCK, "GET", "/v2/models/aps-classifier")
    assert status == 200
    serving = wait_for(
        "the outcome record's textfile metrics at the depot",
        lambda: prometheus.query(f'linkedge_truck_serving_info{{truck="{TRUCK}"}}'),
        60,
    )
    assert serving[0]["metric"]["version"] == meta["versions"][0]
    assert prometheus.value(f'node_memory_MemAvailable_bytes{{truck="{TRUCK}"}}') > 0
    assert prometheus.value(f'linkedge_container_memory_bytes{{truck="{TRUCK}"}}') > 0
    # Without a user, the depot answers neither a query nor a remote write.
    anonymous = Prometheus(truck_ip(DEPOT, NETWORK), user=None)
    for path in ("/api/v1/query?query=up", "/api/v1/write"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{anonymous.base}{path}", data=b"" if "write" in path else None
                ),
                context=anonymous.context,
                timeout=10,
            )
        assert refused.value.code == 401, path
    cpu = prometheus.value(f'linkedge_container_cpu_seconds_total{{truck="{TRUCK}"}}')
    assert cpu is not None and cpu > 0
    memory = {}
    for unit in ("prometheus-node-exporter", "linkedge-vmagent"):
        current = on(TRUCK, "systemctl", "show", "--value", "--property=MemoryCurrent", unit)
        memory[unit] = round(int(current.strip()) / 2**20, 1)
    FIGURES["truck_monitoring_memory_mib"] = memory
    FIGURES["truck_monitoring_memory_mib_total"] = round(sum(memory.values()), 1)


def test_the_forwarder_keeps_its_backlog_while_the_depot_is_down(prometheus: Prometheus) -> None:
    """The depot stops for 60 s and the forwarder restarts meanwhile: the gap's 5-s scrapes
    still arrive (from the forwarder's disk buffer) once the depot is back; at most the scrapes
    missed while the forwarder restarted are absent."""
    on(DEPOT, "systemctl", "stop", "prometheus")
    gap_start = time.time()
    try:
        time.sleep(25)
        on(TRUCK, "systemctl", "restart", "linkedge-vmagent")
        time.sleep(35)
    finally:
        on(DEPOT, "systemctl", "start", "prometheus")
    gap_end = time.time()
    expected = math.floor((gap_end - gap_start) / 5)
    selector = f'up{{truck="{TRUCK}", job="node"}}'
    window = f"{int(gap_end - gap_start)}s"

    def delivered() -> float | None:
        try:
            count = prometheus.value(f"count_over_time({selector}[{window}])", at=gap_end)
        except OSError:
            return None  # Prometheus is still starting
        return count if count is not None and count >= expected - 2 else None

    started = time.monotonic()
    count = wait_for("the gap's samples at the depot", delivered, 120, interval=2)
    FIGURES["forwarder_gap"] = {
        "depot_down_seconds": round(gap_end - gap_start, 1),
        "scrapes_expected": expected,
        "samples_delivered": int(count),
        "seconds_to_catch_up": round(time.monotonic() - started, 1),
    }


class Traffic(threading.Thread):
    """Sends batches of rows (cycling) until stopped."""

    def __init__(self, rows: list[dict], batch: int = 200, pause: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.rows, self.batch, self.pause = rows, batch, pause
        self.stopped = threading.Event()
        self.sent = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                start = self.sent % len(self.rows)
                predict(self.rows[start : start + self.batch])
                self.sent += self.batch
                self.stopped.wait(self.pause)
        except BaseException as exc:  # reported by the test
            self.failure = exc


def test_drift_on_one_sensor_raises_the_alert_at_the_depot(
    prometheus: Prometheus, records: list[dict]
) -> None:
    alert = "LinkEdgeDriftAboveThreshold"
    unshifted = records[:1000]
    for start in range(0, len(unshifted), 250):
        predict(unshifted[start : start + 250])
    psi_max = f'linkedge_drift_psi_max{{truck="{TRUCK}"}}'
    wait_for(
        "the unshifted window at the depot",
        lambda: (prometheus.value(f'linkedge_drift_window_rows{{truck="{TRUCK}"}}') or 0) >= 1000,
        60,
    )
    calm = prometheus.value(psi_max)
    assert calm is not None and calm < 0.25, f"unshifted real rows gave PSI {calm}"
    assert not prometheus.firing(alert)
    FIGURES["drift_psi_max_unshifted"] = round(calm, 3)

    shifted = [
        row | {SHIFTED: row[SHIFTED] * 10 if row[SHIFTED] is not None else None}
        for row in records[1000:3000]
    ]
    traffic = Traffic(shifted)
    started = time.monotonic()
    traffic.start()
    try:
        firing = wait_for("the drift alert firing", lambda: prometheus.firing(alert), 300, 1)
        seconds = time.monotonic() - started
    finally:
        traffic.stopped.set()
        traffic.join(60)
    assert traffic.failure is None, traffic.failure
    assert firing[0]["metric"]["severity"] == "warning"
    by_feature = {
        sample["metric"]["feature"]: float(sample["value"][1])
        for sample in prometheus.query(f'linkedge_drift_psi{{truck="{TRUCK}"}}')
    }
    worst = max(by_feature, key=by_feature.get)
    assert worst == SHIFTED and by_feature[SHIFTED] > 0.25, sorted(by_feature.items())[:5]
    FIGURES["drift_to_alert_seconds"] = round(seconds, 1)
    FIGURES["drift_rows_sent_until_alert"] = traffic.sent
    FIGURES["drift_psi_shifted_feature"] = round(by_feature[SHIFTED], 3)
    FIGURES["drift_alert_for"] = "30s (scenario; shipped rule: 10m)"


def collect(into: Path) -> list[Path]:
    rc, _seconds, _report, output = PLAYBOOKS.run(
        "collect.yml", "-e", f"linkedge_collect_dir={into}"
    )
    assert rc == 0, output[-3000:]
    return sorted((into / TRUCK).glob("*.jsonl"))


def wait_serving(timeout: float = 180) -> float:
    started = time.monotonic()
    wait_for(
        f"{TRUCK} serving again",
        lambda: truck_http(TRUCK, "GET", "/v2/health/ready", timeout=2, check=False)[0] == 200,
        timeout,
        0.5,
    )
    return time.monotonic() - started


def captured_total() -> float:
    """linkedge_capture_records_total on the truck: rows its workers have written."""
    _, text = truck_http(TRUCK, "GET", "/metrics")
    for line in text.splitlines():
        if line.startswith("linkedge_capture_records_total "):
            return float(line.split()[1])
    return 0.0


def test_capture_keeps_every_answered_row_across_a_power_cut(records: list[dict]) -> None:
    home = PROJECT / "build" / "mqtt-capture"
    shutil.rmtree(home, ignore_errors=True)
    before = set(collect(home))  # what earlier tests captured: out of the way
    marker = APS_FEATURES.index("ab_000")
    marked = [row | {"ab_000": 1_000_000.0 + number} for number, row in enumerate(records[:600])]
    answers = {}
    written_before = captured_total()
    for start in range(0, len(marked), 150):
        batch = marked[start : start + 150]
        for row, answer in zip(batch, predict(batch), strict=True):
            answers[int(row["ab_000"])] = answer
    # Each worker's writer thread writes the rows just after their answers; the cut comes once
    # they are written (to the page cache, not yet synced: the cut tests the spool's recovery).
    wait_for(
        "the 600 rows written to the spool",
        lambda: captured_total() >= written_before + len(marked),
        30,
        0.2,
    )
    # The power cut: the truck (its engine, the serving container, the spool's open segment)
    # is killed, then booted.
    subprocess.run(["docker", "kill", TRUCK], check=True, capture_output=True)
    subprocess.run(["docker", "start", TRUCK], check=True, capture_output=True)
    FIGURES["capture_power_cut_seconds_to_serving"] = round(wait_serving(), 1)

    after = collect(home)
    new = [path for path in after if path not in before]
    assert new, "nothing was collected after the power cut"
    found: dict[int, dict] = {}
    for path in new:
        for record in read_segment(path):  # every line's CRC checked
            value = record["inputs"][marker]
            if value is not None and 1_000_000 <= value < 1_000_000 + len(marked):
                assert int(value) not in found, f"row {int(value)} collected twice"
                found[int(value)] = record
    assert sorted(found) == sorted(answers), (
        f"{len(answers)} rows answered before the cut, {len(found)} collected; missing: "
        f"{sorted(set(answers) - set(found))[:10]}"
    )
    for number, record in found.items():
        assert record["label"] == answers[number]["label"]
        assert abs(record["probability"] - answers[number]["probability"]) <= 1e-6
    assert not list((home / TRUCK).glob(".incoming/*")), "a partial segment was left"
    assert on(TRUCK, "find", f"{SPOOL}/sealed", "-name", "*.jsonl").strip() == ""
    again = collect(home)
    assert again == after, "a second collect brought segments again"
    FIGURES["capture_collected"] = {
        "segments_after_cut": len(new),
        "bytes_after_cut": sum(path.stat().st_size for path in new),
        "marked_rows_answered": len(answers),
        "marked_rows_collected": len(found),
    }


def test_a_retrain_on_collected_rows_goes_through_the_gate() -> None:
    """The official sample plus the collected rows, labelled by a maintenance record ("no APS
    failure" over the scenario's run): a challenger (60 rounds) is trained on them and compared
    with the champion's parameters (release v2, 40 rounds) on the same folds of the same rows."""
    home = PROJECT / "build" / "mqtt-capture" / TRUCK
    segments = sorted(home.glob("*.jsonl"))
    assert segments, "run after the capture test"
    rows = [record for path in segments for record in read_segment(path)]
    times = [float(record["time"]) for record in rows]
    data = PROJECT / "build" / "mqtt-retrain"
    shutil.rmtree(data, ignore_errors=True)
    (data / "captured" / TRUCK).mkdir(parents=True)
    training = DATA / "aps_failure_training_set.sample.csv"
    (data / training.name).symlink_to(training)
    for path in segments:
        shutil.copy2(path, data / "captured" / TRUCK / path.name)
    (data / "maintenance-labels.csv").write_text(
        f"truck,start,end,aps_failure\n{TRUCK},{min(times) - 1:.3f},{max(times) + 1:.3f},no\n"
    )
    cli = [sys.executable, "-m", "inference_image"]
    bundle = data / "bundle"
    started = time.monotonic()
    trained = subprocess.run(
        [*cli, "train", "--data", str(data), "--out", str(bundle), "--n-estimators", "60",
         "--skip-evaluation", "--nthread", "2"],
        cwd=PROJECT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    card = json.loads((bundle / "model_card.json").read_text())
    captured = card["data"]["captured"]
    assert captured["rows"] == len(rows), captured
    champion = PROJECT / "build" / "releases" / "v2" / "bundle"
    gate = subprocess.run(
        [*cli, "compare", "--challenger", str(bundle), "--champion", str(champion),
         "--data", str(data), "--repetitions", "3", "--outer-folds", "3"],
        cwd=PROJECT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert gate.returncode in (0, 1), gate.stderr[-3000:]
    verdict = json.loads(gate.stdout)
    assert gate.returncode == 0, f"the gate refused the retrain: {verdict}"
    FIGURES["retrain"] = {
        "captured_rows": len(rows),
        "card_captured": captured,
        "gate": {key: verdict[key] for key in ("verdict", "refused", "reason")},
        "seconds": round(time.monotonic() - started, 1),
    }


def test_a_shadow_release_reports_its_agreement_at_the_depot(
    prometheus: Prometheus, records: list[dict]
) -> None:
    """rollout.yml with inference_service_shadow_image: the truck keeps serving its release and
    runs the other one (already on the truck) in shadow; clients get the serving model's
    answers only, and the shadow's agreement reaches the depot."""
    status, meta = truck_http(TRUCK, "GET", "/v2/models/aps-classifier")
    assert status == 200
    releases = {path.name: Release(path) for path in (PROJECT / "build" / "releases").glob("v[12]")}
    serving = next(r for r in releases.values() if r.model_version == meta["versions"][0])
    shadow = next(r for r in releases.values() if r is not serving)
    present = subprocess.run(
        ["docker", "exec", TRUCK, "docker", "image", "inspect", shadow.image_id],
        capture_output=True,
    )
    if present.returncode != 0:  # the scenario's earlier tests did not roll it out: do so
        for release in (shadow, serving):
            rc, _seconds, _report, output = PLAYBOOKS.run(
                "rollout.yml", "-e", f"model_version={release.name}"
            )
            assert rc == 0, output[-3000:]
    rc, _seconds, _report, output = PLAYBOOKS.run(
        "rollout.yml",
        "-e",
        f"model_version={serving.name}",
        "-e",
        f"inference_service_shadow_image={shadow.image_id}",
    )
    assert rc == 0, output[-3000:]
    status, body = truck_http(TRUCK, "POST", "/predict", {"instances": records[:400]}, 30)
    assert status == 200 and body["model_version"] == serving.model_version, body
    rows = f'linkedge_shadow_rows_total{{truck="{TRUCK}"}}'
    wait_for(
        "the shadow's rows at the depot",
        lambda: (prometheus.value(f"sum({rows})") or 0) >= 400,
        60,
    )
    by_labels = {
        (sample["metric"]["model"], sample["metric"]["shadow"]): float(sample["value"][1])
        for sample in prometheus.query(rows)
    }
    agreement = (by_labels.get(("pos", "pos"), 0) + by_labels.get(("neg", "neg"), 0)) / sum(
        by_labels.values()
    )
    ready = prometheus.query(f'linkedge_shadow_ready{{truck="{TRUCK}"}}')
    assert ready and ready[0]["metric"]["version"] == shadow.model_version
    assert float(ready[0]["value"][1]) == 1
    assert agreement > 0.9, by_labels
    FIGURES["shadow"] = {
        "serving": serving.model_version,
        "shadow": shadow.model_version,
        "rows": int(sum(by_labels.values())),
        "agreement": round(agreement, 4),
    }
    # The next rollout without the setting ends the shadow.
    rc, _seconds, _report, output = PLAYBOOKS.run(
        "rollout.yml", "-e", f"model_version={serving.name}"
    )
    assert rc == 0, output[-3000:]
    _, text = truck_http(TRUCK, "GET", "/metrics")
    assert "linkedge_shadow_ready" not in text

"""``linkedge-image sensor``: the simulated truck sensor, against a real Mosquitto and a real
server; and its user errors (one line on stderr, exit status 2, no traceback)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from inference_image.data import REQUEST_SAMPLE_FILE, default_data_dir
from tests.conftest import MQTT_SENSOR_USER, MosquittoBroker

REPO = Path(__file__).resolve().parents[2]
TRUCK = "truck-3"


@pytest.fixture
def sample() -> Path:
    data_dir = default_data_dir()
    if data_dir is None or not (data_dir / REQUEST_SAMPLE_FILE).exists():
        pytest.skip("no unlabeled APS sample: set LINKEDGE_DATA_DIR or provide ../shared/aps")
    return data_dir / REQUEST_SAMPLE_FILE


def sensor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "inference_image", "sensor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def broker_args(broker: MosquittoBroker) -> list[str]:
    return broker.sensor_args(TRUCK)


def test_the_sensor_reports_answers_and_latency(
    tiny_bundle, mqtt_broker, mqtt_server, sample: Path, tmp_path: Path
):
    mqtt_server(tiny_bundle.path, mqtt_broker, TRUCK)
    out = tmp_path / "report.json"
    run = sensor(
        *broker_args(mqtt_broker),
        "--rows",
        str(sample),
        "--count",
        "300",
        "--rate",
        "500",
        "--wait-answers",
        "--out",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert json.loads(out.read_text()) == report
    assert report["topic"] == f"linkedge/{TRUCK}/aps/features"
    assert (report["sent"], report["rows"], report["answered"]) == (300, 300, 300)
    assert (report["lost"], report["duplicated"], report["errors"]) == (0, 0, 0)
    assert report["lost_ids"] == [] and report["unacknowledged"] == 0
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]

    # Batches of rows per message, as fast as the broker takes them.
    batched = sensor(
        *broker_args(mqtt_broker),
        "--rows",
        str(sample),
        "--count",
        "20",
        "--batch",
        "50",
        "--wait-answers",
    )
    assert batched.returncode == 0, batched.stderr
    report = json.loads(batched.stdout)
    assert (report["sent"], report["rows"], report["answered"], report["lost"]) == (20, 1000, 20, 0)


def test_the_sensor_without_waiting_for_answers(mqtt_broker, sample: Path):
    """Publishing only (QoS 0 and 1): nobody needs to answer."""
    for qos in ("0", "1"):
        run = sensor(*broker_args(mqtt_broker), "--rows", str(sample), "--count", "50",
                     "--qos", qos, "--timeout", "2")  # fmt: skip
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert report["sent"] == 50 and "answered" not in report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def wrong_password(tmp_path: Path) -> Path:
    path = tmp_path / "wrong.password"
    path.write_text("not-the-password\n")
    return path


USER_ERRORS = {
    # name: (arguments replacing the good ones, text the one line must contain)
    "missing rows file": ({"--rows": "/nonexistent/rows.csv"}, "file not found"),
    "zero rate": ({"--rate": "0"}, "--rate must be a positive number"),
    "negative rate": ({"--rate": "-5"}, "--rate must be a positive number"),
    "NaN rate": ({"--rate": "nan"}, "--rate must be a positive number"),
    "bad count": ({"--count": "0"}, "--count must be at least 1"),
    "bad batch": ({"--batch": "0"}, "--batch must be at least 1"),
    "bad truck": ({"--truck": "a/b"}, "--truck must match"),
    "refused connection": ({"--port": "FREE"}, "cannot reach the MQTT broker"),
    "authentication failure": ({"--password-file": "WRONG"}, "refused the connection"),
    "missing password file": ({"--password-file": "/nonexistent/pw"}, "cannot be read"),
    "password without user": ({"--username": None}, "--password-file needs --username"),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_sensor_user_errors_are_one_line_and_exit_2(
    case: str, mqtt_broker, sample: Path, wrong_password: Path
):
    changes, text = USER_ERRORS[case]
    options = {
        "--port": str(mqtt_broker.port),
        "--truck": TRUCK,
        "--username": MQTT_SENSOR_USER,
        "--password-file": str(mqtt_broker.password_files[MQTT_SENSOR_USER]),
        "--rows": str(sample),
        "--count": "5",
    }
    for option, value in changes.items():
        if value == "FREE":
            value = str(free_port())
        elif value == "WRONG":
            value = str(wrong_password)
        options[option] = value
    args = [item for option, value in options.items() if value is not None
            for item in (option, value)]  # fmt: skip
    run = sensor(*args, timeout=60)
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("linkedge-image sensor: "), lines[0]
    assert text in lines[0], lines[0]
    assert "Traceback" not in run.stderr
    assert run.stdout == ""

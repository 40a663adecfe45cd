"""The MQTT adapter when things move: the broker restarts in the middle of a stream, a
server is stopped (SIGTERM) in the middle of a stream while another one shares the
subscription (a handover). Every id is answered exactly once, counted by the sensor CLI
(``linkedge-image sensor --wait-answers``) from real MQTT messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from inference_image.data import REQUEST_SAMPLE_FILE, default_data_dir
from tests.conftest import MosquittoBroker, mqtt_metric

REPO = Path(__file__).resolve().parents[2]
TRUCK = "truck-9"


def sample_file() -> Path:
    data_dir = default_data_dir()
    if data_dir is None or not (data_dir / REQUEST_SAMPLE_FILE).exists():
        pytest.skip("no unlabeled APS sample: set LINKEDGE_DATA_DIR or provide ../shared/aps")
    return data_dir / REQUEST_SAMPLE_FILE


def start_sensor(broker: MosquittoBroker, out: Path, count: int, rate: float) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = broker.sensor_command(TRUCK, sample_file(), count, out, 60, "--rate", str(rate))
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_sensor(sensor: subprocess.Popen, out: Path) -> dict:
    stdout, stderr = sensor.communicate(timeout=180)
    assert out.exists(), f"no report (exit {sensor.returncode}):\n{stderr.decode()}"
    report = json.loads(out.read_text())
    assert json.loads(stdout) == report
    return report


def wait_answered(server, at_least: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = mqtt_metric(server.base, "linkedge_mqtt_messages_total", {"outcome": "answered"})
        if answered >= at_least:
            return
        time.sleep(0.1)
    pytest.fail(f"the server answered fewer than {at_least} messages in {timeout} s")


def test_a_broker_restart_loses_nothing_and_answers_nothing_twice(
    tiny_bundle, persistent_mqtt_broker, mqtt_server, tmp_path: Path
):
    """The broker (persistence on) restarts in the middle of a stream: the sensor and the
    server reconnect and resume their sessions; every id is answered exactly once."""
    broker = persistent_mqtt_broker
    state = tmp_path / "state"
    state.mkdir()
    server = mqtt_server(tiny_bundle.path, broker, TRUCK, LINKEDGE_MQTT_STATE_DIR=str(state))
    count = 1500
    out = tmp_path / "sensor.json"
    sensor = start_sensor(broker, out, count, rate=250)
    wait_answered(server, 300)
    broker.restart()
    report = finish_sensor(sensor, out)
    assert report["sent"] == count
    assert (report["answered"], report["errors"]) == (count, 0), report
    # No answer published twice. "redelivered" (not asserted): copies the broker sent the
    # sensor again because the sensor's PUBACK did not reach it before it stopped.
    assert (report["lost"], report["duplicated"], report["unexpected"]) == (0, 0, 0), report
    assert report["reconnects"] >= 1, report
    # Published in the moment after the restart, before the servers subscribed again (the
    # broker does not keep shared subscriptions): "No matching subscribers", sent again.
    assert report["republished"] >= 0
    assert sensor.returncode == 0
    # The server counted every message once as answered; what came again was a duplicate.
    wait_answered(server, count)
    answered = mqtt_metric(server.base, "linkedge_mqtt_messages_total", {"outcome": "answered"})
    received = mqtt_metric(server.base, "linkedge_mqtt_received_total")
    duplicates = mqtt_metric(server.base, "linkedge_mqtt_messages_total", {"outcome": "duplicate"})
    assert answered == count
    assert received == count + duplicates
    assert "lost the connection to the broker" in server.log()
    assert server.process.poll() is None


def test_a_handover_answers_every_id_exactly_once(
    tiny_bundle, mqtt_broker, mqtt_server, tmp_path: Path
):
    """Two servers of the same truck (different client ids) share the subscription; the old
    one is stopped with SIGTERM in the middle of a stream: it answers what it took and
    leaves, the new one takes the rest. No id is lost or answered twice."""
    old = mqtt_server(tiny_bundle.path, mqtt_broker, TRUCK, client_id="old-server")
    new = mqtt_server(tiny_bundle.path, mqtt_broker, TRUCK, client_id="new-server")
    count = 2000
    out = tmp_path / "sensor.json"
    sensor = start_sensor(mqtt_broker, out, count, rate=300)
    wait_answered(old, 200)
    taken_before = mqtt_metric(old.base, "linkedge_mqtt_received_total")
    assert old.stop() == 0, old.log()
    report = finish_sensor(sensor, out)
    assert (report["answered"], report["errors"]) == (count, 0), report
    assert (report["lost"], report["duplicated"], report["unexpected"]) == (0, 0, 0), report
    assert sensor.returncode == 0
    new_answered = mqtt_metric(new.base, "linkedge_mqtt_messages_total", {"outcome": "answered"})
    assert taken_before > 0 and 0 < new_answered <= count - taken_before  # both served
    # The old server's workers left cleanly: unsubscribed, answered, session dropped.
    log = old.log()
    assert "MQTT: old-server-0 disconnected" in log and "MQTT: old-server-1 disconnected" in log
    assert "unanswered" not in log and "stay with the broker" not in log
    broker_log = mqtt_broker.log()
    assert "Client old-server-0 disconnected" in broker_log
    assert "Client old-server-1 disconnected" in broker_log


def test_a_killed_worker_comes_back_as_the_same_client_and_answers_what_it_took(
    tiny_bundle, mqtt_broker, mqtt_server, tmp_path: Path
):
    """SIGKILL one worker in the middle of a stream: gunicorn starts another, which takes the
    free slot, connects with the same client id, resumes the session and gets the messages
    the dead one had taken but not acknowledged. Nothing is lost (an answer the dead worker
    had published but not seen accepted may come twice: at least once)."""
    import signal

    state = tmp_path / "state"
    state.mkdir()
    server = mqtt_server(
        tiny_bundle.path, mqtt_broker, TRUCK, client_id="killed", LINKEDGE_MQTT_STATE_DIR=str(state)
    )
    count = 1500
    out = tmp_path / "sensor.json"
    sensor = start_sensor(mqtt_broker, out, count, rate=250)
    wait_answered(server, 300)
    victim = min(server.worker_pids())
    os.kill(victim, signal.SIGKILL)
    report = finish_sensor(sensor, out)
    assert (report["answered"], report["errors"], report["lost"]) == (count, 0, 0), report
    assert report["unexpected"] == 0
    log = server.log()
    assert log.count("(session resumed)") == 1, log  # the replacement, as killed-0 or -1
    assert server.process.poll() is None and len(server.worker_pids()) == 2


def test_without_a_broker_the_server_serves_http_and_stops_promptly(
    tiny_bundle, mqtt_broker, mqtt_server
):
    """The broker goes away: HTTP serves on (the adapters retry in the background), and a
    SIGTERM still stops the server within a few seconds (not the whole graceful timeout)."""
    import requests

    server = mqtt_server(tiny_bundle.path, mqtt_broker, TRUCK)
    mqtt_broker.stop()
    deadline = time.monotonic() + 10
    while mqtt_metric(server.base, "linkedge_mqtt_connected") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mqtt_metric(server.base, "linkedge_mqtt_connected") == 0
    vector = tiny_bundle.smoke_vectors[0]
    record = dict(zip(tiny_bundle.feature_names, vector["inputs"], strict=True))
    response = requests.post(f"{server.base}/predict", json=record, timeout=10)
    assert response.status_code == 200
    started = time.monotonic()
    assert server.stop() == 0, server.log()
    assert time.monotonic() - started < 15
    assert "lost the connection to the broker" in server.log()

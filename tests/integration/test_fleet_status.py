"""`linkedge-image fleet status` against a real Mosquitto broker holding trucks' retained
status records (published with mosquitto_pub, as the inference_service role publishes them)
and a depot directory with channel pointers written by inference_image.channels."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.broker import MQTT_DEPOT_OBSERVER_USER, MQTT_SENSOR_USER, MQTT_STATUS_USER
from inference_image.channels import Release, build_pointer, pointer_bytes
from inference_image.contract import CHANNELS_DIR

from ..conftest import MosquittoBroker, _need_mosquitto

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def status_broker(tmp_path: Path):
    _need_mosquitto()
    broker = MosquittoBroker(tmp_path / "mosquitto", status_users=True)
    yield broker
    broker.stop()


def publish_status(broker: MosquittoBroker, truck: str, record: dict | None) -> None:
    """Retained, QoS 1, as roles/inference_service/tasks/outcome.yml does (None clears it)."""
    payload = ["-n"] if record is None else ["-m", json.dumps(record, indent=2)]
    address = ["-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5", "-q", "1", "-r"]
    user = ["-u", MQTT_STATUS_USER, "-P", broker.passwords[MQTT_STATUS_USER]]
    subprocess.run(
        ["mosquitto_pub", *address, "-t", f"linkedge/{truck}/status", *payload, *user],
        check=True,
        capture_output=True,
        timeout=10,
    )


def write_pointer(depot: Path, channel: str, version: str, sequence: int) -> None:
    release = Release({"version": version}, "0" * 64, f"releases/{version}/manifest.json")
    pointer = build_pointer(channel, sequence, release, "publish", None)
    (depot / CHANNELS_DIR).mkdir(parents=True, exist_ok=True)
    (depot / CHANNELS_DIR / f"{channel}.json").write_bytes(pointer_bytes(pointer))


def record(serving: str | None, outcome: str, age: float, channel: str | None = "stable", **more):
    return {
        "truck": "x",
        "outcome": outcome,
        "serving_version": serving,
        "channel": channel,
        "finished_at": time.time() - age,
        "reason": None,
        **more,
    }


def fleet_status(broker: MosquittoBroker, *options: str, user: str = MQTT_DEPOT_OBSERVER_USER):
    command = [sys.executable, "-m", "inference_image", "fleet", "status"]
    login = ["--username", user, "--password-file", str(broker.password_files[user])]
    return subprocess.run(
        [*command, "--broker-port", str(broker.port), *login, *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fleet_status_flags_stale_behind_failed_and_deferred_trucks(status_broker, tmp_path):
    depot = tmp_path / "depot"
    write_pointer(depot, "stable", "aps-xgb-v2", 4)
    write_pointer(depot, "canary", "aps-xgb-v3", 2)
    trucks = {
        "truck-ok": record("aps-xgb-v2", "unchanged", 60),
        "truck-deferred": record(
            "aps-xgb-v1", "deferred", 30, reason="guard_file: /run/parked does not exist"
        ),
        "truck-stale": record("aps-xgb-v2", "unchanged", 3 * 86400),
        "truck-failed": record(
            "aps-xgb-v2", "failed", 10, channel="canary", reason="depot_unavailable: refused"
        ),
        "truck-push": record("aps-xgb-v1", "updated", 120, channel=None),
        "truck-gone": record("aps-xgb-v1", "updated", 5),
    }
    for truck, status in trucks.items():
        publish_status(status_broker, truck, status)
    publish_status(status_broker, "truck-gone", None)  # an empty retained message clears it

    result = fleet_status(status_broker, "--depot", str(depot), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {row["truck"]: row for row in report["trucks"]}
    assert set(rows) == set(trucks) - {"truck-gone"}
    assert rows["truck-ok"]["flags"] == [] and rows["truck-ok"]["channel_version"] == "aps-xgb-v2"
    assert rows["truck-deferred"]["flags"] == ["behind", "deferred"]
    assert rows["truck-stale"]["flags"] == ["stale"]
    assert rows["truck-failed"]["flags"] == ["behind", "failed"]
    assert rows["truck-failed"]["channel_version"] == "aps-xgb-v3"
    assert rows["truck-push"]["flags"] == [] and rows["truck-push"]["channel_version"] is None
    assert 2.5 * 86400 < rows["truck-stale"]["age_seconds"] < 3.5 * 86400
    assert report["summary"] == {
        "trucks": 5,
        "stale": 1,
        "behind": 2,
        "failed": 1,
        "deferred": 1,
        "ok": 2,
    }

    table = fleet_status(status_broker, "--depot", str(depot))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["TRUCK", "SERVING"]
    failed_line = next(line for line in lines if line.startswith("truck-failed"))
    assert "behind,failed: depot_unavailable: refused" in failed_line
    assert lines[-1] == "5 trucks: 2 ok, 1 stale, 2 behind, 1 failed, 1 deferred"

    # Without a depot nothing can be behind; a shorter --stale-after makes more trucks stale.
    quick = json.loads(fleet_status(status_broker, "--json", "--stale-after", "45").stdout)
    assert quick["summary"]["behind"] == 0
    assert {row["truck"] for row in quick["trucks"] if "stale" in row["flags"]} == {
        "truck-ok",
        "truck-stale",
        "truck-push",
    }


def test_fleet_status_user_errors_are_one_line_and_exit_2(status_broker, tmp_path):
    publish_status(status_broker, "truck-1", record("aps-xgb-v1", "updated", 5))
    # A user the ACL does not let read the statuses: Mosquitto grants the subscription and
    # sends nothing, so an empty fleet says what to check.
    unseen = fleet_status(status_broker, user=MQTT_SENSOR_USER)
    assert unseen.returncode == 0 and unseen.stdout.splitlines()[-1].startswith("0 trucks")
    assert "no truck status on the broker" in unseen.stderr and "depot_observer" in unseen.stderr

    no_depot = fleet_status(status_broker, "--depot", str(tmp_path / "nowhere"))
    assert no_depot.returncode == 2 and "has no channels/" in no_depot.stderr

    status_broker.stop()
    down = fleet_status(status_broker)
    assert down.returncode == 2 and "cannot reach the depot's MQTT broker" in down.stderr
    assert down.stderr.count("\n") == 1

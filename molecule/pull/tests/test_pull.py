"""Pull mode on three simulated trucks and a depot (molecule/pull/molecule.yml), with no
controller in the loop unless a test says so: the trucks' systemd timers run their syncs.

Run by `molecule verify -s pull` (or `molecule test -s pull`). The tests run in file order; each
starts from where the previous one left the fleet:

1. v1 published to `stable` and `canary`: every truck's first sync pulls the whole image.
2. v2 to `canary`: only pull-truck-1 moves, pulling one model layer.
3. pull-truck-3 cut off; `canary` promoted to `stable`: pull-truck-2 moves within one timer
   period; pull-truck-3 fails while offline, and after the link is back both that failure and
   its catch-up reach the depot's broker.
4. v3 to `stable` with the registry stopped: both trucks fail (`registry_unavailable`) and keep
   serving v2; the registry back, on a slow link, pull-truck-3's power is cut mid-pull: it boots
   serving v2, is not parked (the guard defers), then completes; pull-truck-2 completes.
5. pull-truck-1 (its timer stopped, syncs started by hand): the guard defers v3 until the truck
   is parked; a replayed, an altered and a wrongly signed pointer are refused; a rotated key
   works for the pointer and the release; a revoked key is refused.
6. The fleet as `linkedge-image fleet status` reads it from the depot's broker.

What every truck serves is checked with a real /predict of the releases' smoke vectors. The
figures (bytes per truck, time to converge, the power cut) are printed and written to
build/figures/pull.json.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
sys.path.insert(0, str(PROJECT / "molecule" / "resources" / "tests"))
sys.path.insert(0, str(PROJECT))

from truck_api import Playbooks, Release, save_figures, served_release, truck_http  # noqa: E402

from inference_image.capture_spool import read_segment  # noqa: E402
from inference_image.contract import registry_reference, registry_repository  # noqa: E402
from tests.depot import CLI, KEYS, channel, publish  # noqa: E402

RELEASES = PROJECT / "build" / "releases"
DEPOT = PROJECT / "build" / "pull-depot"
# Depot copies and re-signed releases, on the depot's file system (hard links).
SCRATCH = PROJECT / "build" / "pull-scratch"
PKI = PROJECT / "build" / "pull-pki"
SECRETS = json.loads((PKI / "secrets.json").read_text())
NETWORK = "linkedge-pull"
DEPOT_HOST = "pull-depot"
CANARY, TRUCK_2, TRUCK_3 = "pull-truck-1", "pull-truck-2", "pull-truck-3"
TRUCKS = [CANARY, TRUCK_2, TRUCK_3]
UNIT = "linkedge-edge-sync"
RECORD = "/var/lib/linkedge/last-outcome.json"
PARKED = "/run/linkedge/parked"
# molecule.yml: OnUnitActiveSec 40 s + RandomizedDelaySec up to 15 s; a sync that pulls a whole
# image takes up to about a minute on this 2-core machine.
PERIOD = 55
SYNC = 90

V1, V2, V3 = (Release(RELEASES / name) for name in ("v1", "v2", "v3"))
ALL = [V1, V2, V3]
PLAYBOOKS = Playbooks(PROJECT, EPHEMERAL)
FIGURES: dict = {}
SAVED: dict[str, dict[str, bytes]] = {}  # pointer files kept for a later test


# --- the machines --------------------------------------------------------------------------


def run(*argv: str | Path, check: bool = True, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{argv}: rc={done.returncode}\n{done.stdout[-2000:]}{done.stderr}")
    return done.stdout.strip()


def on(host: str, *argv: str, check: bool = True, timeout: float = 300) -> str:
    return run("docker", "exec", host, *argv, check=check, timeout=timeout)


def local_record(truck: str) -> dict:
    return json.loads(on(truck, "cat", RECORD))


def sync_now(truck: str) -> dict:
    """Start the truck's sync service and wait for it (what `systemctl start` does for a
    one-shot service); the outcome record it wrote."""
    on(truck, "systemctl", "start", f"{UNIT}.service", check=False, timeout=600)
    return local_record(truck)


def published_port(container: str, port: int) -> int:
    return int(run("docker", "port", container, f"{port}/tcp").splitlines()[0].rsplit(":", 1)[1])


def wait_for(what: str, check: Callable[[], object], timeout: float, every: float = 2.0):
    started = time.monotonic()
    while True:
        try:
            found = check()
        except (AssertionError, subprocess.SubprocessError, OSError, ValueError):
            found = None
        if found:
            return found
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def engine_image(truck: str) -> str:
    return on(truck, "docker", "inspect", "-f", "{{.Image}}", "linkedge-inference")


def serves(truck: str, release: Release) -> bool:
    """The truck serves `release`: a real /predict gives its smoke vectors' answers and the
    container runs its signed image."""
    return (
        served_release(truck, ALL).name == release.name and engine_image(truck) == release.image_id
    )


# --- the depot -----------------------------------------------------------------------------


class DepotBroker:
    """The depot's broker as an observer sees it: every status record the trucks' bridges
    forwarded, in arrival order (the retained ones first)."""

    def __init__(self) -> None:
        import paho.mqtt.client as mqtt

        self.records: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"pull-test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set("depot-observer", SECRETS["depot-observer"])
        self.client.tls_set(ca_certs=str(PKI / "ca.crt"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = lambda client, *_: client.subscribe("linkedge/+/status", qos=1)
        self.client.on_message = self._received
        self.client.connect("127.0.0.1", published_port(DEPOT_HOST, 8883))
        self.client.loop_start()

    def _received(self, _client, _userdata, message) -> None:
        with self.lock:
            self.records.append((message.topic.split("/")[1], json.loads(message.payload)))

    def mark(self) -> int:
        with self.lock:
            return len(self.records)

    def of(self, truck: str, since: int = 0) -> list[dict]:
        with self.lock:
            return [record for name, record in self.records[since:] if name == truck]

    def wait(
        self, truck: str, what: str, match: Callable[[dict], bool], since: int, timeout: float
    ) -> dict:
        return wait_for(
            f"{truck}: {what} at the depot",
            lambda: next((r for r in reversed(self.of(truck, since)) if match(r)), None),
            timeout,
            every=1.0,
        )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def updated_to(release: Release) -> Callable[[dict], bool]:
    return lambda r: r["outcome"] == "updated" and r["serving_version"] == release.model_version


def push(release: Release, registry_port: int) -> None:
    """The release's image into the depot's registry, as playbooks/build.yml pushes it (the
    host's engine reaches 127.0.0.1 without a trusted certificate); tagged by version."""
    if release.image_id not in run("docker", "images", "-q", "--no-trunc"):
        run("docker", "load", "-i", release.path / release.manifest["archive"])
    reference = registry_reference(
        f"127.0.0.1:{registry_port}", release.manifest["image"], release.model_version
    )
    run("docker", "tag", release.image_id, reference)
    try:
        run("docker", "push", reference, timeout=600)
    finally:
        run("docker", "rmi", reference, check=False)


def registry_layers(release: Release, registry_port: int) -> list[dict]:
    """The image's layers as the registry stores them (compressed sizes), from its manifest."""
    repository = registry_repository(release.manifest["image"])
    url = f"https://127.0.0.1:{registry_port}/v2/{repository}/manifests/{release.model_version}"
    request = urllib.request.Request(
        url, headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    )
    context = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    with urllib.request.urlopen(request, timeout=10, context=context) as answer:
        return json.loads(answer.read())["layers"]


@pytest.fixture(scope="module")
def registry_port() -> int:
    return published_port(DEPOT_HOST, 5000)


@pytest.fixture(scope="module")
def broker():
    observer = DepotBroker()
    yield observer
    observer.close()


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield FIGURES
    if FIGURES:
        save_figures("pull", FIGURES, PROJECT, EPHEMERAL)


def new_depot() -> None:
    """The depot the dependency step emptied: a depot's sequences only grow, and the trucks
    have already refused (404) the channels that were not there."""
    assert not list((DEPOT / "channels").iterdir()), (
        f"{DEPOT} already has channels: the trucks have synced from it, and would refuse a "
        "new sequence 1 as a replay; verify runs once per set of trucks: "
        "`molecule test -s pull`, or `molecule destroy -s pull` then converge and verify"
    )
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)


# --- the tests -----------------------------------------------------------------------------


def test_the_fleet_installs_its_channel_with_no_controller(broker, registry_port):
    new_depot()
    for release in ALL:
        push(release, registry_port)
    since = broker.mark()
    published = time.monotonic()
    publish(DEPOT, "stable", V1.path)
    publish(DEPOT, "canary", V1.path)
    records = {
        truck: broker.wait(truck, "v1 installed", updated_to(V1), since, PERIOD + 2 * SYNC)
        for truck in TRUCKS
    }
    FIGURES["first_install_seconds"] = round(time.monotonic() - published, 1)
    for truck in TRUCKS:
        assert serves(truck, V1)
    image_bytes = sum(layer["size"] for layer in registry_layers(V1, registry_port))
    FIGURES["first_install_bytes_per_truck"] = {
        t: r["bytes_transferred"] for t, r in records.items()
    }
    FIGURES["image_bytes_in_registry"] = image_bytes
    for record in records.values():
        assert record["channel"] in ("stable", "canary") and record["sequence"] == 1, record
        # The whole image (compressed, as the registry holds it) and the depot's small files.
        assert 0.95 * image_bytes <= record["bytes_transferred"] <= 1.05 * image_bytes, record


def model_layer_bytes(new: Release, old: Release, registry_port: int) -> int:
    old_layers = {layer["digest"] for layer in registry_layers(old, registry_port)}
    return sum(
        layer["size"]
        for layer in registry_layers(new, registry_port)
        if layer["digest"] not in old_layers
    )


def test_a_canary_release_moves_only_the_canary_and_pulls_one_layer(broker, registry_port):
    since = broker.mark()
    publish(DEPOT, "canary", V2.path)
    SAVED["canary-v2"] = pointer_files()
    record = broker.wait(CANARY, "v2 on the canary", updated_to(V2), since, PERIOD + SYNC)
    assert serves(CANARY, V2)
    model = model_layer_bytes(V2, V1, registry_port)
    FIGURES["model_only_update"] = {
        "bytes_per_truck": record["bytes_transferred"],
        "model_layer_bytes": model,
        "whole_image_bytes": FIGURES.get("image_bytes_in_registry"),
        "seconds": record["duration_seconds"],
    }
    assert 0 < model < 5_000_000, model
    assert record["bytes_transferred"] <= 2 * model + 20_000, (record, model)
    # The stable trucks synced meanwhile (a period passed) and still serve v1.
    for truck in (TRUCK_2, TRUCK_3):
        wait_for(f"{truck} synced since", lambda t=truck: broker.of(t, since), PERIOD + SYNC)
        assert serves(truck, V1)
        assert all(r["serving_version"] == V1.model_version for r in broker.of(truck, since))


def cut_off(truck: str) -> None:
    run("docker", "network", "disconnect", NETWORK, truck)


def reconnect(truck: str) -> None:
    run("docker", "network", "connect", NETWORK, truck, check=False)


def test_a_promotion_reaches_stable_and_the_offline_truck_catches_up(broker):
    cut_off(TRUCK_3)
    try:
        since = broker.mark()
        promoted = time.monotonic()
        channel(DEPOT, "promote", "--from", "canary", "--to", "stable")
        broker.wait(TRUCK_2, "v2 after the promotion", updated_to(V2), since, PERIOD + SYNC)
        FIGURES["promotion_to_stable_truck_seconds"] = round(time.monotonic() - promoted, 1)
        assert serves(TRUCK_2, V2)
        # Offline, pull-truck-3's own sync fails and is recorded on the truck (and queued by
        # its broker's bridge): the depot hears nothing yet.
        offline = wait_for(
            "pull-truck-3's sync fails while offline",
            lambda: (r := local_record(TRUCK_3))["outcome"] == "failed" and r,
            PERIOD + SYNC,
        )
        assert offline["reason"].startswith("depot_unavailable"), offline
        assert offline["serving_version"] == V1.model_version
        assert serves(TRUCK_3, V1)
        assert not [r for r in broker.of(TRUCK_3, since) if r["outcome"] == "failed"]
    finally:
        reconnected = time.monotonic()
        reconnect(TRUCK_3)
    caught_up = broker.wait(TRUCK_3, "v2 after reconnecting", updated_to(V2), since, PERIOD + SYNC)
    FIGURES["offline_truck_catch_up_seconds"] = round(time.monotonic() - reconnected, 1)
    assert serves(TRUCK_3, V2)
    heard = broker.of(TRUCK_3, since)
    failures = [r for r in heard if r["outcome"] == "failed"]
    assert offline["finished_at"] in [r["finished_at"] for r in failures], heard
    assert heard.index(failures[0]) < heard.index(caught_up)
    assert caught_up["previous_version"] == V1.model_version
    FIGURES["promotion_converged_seconds"] = round(time.monotonic() - promoted, 1)


def throttle_depot(rate: str | None) -> None:
    """The depot's link (its egress) at `rate` (tc tbf), or as it was (None)."""
    on(DEPOT_HOST, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
    if rate:
        on(
            DEPOT_HOST,
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "16kb",
            "latency",
            "2s",
        )


def pulling(truck: str) -> bool:
    """The truck's engine is downloading a layer (its temporary blob files)."""
    return "GetImageBlob" in on(truck, "ls", "/var/lib/docker/tmp", check=False)


def test_registry_down_then_a_power_cut_mid_pull(broker, registry_port):
    # A link slow enough that v3's one new layer takes about 15 s to arrive.
    layer = model_layer_bytes(V3, V2, registry_port)
    on(DEPOT_HOST, "systemctl", "stop", "docker-registry")
    try:
        since = broker.mark()
        publish(DEPOT, "stable", V3.path)
        for truck in (TRUCK_2, TRUCK_3):
            failed = broker.wait(
                truck,
                "a failed sync (registry down)",
                lambda r: r["outcome"] == "failed",
                since,
                PERIOD + SYNC,
            )
            # image_pull's registry_unavailable, in its words: failed, not `pending`.
            assert failed["reason"].startswith("transfer failed: pulling pull-depot:5000/"), failed
            assert "the registry is down or unreachable" in failed["reason"], failed
            assert failed["serving_version"] == V2.model_version
            assert serves(truck, V2)
        FIGURES["registry_down_reason"] = failed["reason"][:240]
        throttle_depot(f"{max(8, layer * 8 // 1000 // 15)}kbit")
    finally:
        on(DEPOT_HOST, "systemctl", "start", "docker-registry")
    try:
        since = broker.mark()
        wait_for("pull-truck-3 pulling v3", lambda: pulling(TRUCK_3), PERIOD + SYNC, every=0.2)
        run("docker", "kill", TRUCK_3)  # SIGKILL of its systemd: every process dies at once
        cut_at = time.monotonic()
    finally:
        throttle_depot(None)
    run("docker", "start", TRUCK_3)
    # It boots serving a complete version: v2, the one it had.
    wait_for("pull-truck-3 serving after the power cut", lambda: serves(TRUCK_3, V2), 180)
    FIGURES["power_cut_serving_again_seconds"] = round(time.monotonic() - cut_at, 1)
    # /run is gone with the power: not parked, the first sync after boot defers.
    deferred = broker.wait(
        TRUCK_3, "deferred after boot", lambda r: r["outcome"] == "deferred", since, PERIOD + SYNC
    )
    assert deferred["reason"].startswith("guard_file"), deferred
    assert serves(TRUCK_3, V2)
    on(TRUCK_3, "sh", "-c", f"mkdir -p {os.path.dirname(PARKED)} && touch {PARKED}")
    record = broker.wait(TRUCK_3, "v3 after the power cut", updated_to(V3), since, PERIOD + SYNC)
    FIGURES["power_cut_completed_seconds"] = round(time.monotonic() - cut_at, 1)
    assert serves(TRUCK_3, V3) and record["previous_version"] == V2.model_version
    broker.wait(TRUCK_2, "v3 after the registry is back", updated_to(V3), 0, PERIOD + SYNC)
    assert serves(TRUCK_2, V3)
    # No partial pull is left behind on the truck whose power was cut.
    assert not pulling(TRUCK_3)


def stop_canary_timer() -> None:
    """The canary's timer stopped and no sync of its running (a sync the timer started would
    be joined by the next `systemctl start` and report what it saw before a publish)."""
    on(CANARY, "systemctl", "stop", f"{UNIT}.timer")
    wait_for(
        "no sync running",
        lambda: (
            on(CANARY, "systemctl", "is-active", f"{UNIT}.service", check=False) != "activating"
        ),
        300,
    )


@pytest.fixture
def canary_by_hand():
    """pull-truck-1 with its timer stopped: the tests start its syncs."""
    stop_canary_timer()
    yield
    on(CANARY, "systemctl", "start", f"{UNIT}.timer")


def test_the_guard_defers_the_canary_until_it_is_parked(broker, canary_by_hand):
    on(CANARY, "rm", "-f", PARKED)
    since = broker.mark()
    publish(DEPOT, "canary", V3.path)
    record = sync_now(CANARY)
    assert record["outcome"] == "deferred" and record["reason"].startswith("guard_file"), record
    assert serves(CANARY, V2)
    broker.wait(CANARY, "deferred", lambda r: r["outcome"] == "deferred", since, 30)
    on(CANARY, "touch", PARKED)
    record = sync_now(CANARY)
    assert record["outcome"] == "updated" and record["new_version"] == V3.model_version, record
    assert serves(CANARY, V3)


def pointer_files() -> dict[str, bytes]:
    return {
        name: (DEPOT / "channels" / name).read_bytes()
        for name in ("canary.json", "canary.json.sig")
    }


def put_pointer(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (DEPOT / "channels" / name).write_bytes(data)


def signed_copy(release: Release, key: Path) -> Path:
    """The release re-signed with `key` (a copy: the original's files are hard links)."""
    target = SCRATCH / f"{release.name}-{key.parent.name}"
    shutil.copytree(release.path, target)
    run(*CLI, "sign", "--release", target, "--signing-key", key)
    return target


def scratch_pointer(release: Path, key: Path) -> dict[str, bytes]:
    """A canary pointer to the release directory `release` signed with `key`, made in a copy
    of the depot (the real depot's history is not touched)."""
    scratch = SCRATCH / f"depot-{uuid.uuid4().hex[:6]}"
    shutil.copytree(DEPOT / "channels", scratch / "channels")
    publish(scratch, "canary", release, key=key)
    return {
        name: (scratch / "channels" / name).read_bytes()
        for name in ("canary.json", "canary.json.sig")
    }


def refused(broker: DepotBroker, reason: str) -> dict:
    since = broker.mark()
    record = sync_now(CANARY)
    assert record["outcome"] == "failed" and record["reason"].startswith(reason), record
    assert serves(CANARY, V3)
    heard = broker.wait(CANARY, reason, lambda r: r["outcome"] == "failed", since, 30)
    assert heard["reason"] == record["reason"]
    return record


def test_replayed_altered_and_wrongly_signed_pointers_are_refused(broker, canary_by_hand, tmp_path):
    genuine = pointer_files()
    stranger = tmp_path / "stranger"
    run(*CLI, "keygen", "--out", stranger)
    FIGURES["refused"] = {}
    try:
        # A genuine pointer of an earlier sequence (v2's, kept by test 2) put back: a replay.
        put_pointer(SAVED["canary-v2"])
        FIGURES["refused"]["replayed"] = refused(broker, "replayed")["reason"][:160]
        # The current pointer with its bytes changed after signing.
        altered = genuine | {
            "canary.json": genuine["canary.json"].replace(
                V3.model_version.encode(), V1.model_version.encode()
            )
        }
        assert altered != genuine
        put_pointer(altered)
        FIGURES["refused"]["altered"] = refused(broker, "bad_signature")["reason"][:160]
        # A newer pointer signed by a key the truck does not trust.
        # (The CLI points a channel only at a release signed with the same key: both are.)
        strange = signed_copy(V1, stranger / "release-signing.key")
        put_pointer(scratch_pointer(strange, stranger / "release-signing.key"))
        FIGURES["refused"]["wrong_key"] = refused(broker, "unknown_key")["reason"][:160]
    finally:
        put_pointer(genuine)
    record = sync_now(CANARY)
    assert record["outcome"] == "unchanged" and serves(CANARY, V3), record


def trust_on_canary(**keys) -> None:
    """The role edge_manager on the canary again with other trusted or revoked keys: a
    controller run (push mode), as docs/channels.md's rotation says."""
    command, env = PLAYBOOKS.command(
        str(PROJECT / "molecule" / "pull" / "converge.yml"),
        "--limit",
        CANARY,
        "--tags",
        "edge_manager",
        "-e",
        json.dumps(keys),
    )
    done = subprocess.run(
        command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    stop_canary_timer()  # the role starts it; the test syncs


def test_a_rotated_key_works_and_a_revoked_one_is_refused(broker, canary_by_hand, tmp_path):
    from inference_image.signing import key_id, load_public_key

    rotated = tmp_path / "rotated"
    new_id = json.loads(run(*CLI, "keygen", "--out", rotated))["key_id"]
    old_id = key_id(load_public_key(KEYS / "release-signing.pub"))
    new_key = (rotated / "release-signing.pub").read_text()
    # 1. The trucks trust the new key beside the old one. 2. CI signs with the new key only:
    # the release (v1, a rollback here) and the pointer.
    trust_on_canary(inference_service_release_public_keys=[new_key])
    publish(
        DEPOT,
        "canary",
        signed_copy(V1, rotated / "release-signing.key"),
        key=rotated / "release-signing.key",
    )
    record = sync_now(CANARY)
    assert record["outcome"] == "updated" and serves(CANARY, V1), record
    # Revoked (the old key leaked): anything it signs is refused, though still listed.
    trust_on_canary(
        inference_service_release_public_keys=[new_key],
        inference_service_release_revoked_key_ids=[old_id],
    )
    publish(DEPOT, "canary", V3.path)  # release and pointer signed with the old key
    since = broker.mark()
    record = sync_now(CANARY)
    assert record["outcome"] == "failed" and record["reason"].startswith("revoked_key"), record
    assert serves(CANARY, V1)
    broker.wait(CANARY, "revoked_key", lambda r: r["outcome"] == "failed", since, 30)
    FIGURES["keys"] = {
        "rotated_to": new_id[:16],
        "revoked": old_id[:16],
        "revoked_reason": record["reason"][:160],
    }


def test_the_depot_sees_the_whole_fleet_without_reaching_a_truck():
    password = EPHEMERAL / "depot-observer.pw"
    password.write_text(SECRETS["depot-observer"])
    done = subprocess.run(
        [
            *CLI,
            "fleet",
            "status",
            "--broker-host",
            "127.0.0.1",
            "--broker-port",
            str(published_port(DEPOT_HOST, 8883)),
            "--cafile",
            PKI / "ca.crt",
            "--username",
            "depot-observer",
            "--password-file",
            password,
            "--depot",
            DEPOT,
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    fleet = json.loads(done.stdout)
    rows = {row["truck"]: row for row in fleet["trucks"]}
    print(json.dumps(fleet, indent=1)[:3000])
    assert set(rows) == set(TRUCKS), rows
    for truck in (TRUCK_2, TRUCK_3):
        assert rows[truck]["serving_version"] == V3.model_version, rows[truck]
        assert not rows[truck]["flags"], rows[truck]
    # The canary refuses its channel's pointer (signed with the key it revoked): it keeps
    # serving the release of the rotated key, and the depot sees why.
    canary = rows[CANARY]
    assert canary["serving_version"] == V1.model_version, canary
    assert canary["flags"] == ["behind", "failed"], canary
    assert canary["reason"].startswith("revoked_key"), canary
    assert fleet["summary"]["ok"] == 2 and fleet["summary"]["failed"] == 1, fleet["summary"]


# --- data capture through the depot ----------------------------------------------------------

UPLOAD_PROBE = r"""
import base64, json, ssl, sys, urllib.error, urllib.request
url, user, password = sys.argv[1:4]
request = urllib.request.Request(url, data=b'{"x": 1}\n', method="PUT")
if user:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
context = ssl.create_default_context(cafile="/etc/linkedge/depot-ca.pem")
try:
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        print(answer.status)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def test_captured_rows_reach_the_depot_at_the_next_sync():
    """pull-truck-2 captures every answer; its next sync uploads the sealed segments to the
    depot (PUT <depot>/capture/<truck>/<segment>) and deletes them on the truck. The depot's
    capture/ has collect's layout, so `linkedge-image train --data` reads it as captured/. A
    truck may write only its own directory, and only with its password."""
    rows = [
        dict(zip(V3.features, vector["inputs"], strict=True)) | {"ab_000": 2_000_000.0 + number}
        for number, vector in enumerate(V3.smoke_vectors * 10)
    ]
    status, body = truck_http(TRUCK_2, "POST", "/predict", {"instances": rows}, timeout=30)
    assert status == 200, body
    marker = V3.features.index("ab_000")
    spool = "/var/lib/linkedge/capture/sealed"
    # The segment is sealed by age (5 s here) with no further request, then the sync uploads.
    wait_for(
        "the sealed segment on the truck",
        lambda: on(TRUCK_2, "find", spool, "-name", "*.jsonl"),
        30,
        1,
    )
    started = time.monotonic()
    record = sync_now(TRUCK_2)
    FIGURES["capture_upload_sync_seconds"] = round(time.monotonic() - started, 1)
    assert record["outcome"] in ("unchanged", "updated"), record
    home = PROJECT / "build" / "pull-depot-capture" / TRUCK_2
    found: dict[int, int] = {}
    for path in sorted(home.glob("*.jsonl")):
        for item in read_segment(path):  # every line's CRC checked: whole segments only
            value = item["inputs"][marker]
            if value is not None and 2_000_000 <= value < 2_000_000 + len(rows):
                found[int(value)] = found.get(int(value), 0) + 1
    assert sorted(found) == [2_000_000 + n for n in range(len(rows))], sorted(found)[:5]
    assert set(found.values()) == {1}, "a row reached the depot twice"
    assert on(TRUCK_2, "find", spool, "-name", "*.jsonl") == ""
    incoming = PROJECT / "build" / "pull-depot-capture" / ".incoming"
    assert not list(incoming.iterdir()), "a partial upload was left"
    url = "https://pull-depot/capture/{}/probe.jsonl"
    probes = {
        "other truck's directory": (url.format(TRUCK_3), TRUCK_2, SECRETS["capture-upload"]),
        "no password": (url.format(TRUCK_2), "", ""),
        "wrong password": (url.format(TRUCK_2), TRUCK_2, "wrong"),
    }
    answers = {
        name: on(TRUCK_2, "python3", "-c", UPLOAD_PROBE, *argv) for name, argv in probes.items()
    }
    assert answers == {
        "other truck's directory": "403",
        "no password": "401",
        "wrong password": "401",
    }, answers
    assert not (PROJECT / "build" / "pull-depot-capture" / TRUCK_3).exists()
    FIGURES["capture_upload_rows"] = len(found)

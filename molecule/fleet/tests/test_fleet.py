"""Fleet rollout on four simulated trucks (provisioned with v1 by prepare.yml).

Run by `molecule verify -s fleet` (or `molecule test -s fleet`). The tests run in file order and
drive playbooks/status.yml, rollout.yml and rollback.yml from this machine with the scenario's
inventory, while a prober thread per truck POSTs /predict to the truck's API (published on
0.0.0.0 inside the truck, reached at the truck's IP on the scenario network) every 50 ms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
from truck_api import Playbooks, save_figures  # shared with the other scenarios' tests
from truck_api import truck_ip as shared_truck_ip

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
RELEASES = PROJECT / "build" / "releases"
TRUCKS = [f"fleet-truck-{i}" for i in range(1, 5)]
NETWORK = "linkedge-fleet"
PLAYBOOKS = Playbooks(PROJECT, EPHEMERAL)
FIGURES: dict = {}


def release(name: str) -> dict:
    """The release's manifest.json (its one record)."""
    return json.loads((RELEASES / name / "manifest.json").read_text())


def playbook(name: str, *args: str) -> tuple[int, float, dict, str]:
    """Run a playbook on the scenario's inventory; returns (rc, seconds, report, output)."""
    rc, seconds, report, output = PLAYBOOKS.run(name, *args)
    print(
        output[output.find("LINKEDGE ROLLOUT REPORT") - 10 :]
        if "LINKEDGE ROLLOUT" in output
        else ""
    )
    return rc, seconds, report, output


def truck_ip(truck: str) -> str:
    return shared_truck_ip(truck, NETWORK)


def serving(truck: str) -> str | None:
    """Model version served by the truck (GET /v2/models/aps-classifier from the host)."""
    import urllib.request

    try:
        url = f"http://{truck_ip(truck)}:8080/v2/models/aps-classifier"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())["versions"][0]
    except (OSError, ValueError, KeyError):
        return None


class Prober:
    """One thread per truck POSTing /predict every `interval` s; records every failure and the
    longest time between two successful answers."""

    def __init__(self, trucks: list[str], interval: float = 0.05):
        self.urls = {t: f"http://{truck_ip(t)}:8080/predict" for t in trucks}
        vectors = json.loads((RELEASES / "v1" / "bundle" / "smoke_vectors.json").read_text())
        features = json.loads((RELEASES / "v1" / "bundle" / "schema.json").read_text())["features"]
        body = {"instances": [dict(zip(features, vectors[0]["inputs"], strict=True))]}
        self.payload = json.dumps(body).encode()
        self.interval = interval
        self.stop = threading.Event()
        self.requests = dict.fromkeys(trucks, 0)
        self.failures: dict[str, list[str]] = {t: [] for t in trucks}
        self.longest_gap = dict.fromkeys(trucks, 0.0)
        self.versions: dict[str, set] = {t: set() for t in trucks}
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in trucks]

    def _run(self, truck: str) -> None:
        import urllib.request

        last_ok = time.monotonic()
        while not self.stop.is_set():
            request = urllib.request.Request(
                self.urls[truck], data=self.payload, headers={"Content-Type": "application/json"}
            )
            self.requests[truck] += 1
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    self.versions[truck].add(json.loads(answer.read())["model_version"])
                now = time.monotonic()
                self.longest_gap[truck] = max(self.longest_gap[truck], now - last_ok)
                last_ok = now
            except (OSError, ValueError, KeyError) as exc:
                self.failures[truck].append(f"{time.strftime('%H:%M:%S')} {exc}")
            time.sleep(self.interval)

    def __enter__(self) -> Prober:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
        print(
            f"prober: requests {self.requests}, failures "
            f"{ {t: len(f) for t, f in self.failures.items()} }, longest gap between answers "
            f"{ {t: round(g, 2) for t, g in self.longest_gap.items()} } s"
        )


def no_failed_request(prober: Prober, figure: str) -> None:
    """Zero failed requests: the old container serves until the new one passed its checks on
    the same port (SO_REUSEPORT), then finishes its requests (figures recorded either way)."""
    failed = sum(len(f) for f in prober.failures.values())
    assert failed == 0, f"{failed} failed requests during the switch: {FIGURES[figure]}"


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield FIGURES
    save_figures("fleet", FIGURES, PROJECT, EPHEMERAL)


def test_fleet_starts_on_v1():
    v1 = release("v1")["version"]
    assert {t: serving(t) for t in TRUCKS} == dict.fromkeys(TRUCKS, v1)


def test_status_lists_every_truck():
    rc, seconds, _, output = playbook("status.yml")
    assert rc == 0, output
    v1 = release("v1")["version"]
    for truck in TRUCKS:
        assert any(truck in line and v1 in line for line in output.splitlines()), output
    FIGURES["status_seconds"] = round(seconds, 1)


def test_check_mode_changes_nothing():
    rc, _, _, output = playbook("rollout.yml", "-e", "model_version=v2", "--check")
    assert rc == 0, output
    v1 = release("v1")["version"]
    assert {t: serving(t) for t in TRUCKS} == dict.fromkeys(TRUCKS, v1)
    assert "would_update" in output


def test_bad_version_stops_at_the_canary():
    v1 = release("v1")["version"]
    with Prober(TRUCKS) as prober:
        rc, seconds, report, output = playbook("rollout.yml", "-e", "model_version=v1-bad")
    assert rc != 0, output
    outcomes = {t: r["outcome"] for t, r in report["trucks"].items()}
    assert outcomes == {
        "fleet-truck-1": "rolled_back",
        "fleet-truck-2": "not_reached",
        "fleet-truck-3": "not_reached",
        "fleet-truck-4": "not_reached",
    }, report
    assert report["trucks"]["fleet-truck-1"]["reason"], report
    assert {t: serving(t) for t in TRUCKS} == dict.fromkeys(TRUCKS, v1)
    assert sum(len(f) for f in prober.failures.values()) == 0, prober.failures
    FIGURES["bad_canary"] = {
        "seconds": round(seconds, 1),
        "reason": report["trucks"]["fleet-truck-1"]["reason"],
        "bytes": report["trucks"]["fleet-truck-1"].get("bytes_transferred"),
    }


@pytest.fixture
def tampered_release():
    """v2 whose signed manifest claims a better cost ratio than it was signed with."""
    import shutil

    out = RELEASES / "v2-tampered"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(RELEASES / "v2", out, symlinks=True)
    manifest = out / "manifest.json"
    fields = json.loads(manifest.read_text())
    fields["cost_ratio"] = 0.01
    manifest.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    yield "v2-tampered"
    shutil.rmtree(out, ignore_errors=True)


def test_tampered_release_is_refused_before_anything_is_sent(tampered_release):
    v1 = release("v1")["version"]
    rc, seconds, report, output = playbook("rollout.yml", "-e", f"model_version={tampered_release}")
    assert rc != 0, output
    canary = report["trucks"]["fleet-truck-1"]
    assert canary["outcome"] == "failed", report
    assert "signature does not match the trusted key" in canary["reason"], canary
    assert not canary.get("bytes_transferred"), canary
    assert {t: r["outcome"] for t, r in report["trucks"].items() if t != "fleet-truck-1"} == (
        dict.fromkeys(TRUCKS[1:], "not_reached")
    ), report
    assert {t: serving(t) for t in TRUCKS} == dict.fromkeys(TRUCKS, v1)
    FIGURES["tampered_manifest"] = {"seconds": round(seconds, 1), "reason": canary["reason"]}


def cut_off(truck: str) -> None:
    """Off the network, and paused so that `docker exec` (Ansible's connection here) fails as
    SSH would to a truck out of coverage (a network disconnect alone does not stop docker exec)."""
    subprocess.run(["docker", "network", "disconnect", NETWORK, truck], check=True)
    subprocess.run(["docker", "pause", truck], check=True)


def reconnect(truck: str) -> None:
    subprocess.run(["docker", "unpause", truck], check=False)
    subprocess.run(["docker", "network", "connect", NETWORK, truck], check=False)


def test_good_version_reaches_every_reachable_truck_and_the_cut_off_one_is_pending():
    v2 = release("v2")
    # Truck 4 (last wave) is cut off mid-rollout: as soon as the canary serves v2.
    with Prober(TRUCKS[:3]) as prober:

        def cut_when_canary_switched() -> None:
            deadline = time.monotonic() + 300
            while v2["version"] not in prober.versions["fleet-truck-1"]:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            cut_off("fleet-truck-4")
            FIGURES["truck_4_cut_off_after_canary"] = True

        cutter = threading.Thread(target=cut_when_canary_switched, daemon=True)
        cutter.start()
        try:
            rc, seconds, report, output = playbook("rollout.yml", "-e", "model_version=v2")
        finally:
            cutter.join(timeout=5)
            reconnect("fleet-truck-4")
    assert FIGURES.get("truck_4_cut_off_after_canary"), "the canary never served v2"
    assert rc == 0, output
    outcomes = {t: r["outcome"] for t, r in report["trucks"].items()}
    assert outcomes == dict.fromkeys(TRUCKS[:3], "updated") | {"fleet-truck-4": "pending"}, report
    # Cut off mid-run: the report says so in words, not with Ansible's transport error.
    assert report["trucks"]["fleet-truck-4"]["reason"].startswith("unreachable: "), report
    for truck in TRUCKS[:3]:
        assert serving(truck) == v2["version"]
    FIGURES["rollout_v2_3_trucks_seconds"] = round(seconds, 1)
    FIGURES["bytes_per_truck_model_only"] = {
        t: report["trucks"][t]["bytes_transferred"] for t in TRUCKS[:3]
    }
    FIGURES["full_image_archive_bytes"] = v2["archive_bytes"]
    FIGURES["serving_gap_module_seconds"] = {
        t: report["trucks"][t].get("serving_gap_seconds") for t in TRUCKS[:3]
    }
    FIGURES["prober_rollout"] = {
        "requests": sum(prober.requests.values()),
        "failures": {t: f[:3] for t, f in prober.failures.items()},
        "longest_gap_seconds": {t: round(g, 2) for t, g in prober.longest_gap.items()},
    }
    for truck in TRUCKS[:3]:
        assert report["trucks"][truck]["bytes_transferred"] < v2["archive_bytes"] / 20, report
    # Last: the zero-failure requirement (the figures above are recorded either way).
    no_failed_request(prober, "prober_rollout")


def test_rerun_catches_up_only_the_cut_off_truck():
    v2 = release("v2")["version"]
    rc, seconds, report, output = playbook("rollout.yml", "-e", "model_version=v2")
    assert rc == 0, output
    outcomes = {t: r["outcome"] for t, r in report["trucks"].items()}
    assert outcomes == dict.fromkeys(TRUCKS[:3], "unchanged") | {"fleet-truck-4": "updated"}
    assert {t: serving(t) for t in TRUCKS} == dict.fromkeys(TRUCKS, v2)
    FIGURES["rerun_seconds"] = round(seconds, 1)


def test_rollback_returns_the_fleet_to_v1_without_transfer():
    v1 = release("v1")["version"]
    with Prober(TRUCKS) as prober:
        rc, seconds, report, output = playbook("rollback.yml")
    assert rc == 0, output
    assert {t: r["outcome"] for t, r in report["trucks"].items()} == dict.fromkeys(
        TRUCKS, "updated"
    )
    assert report["bytes_transferred"] == 0
    assert "Copy the archive" not in output and "image_load" not in output
    assert {t: serving(t) for t in TRUCKS} == dict.fromkeys(TRUCKS, v1)
    FIGURES["rollback_seconds"] = round(seconds, 1)
    FIGURES["prober_rollback"] = {
        "requests": sum(prober.requests.values()),
        "failures": {t: len(f) for t, f in prober.failures.items()},
        "longest_gap_seconds": {t: round(g, 2) for t, g in prober.longest_gap.items()},
    }
    no_failed_request(prober, "prober_rollback")


ARM64_TRUCK = "fleet-truck-4"


@pytest.fixture
def arm64_truck():
    """fleet-truck-4 declared arm64 in the inventory (host_vars). A real arm64 truck needs no
    such line: the role takes the architecture its Docker engine reports (edge_facts). These
    simulated trucks are x86_64 containers; their engines run the arm64 image under the host's
    QEMU (binfmt_misc with the F flag is the kernel's, so the trucks' engines have it too)."""
    path = EPHEMERAL / "inventory" / "host_vars" / f"{ARM64_TRUCK}.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("inference_service_architecture: arm64\n")
    yield ARM64_TRUCK
    path.unlink()


def in_truck_docker(truck: str, *args: str) -> str:
    """`docker ARGS` run by the truck's own engine."""
    done = subprocess.run(
        ["docker", "exec", truck, "docker", *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_release_without_arm64_is_refused_on_an_arm64_truck_that_keeps_serving(arm64_truck):
    v1 = release("v1")["version"]
    rc, seconds, report, output = playbook(
        "rollout.yml", "-e", "model_version=v2", "--limit", arm64_truck
    )
    assert rc != 0, output
    record = report["trucks"][arm64_truck]
    assert record["outcome"] == "failed", report
    assert "has no image for arm64 (it has amd64)" in record["reason"], record
    assert "Finalization" not in record["reason"], record  # the sentence, not a filter's error
    assert not record.get("bytes_transferred"), record
    assert serving(arm64_truck) == v1
    FIGURES["arm64_refused"] = {"seconds": round(seconds, 1), "reason": record["reason"]}


def test_a_mixed_fleet_gets_each_truck_its_architectures_image(arm64_truck):
    """One release with an amd64 and an arm64 image (v3), one rollout: every truck serves v3,
    each from the image of its architecture, the arm64 one running arm64 code."""
    v3 = release("v3")
    images = v3["architectures"]
    assert sorted(images) == ["amd64", "arm64"]
    rc, seconds, report, output = playbook("rollout.yml", "-e", "model_version=v3")
    assert rc == 0, output
    assert {t: r["outcome"] for t, r in report["trucks"].items()} == dict.fromkeys(
        TRUCKS, "updated"
    ), report
    assert {t: serving(t) for t in TRUCKS} == dict.fromkeys(TRUCKS, v3["version"])
    for truck in TRUCKS:
        architecture = "arm64" if truck == arm64_truck else "amd64"
        image_id = in_truck_docker(truck, "inspect", "-f", "{{.Image}}", "linkedge-inference")
        assert image_id == images[architecture]["image_id"], (truck, architecture)
        machine = in_truck_docker(truck, "exec", "linkedge-inference", "uname", "-m")
        assert machine == ("aarch64" if architecture == "arm64" else "x86_64"), truck
    FIGURES["mixed_fleet_v3"] = {
        "seconds": round(seconds, 1),
        "bytes_transferred": {t: r.get("bytes_transferred") for t, r in report["trucks"].items()},
        "archive_bytes": {arch: image["archive_bytes"] for arch, image in images.items()},
    }

"""Pull mode on this host: playbooks/sync.yml run with a local connection, as a truck's timer runs
it, against a depot served by a real nginx (and a plain directory), with the real signed
releases build/releases/v1 and v2 (scripts/molecule-releases.sh) and the real Docker engine.

The scenario: v1 published -> the sync serves it; again -> unchanged, nothing fetched; the guard
says no -> deferred; v2 published -> serves v2; an older pointer put back -> refused
(`replayed`), v2 still serves; nginx stopped -> failed (depot_unavailable), serving untouched,
and the next sync after the restart completes. A truck whose engine is arm64 takes the arm64
image of a two-architecture release (build/releases/v3), from the depot or as `<version>-arm64`
from a registry; a release with no image for the truck's architecture is refused before its
archive is fetched. The role edge_manager's systemd units are rendered by the role itself and
checked with `systemd-analyze verify`. Here the figures of one sync are measured (peak memory of
its process tree, the bytes of an idle sync); the registry transfer, TLS, the role's offline
installation and the timers on real systemd are proven on three simulated trucks by the Molecule
`pull` scenario.

Every container and image the tests create is removed; a tag a release's `docker load` moved is
put back on the image it named before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import docker
import pytest

from bench.depot_load.proxy import CountingProxy
from bench.depot_load.servers import Nginx, ensure_binary
from bench.depot_load.settings import DEPOT_PREFIX, NGINX
from inference_image.contract import IMAGE_FIELDS, registry_reference, release_images
from inference_image.release import release_present
from tests.conftest import docker_engine
from tests.depot import publish

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook", path=str(VENV_BIN)) or "ansible-playbook"
CLI = [sys.executable, "-m", "inference_image"]
KEYS = REPO / "build" / "keys"
SESSION = f"lkpull{uuid.uuid4().hex[:6]}"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sync runs as root on a truck")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}\n{result.stdout[-4000:]}{result.stderr[-3000:]}"
    return result


def run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=900, **kwargs
    )


@pytest.fixture(scope="module")
def docker_client():
    return docker_engine()


def snapshot(built: Path, into: Path) -> Path:
    """The release BUILT copied by hard links to INTO/<version>, so that a rebuild elsewhere
    does not change it under the tests."""
    version = json.loads((built / "manifest.json").read_text())["version"]
    target = into / version
    shutil.copytree(built, target, copy_function=os.link)
    assert release_present(target, with_bundle=True), f"{built} changed meanwhile"
    return target


@contextlib.contextmanager
def engine_images_kept(client, releases: list[Path]):
    """Afterwards, the tags of RELEASES' images (every architecture's) name what they named
    before (a `docker load` moves them), and an image of theirs the tests brought into the
    engine is removed again."""
    images = [
        image
        for path in releases
        for image in release_images(json.loads((path / "manifest.json").read_text())).values()
    ]
    tags = {}
    for image in images:
        with contextlib.suppress(Exception):
            tags[image["image"]] = client.images.get(image["image"]).id
    present = {image.id for image in client.images.list(all=True)}
    try:
        yield
    finally:
        for image in images:
            if image["image_id"] not in present:
                with contextlib.suppress(Exception):
                    client.images.remove(image["image_id"], force=True)
        for tag, image_id in tags.items():
            repository, _, name = tag.rpartition(":")
            with contextlib.suppress(Exception):
                client.images.get(image_id).tag(repository, name)


@pytest.fixture(scope="module")
def releases(tmp_path_factory, docker_client) -> dict[str, Path]:
    """v1 and v2, snapshotted; yields {"v1": dir, "v2": dir} named by version in a releases/
    folder."""
    built = REPO / "build" / "releases"
    if not all(release_present(built / name, with_bundle=True) for name in ("v1", "v2")):
        checked(run(["bash", "scripts/molecule-releases.sh"], cwd=REPO))
    folder = tmp_path_factory.mktemp("releases")
    out = {name: snapshot(built / name, folder) for name in ("v1", "v2")}
    with engine_images_kept(docker_client, list(out.values())):
        yield out


FIGURES: dict = {}


def save_figures(**values) -> None:
    """Add to this module's figures and write them as the Molecule scenarios write theirs
    (build/figures/pull-sync.json with time and commit; docs/figures.md renders it)."""
    sys.path.insert(0, str(REPO / "molecule" / "resources" / "tests"))
    from truck_api import save_figures as save_scenario_figures

    FIGURES.update(values)
    with tempfile.TemporaryDirectory() as scratch:
        save_scenario_figures("pull-sync", FIGURES, REPO, Path(scratch))


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    """Debian's nginx-light (scripts/ensure-test-tools.sh installs it)."""
    return ensure_binary(NGINX, install=False)


class TreeMemory(threading.Thread):
    """Peak memory of a process and its descendants (sampled every 50 ms from /proc): the sum
    of their PSS (shared pages counted once) and of their RSS."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.pss_kb, self.rss_kb = pid, 0, 0
        self._stop_event = threading.Event()

    @staticmethod
    def _tree(root: int) -> list[int]:
        parents: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    parents.setdefault(ppid, []).append(int(entry))
        found, todo = [], [root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += parents.get(pid, [])
        return found

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            pss = rss = 0
            for pid in self._tree(self.pid):
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            pss += int(line.split()[1])
                        elif line.startswith("Rss:"):
                            rss += int(line.split()[1])
            self.pss_kb, self.rss_kb = max(self.pss_kb, pss), max(self.rss_kb, rss)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class Truck:
    """This host as a truck: the sync's variables, its own paths, a unique container."""

    def __init__(self, work: Path, depot: str, docker_client):
        self.work, self.client = work, docker_client
        self.name = f"{SESSION}-{work.name}"[:60]
        self.truck = f"truck-{SESSION}"
        self.port = free_port()
        self.vars = {
            "edge_manager_depot": depot,
            "edge_manager_channel": "stable",
            "edge_manager_cache_dir": str(work / "cache"),
            "edge_manager_state_dir": str(work / "state"),
            "edge_manager_fetch_retries": 1,
            "edge_manager_fetch_delay": 1,
            "edge_manager_fetch_timeout": 10,
            "inference_service_release_public_key": str(KEYS / "release-signing.pub"),
            "inference_service_name": self.name,
            "inference_service_port": self.port,
            "inference_service_grpc_port": free_port(),
            "inference_service_state_file": str(work / "last-outcome.json"),
            "inference_service_release_manifest_dir": str(work / "manifests"),
            "inference_service_staging_dir": str(work / "staging"),
            "inference_service_api_token_path": str(work / "etc" / "api-token"),
            "inference_service_mqtt_password_path": str(work / "etc" / "mqtt.password"),
            "inference_service_mqtt_status_config_dir": str(work / "etc" / "mqtt-status"),
            "inference_service_migrate_queued_connections": False,
            "inference_service_prune_images": False,
            "inference_service_set_stats": False,
            "inference_service_memory": "384m",
            "inference_service_cpus": 1.0,
            "inference_service_env": {"LINKEDGE_WORKERS": "1"},
            "ansible_python_interpreter": sys.executable,
        }

    def sync(self, *options: str, **overrides) -> tuple[subprocess.CompletedProcess, dict]:
        path = self.work / "sync-vars.json"
        path.write_text(json.dumps({**self.vars, **overrides}))
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
        argv = [ANSIBLE_PLAYBOOK, "playbooks/sync.yml", "-i", f"{self.truck},", "-c", "local"]
        process = subprocess.Popen(
            [*argv, *options, "-e", f"@{path}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak = TreeMemory(process.pid)
        peak.start()
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        stdout, stderr = process.communicate(timeout=900)
        peak.stop()
        self.peak_pss_mib = round(peak.pss_kb / 1024)
        # CPU of the whole run (ansible-playbook, its workers and the modules), user + system.
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_seconds = round(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime, 2)
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        record = self.record()
        print(
            f"sync: rc={result.returncode} CPU {self.cpu_seconds} s,"
            f" peak tree PSS {peak.pss_kb / 1024:.0f} MiB"
            f" (RSS sum {peak.rss_kb / 1024:.0f} MiB): {json.dumps(record)}"
        )
        return result, record

    def record(self) -> dict:
        """The truck's outcome record (the role's last-outcome.json), {} when there is none."""
        path = self.work / "last-outcome.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def sequence_seen(self) -> int | None:
        """The highest sequence channel_verify accepted for the channel stable."""
        path = self.work / "state" / "channel-state.json"
        channels = json.loads(path.read_text())["channels"] if path.exists() else {}
        return channels.get("stable", {}).get("sequence")

    def serving(self) -> str | None:
        try:
            container = self.client.containers.get(self.name)
        except Exception:
            return None
        if container.status != "running":
            return None
        return (container.image.labels or {}).get("io.linkedge.model.version")

    def served_version(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/models", timeout=5) as rsp:
            body = json.loads(rsp.read())
        return json.dumps(body)

    def remove(self) -> None:
        for suffix in ("", "-previous", "-candidate"):
            with contextlib.suppress(Exception):
                self.client.containers.get(self.name + suffix).remove(force=True)


def version(release: Path) -> str:
    return json.loads((release / "manifest.json").read_text())["version"]


@pytest.fixture
def truck_factory(tmp_path, docker_client):
    trucks: list[Truck] = []

    def make(depot: str, name: str = "truck") -> Truck:
        work = tmp_path / name
        work.mkdir()
        truck = Truck(work, depot, docker_client)
        trucks.append(truck)
        return truck

    yield make
    for truck in trucks:
        truck.remove()


def test_sync_from_an_http_depot(tmp_path, releases, nginx_binary, truck_factory):
    depot = tmp_path / "depot"
    (depot / "channels").mkdir(parents=True)
    nginx = Nginx(tmp_path / "nginx", depot, buffered_log=False)
    nginx.start()
    try:
        truck = truck_factory(nginx.url)
        v1, v2 = version(releases["v1"]), version(releases["v2"])
        archive_bytes = json.loads((releases["v1"] / "manifest.json").read_text())["archive_bytes"]

        # v1 published: the sync fetches it and serves it.
        publish(depot, "stable", releases["v1"])
        result, record = truck.sync()
        checked(result)
        assert record["outcome"] == "updated" and record["changed"], record
        assert truck.serving() == v1
        assert record["serving_version"] == v1 and record["new_version"] == v1
        assert record["sequence"] == 1 and truck.sequence_seen() == 1
        assert record["truck"] == truck.truck and record["channel"] == "stable"
        assert record["bytes_transferred"] >= archive_bytes
        assert record["serving_since"] == record["finished_at"]
        v1_since = record["serving_since"]
        save_figures(
            updating_sync_seconds=record["duration_seconds"],
            updating_sync_peak_pss_mib=truck.peak_pss_mib,
            updating_sync_bytes_from_depot=record["bytes_transferred"],
        )
        assert not (Path(truck.vars["edge_manager_cache_dir"]) / "releases" / v1).exists()
        # No download left half-way (the directory itself stays, for the next sync).
        assert not list((Path(truck.vars["edge_manager_cache_dir"]) / "partial").glob("*"))

        # Again: unchanged, nothing but a conditional request for the pointer (304).
        # Through a proxy that counts what crosses the truck's link.
        before = len(nginx.requests())
        proxy = CountingProxy(nginx.port)
        try:
            result, record = truck.sync(edge_manager_depot=proxy.url + DEPOT_PREFIX)
            flows = proxy.take()
        finally:
            proxy.close()
        up = sum(flow.bytes("up") for flow in flows)
        down = sum(flow.bytes("down") for flow in flows)
        checked(result)
        assert record["outcome"] == "unchanged" and not record["changed"], record
        assert record["bytes_transferred"] == 0 and record["serving_version"] == v1
        assert record["serving_since"] == v1_since < record["finished_at"]
        new = nginx.requests()[before:]
        # One request: the pointer, answered 304 (its signature is fetched only with a new one).
        assert len(new) == 1 and " 304 " in new[0], new
        assert len(flows) == 1 and 0 < up < 1000 and 0 < down < 1000, (len(flows), up, down)
        # The status it publishes (retained, over the bridge): the record, plus topic and header.
        status = len((truck.work / "last-outcome.json").read_bytes())
        status += len(f"linkedge/{truck.truck}/status") + 8
        per_sync = up + down + status
        save_figures(
            unchanged_sync_seconds=record["duration_seconds"],
            unchanged_sync_peak_pss_mib=truck.peak_pss_mib,
            unchanged_sync_cpu_seconds=truck.cpu_seconds,
            unchanged_sync_http_bytes_up=up,
            unchanged_sync_http_bytes_down=down,
            unchanged_sync_status_bytes=status,
            idle_bytes_per_month_every_30_min=per_sync * 2 * 24 * 30,
        )

        # The guard says no: deferred, nothing fetched, v1 serves.
        publish(depot, "stable", releases["v2"])
        before = len(nginx.requests())
        result, record = truck.sync(edge_manager_guard_command="/bin/false")
        checked(result)
        assert record["outcome"] == "deferred", record
        assert record["reason"].startswith("guard_command: the guard command exited 1"), record
        assert record["serving_version"] == v1 and record["serving_since"] == v1_since
        assert nginx.requests()[before:] == []
        result, record = truck.sync(edge_manager_guard_file=str(tmp_path / "parked"))
        checked(result)
        assert record["outcome"] == "deferred", record
        assert record["reason"].startswith("guard_file: "), record
        assert truck.serving() == v1

        # v2 published (sequence 2) and the guard allows it: the sync serves v2.
        (tmp_path / "parked").touch()
        result, record = truck.sync(
            edge_manager_guard_file=str(tmp_path / "parked"), edge_manager_guard_command="/bin/true"
        )
        checked(result)
        assert record["outcome"] == "updated", record
        assert truck.serving() == v2
        assert record["serving_version"] == v2 and record["previous_version"] == v1
        assert record["sequence"] == 2 and truck.sequence_seen() == 2
        assert record["serving_since"] > v1_since

        # A replayed (older) pointer put back in the depot: refused, recorded, v2 serves.
        current = {
            n: (depot / "channels" / n).read_bytes() for n in ("stable.json", "stable.json.sig")
        }
        replay_dir = tmp_path / "replay"
        publish(replay_dir, "stable", releases["v1"])  # a genuine sequence-1 pointer for v1
        for name in ("stable.json", "stable.json.sig"):
            (depot / "channels" / name).write_bytes((replay_dir / "channels" / name).read_bytes())
        result, record = truck.sync()
        assert result.returncode != 0
        # The record (what the truck publishes on MQTT) has the refusal and its reason.
        assert record["truck"] == truck.truck and record["outcome"] == "failed", record
        assert record["reason"].startswith("replayed: pointer_verify: "), record
        assert record["serving_version"] == v2 and record["sequence"] is None, record
        assert truck.sequence_seen() == 2 and truck.serving() == v2
        for name, data in current.items():
            (depot / "channels" / name).write_bytes(data)

        # The depot down: failed with the reason, serving untouched; after the restart the
        # next sync completes.
        nginx.stop()
        result, record = truck.sync()
        assert result.returncode != 0
        # failed, not pending: the truck was reached, its depot was not.
        assert record["outcome"] == "failed", record
        assert record["reason"].startswith("depot_unavailable: pointer_fetch: "), record
        assert truck.serving() == v2 and record["serving_version"] == v2
        nginx.start()
        result, record = truck.sync()
        checked(result)
        assert record["outcome"] == "unchanged", record
        assert truck.serving() == v2
    finally:
        nginx.stop()


def test_sync_from_a_local_directory(tmp_path, releases, truck_factory):
    """An air-gapped truck: the depot is a directory (a USB stick); a pin overrides the
    channel."""
    depot = tmp_path / "usb" / "depot"
    (depot / "channels").mkdir(parents=True)
    truck = truck_factory(str(depot))
    v1, v2 = version(releases["v1"]), version(releases["v2"])
    publish(depot, "stable", releases["v1"])
    result, record = truck.sync()
    checked(result)
    assert record["outcome"] == "updated", record
    assert truck.serving() == v1
    result, record = truck.sync()
    checked(result)
    assert record["outcome"] == "unchanged", record

    # Check mode says what a sync would do and changes nothing (the record neither).
    publish(depot, "stable", releases["v2"])
    result, after = truck.sync("--check")
    checked(result)
    assert "sync would_update" in result.stdout and after == record
    assert truck.serving() == v1

    # A pinned version: the channel is not read, the pinned release is verified and served.
    (depot / "channels" / "stable.json").unlink()
    result, record = truck.sync(edge_manager_pin_version=v2)
    checked(result)
    assert record["outcome"] == "updated", record
    assert record["new_version"] == v2 and record["sequence"] is None and truck.serving() == v2


def test_sync_refuses_a_release_that_is_not_the_one_the_pointer_names(
    tmp_path, releases, truck_factory
):
    """A depot whose manifest was swapped after the pointer was signed: nothing is loaded."""
    depot = tmp_path / "depot"
    (depot / "channels").mkdir(parents=True)
    truck = truck_factory(str(depot))
    publish(depot, "stable", releases["v1"])
    manifest = depot / "releases" / releases["v1"].name / "manifest.json"
    data = manifest.read_bytes()
    manifest.unlink()  # a hard link: never write through it
    manifest.write_bytes(data.replace(b'"name"', b'"name" ', 1))
    result, record = truck.sync()
    assert result.returncode != 0
    assert record["outcome"] == "failed", record
    assert record["reason"].startswith("checksum_mismatch: "), record
    assert truck.serving() is None


def test_sync_refuses_a_release_it_cannot_take_before_fetching_its_archive(
    tmp_path, releases, truck_factory
):
    """Two signed pointers a truck must refuse with the depot's fault named, before the
    archive is fetched, serving v1 throughout: a release whose only image is arm64 (this engine
    runs amd64: no_architecture) and a pointer naming a manifest that is not JSON (a
    publisher's bug: manifest_invalid, not a missing architecture)."""
    from inference_image import channels, signing

    depot = tmp_path / "depot"
    (depot / "channels").mkdir(parents=True)
    truck = truck_factory(str(depot))
    v1 = version(releases["v1"])
    publish(depot, "stable", releases["v1"])
    checked(truck.sync()[0])
    assert truck.serving() == v1
    key = signing.load_private_key(KEYS / "release-signing.key")

    # v2 re-signed naming only an arm64 image.
    arm_only = depot / "releases" / version(releases["v2"])
    shutil.copytree(releases["v2"], arm_only, copy_function=os.link)
    manifest = json.loads((arm_only / "manifest.json").read_text())
    images = manifest.get("architectures") or {"amd64": manifest}
    manifest["architectures"] = {"arm64": {name: images["amd64"][name] for name in IMAGE_FIELDS}}
    for name in ("manifest.json", "manifest.json.sig"):
        (arm_only / name).unlink()  # hard links: never write through them
    (arm_only / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    signing.sign_manifest(arm_only / "manifest.json", key)
    publish(depot, "stable", arm_only)
    result, record = truck.sync()
    assert result.returncode != 0
    assert record["outcome"] == "failed", record
    assert record["reason"].startswith("no_architecture: "), record
    assert "has no image for amd64 (it has arm64)" in record["reason"], record
    assert (record.get("bytes_transferred") or 0) < 100_000, record  # the archive was not fetched
    assert not list((truck.work / "cache").rglob("*.tar")), "an archive was fetched"
    assert truck.serving() == v1

    # A pointer signed over a manifest that does not decode (as a buggy publisher could).
    garbage = b'{"version": "aps-garbled",\n'
    broken = depot / "releases" / "aps-garbled"
    broken.mkdir()
    (broken / "manifest.json").write_bytes(garbage)
    signing.sign_manifest(broken / "manifest.json", key)
    release = channels.Release(
        {"version": "aps-garbled"},
        hashlib.sha256(garbage).hexdigest(),
        "releases/aps-garbled/manifest.json",
    )
    channels._point(channels.Depot(depot), "stable", release, key, "publish")
    result, record = truck.sync()
    assert result.returncode != 0
    assert record["outcome"] == "failed", record
    assert record["reason"].startswith("manifest_invalid: release_read: "), record
    assert truck.serving() == v1


@pytest.fixture(scope="module")
def two_architecture_release(tmp_path_factory, docker_client) -> Path:
    """build/releases/v3 (scripts/molecule-releases.sh: one signed release, an amd64 and an
    arm64 image), snapshotted; skipped where it has no arm64 image (a machine whose kernel
    refuses QEMU: inference_image/image/ensure-binfmt.sh says why)."""
    built = REPO / "build" / "releases" / "v3"
    if not release_present(built, with_bundle=True):
        checked(run(["bash", "scripts/molecule-releases.sh"], cwd=REPO))
    manifest = json.loads((built / "manifest.json").read_text())
    if "arm64" not in release_images(manifest):
        pytest.skip(f"{built} has no arm64 image (QEMU cannot run arm64 code here)")
    target = snapshot(built, tmp_path_factory.mktemp("releases"))
    with engine_images_kept(docker_client, [target]):
        yield target


def test_an_arm64_truck_syncs_the_arm64_image_of_a_two_architecture_release(
    tmp_path, two_architecture_release, truck_factory
):
    """Pull mode on a truck whose engine is arm64 (declared here: this host's engine is amd64
    and runs arm64 code under QEMU; a real arm64 truck's engine reports it): of a release with
    both images, the sync fetches, verifies and serves the arm64 one, through the same gate
    (health and every smoke vector, under emulation)."""
    depot = tmp_path / "depot"
    (depot / "channels").mkdir(parents=True)
    truck = truck_factory(str(depot))
    truck.vars["inference_service_architecture"] = "arm64"
    manifest = json.loads((two_architecture_release / "manifest.json").read_text())
    arm64 = manifest["architectures"]["arm64"]
    publish(depot, "stable", two_architecture_release)
    result, record = truck.sync()
    checked(result)
    assert record["outcome"] == "updated", record
    assert truck.serving() == manifest["version"]
    container = truck.client.containers.get(truck.name)
    assert container.image.id == arm64["image_id"]
    assert container.exec_run(["uname", "-m"]).output.decode().strip() == "aarch64"
    # The arm64 archive crossed the link, not the amd64 one (209 MB): the rest is the depot's
    # small files.
    assert arm64["archive_bytes"] <= record["bytes_transferred"] < arm64["archive_bytes"] + 5e6
    assert record["smoke_vectors_checked"] > 0, record
    save_figures(
        arm64_updating_sync_seconds=record["duration_seconds"],
        arm64_updating_sync_bytes_from_depot=record["bytes_transferred"],
    )


@contextlib.contextmanager
def image_absent(client, image_id: str, archive: Path):
    """The engine without IMAGE_ID (so that a pull must fetch it); afterwards the image and
    the tags it had are back (pulled by the test, or loaded again from ARCHIVE)."""
    tags: list[str] = []
    with contextlib.suppress(docker.errors.ImageNotFound):
        tags = client.images.get(image_id).tags
        client.images.remove(image_id, force=True)
    try:
        yield
    finally:
        try:
            client.images.get(image_id)
        except docker.errors.ImageNotFound:
            checked(run(["docker", "load", "-i", str(archive)]))
        for tag in tags:
            repository, _, name = tag.rpartition(":")
            client.images.get(image_id).tag(repository, name)


def test_an_arm64_truck_pulls_its_architectures_tag_from_a_registry(
    tmp_path, two_architecture_release, truck_factory, registry, docker_client
):
    """With a registry (edge_manager_registry) the sync fetches no archive: the engine of an
    arm64 truck pulls `<version>-arm64`, the tag CI pushes for arm64 (contract.registry_reference,
    shared by image_builder and the role), from a real registry, and the signed arm64 image
    serves."""
    manifest = json.loads((two_architecture_release / "manifest.json").read_text())
    arm64 = manifest["architectures"]["arm64"]
    reference = registry_reference(registry, manifest["image"], manifest["version"], "arm64")
    assert reference.endswith(f":{manifest['version']}-arm64")
    archive = two_architecture_release / arm64["archive"]
    if arm64["image_id"] not in run(["docker", "images", "-q", "--no-trunc"]).stdout:
        checked(run(["docker", "load", "-i", archive]))
    checked(run(["docker", "tag", arm64["image_id"], reference]))
    try:
        checked(run(["docker", "push", reference]))
    finally:
        run(["docker", "rmi", reference])
    depot = tmp_path / "depot"
    (depot / "channels").mkdir(parents=True)
    publish(depot, "stable", two_architecture_release)
    truck = truck_factory(str(depot))
    truck.vars["inference_service_architecture"] = "arm64"
    with image_absent(docker_client, arm64["image_id"], archive):
        result, record = truck.sync(edge_manager_registry=registry)
        checked(result)
        assert record["outcome"] == "updated", record
        container = truck.client.containers.get(truck.name)
        assert container.image.id == arm64["image_id"]
        assert container.exec_run(["uname", "-m"]).output.decode().strip() == "aarch64"
    # Pulled, not shipped: no archive in the truck's cache, less than the archive crossed.
    assert not list((truck.work / "cache").rglob("*.tar")), "an archive was fetched"
    assert record["bytes_transferred"] < arm64["archive_bytes"], record
    save_figures(arm64_registry_sync_seconds=record["duration_seconds"])


def install_playbook(tmp_path: Path, role_vars: dict) -> Path:
    """A playbook applying the role edge_manager (its install entry point) to localhost."""
    import yaml

    playbook = tmp_path / "install.yml"
    play = {
        "name": "Install pull mode",
        "hosts": "localhost",
        "gather_facts": False,
        "roles": [{"role": "linkedge.edge.edge_manager", "vars": role_vars}],
    }
    playbook.write_text(yaml.safe_dump([play]))
    return playbook


def test_edge_manager_role_installs_the_timer(tmp_path):
    """The role's main entry point in check mode, then for real, then again (nothing changes):
    the configuration and the units (systemd not managed here: this host has no systemd), which
    `systemd-analyze verify` accepts."""
    import configparser

    import yaml

    root = tmp_path / "truck"
    role_vars = {
        "edge_manager_depot": "https://depot.example.net/linkedge",
        "edge_manager_depot_ca": "/etc/linkedge/depot-ca.pem",
        "edge_manager_channel": "canary",
        "edge_manager_guard_file": "/run/linkedge/parked",
        "edge_manager_install_ansible": False,
        "edge_manager_ansible_playbook": ANSIBLE_PLAYBOOK,
        "edge_manager_manage_systemd": False,
        "edge_manager_systemd_dir": str(root / "systemd"),
        "edge_manager_config_file": str(root / "etc" / "edge-manager.yml"),
        "edge_manager_cache_dir": str(root / "cache"),
        "edge_manager_state_dir": str(root / "state"),
        "edge_manager_interval": "15min",
        "edge_manager_sync_vars": {"inference_service_port": 18080},
        "inference_service_release_public_key": str(KEYS / "release-signing.pub"),
    }
    playbook = install_playbook(tmp_path, role_vars)
    (root / "systemd").mkdir(parents=True)
    argv = [ANSIBLE_PLAYBOOK, playbook, "-i", "localhost,", "-c", "local"]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    env["ANSIBLE_PYTHON_INTERPRETER"] = sys.executable
    checked(run([*argv, "--check"], cwd=REPO, env=env))
    first = checked(run(argv, cwd=REPO, env=env))
    assert "changed=" in first.stdout and "changed=0" not in first.stdout
    second = checked(run(argv, cwd=REPO, env=env))
    assert "changed=0" in second.stdout, second.stdout[-2000:]

    config = yaml.safe_load((root / "etc" / "edge-manager.yml").read_text())
    assert config["edge_manager_depot"] == "https://depot.example.net/linkedge"
    assert config["edge_manager_channel"] == "canary"
    assert config["inference_service_port"] == 18080
    assert "BEGIN PUBLIC KEY" in config["inference_service_release_public_key"]
    assert (root / "etc" / "edge-manager.yml").stat().st_mode & 0o077 == 0

    service = root / "systemd" / "linkedge-edge-sync.service"
    timer = root / "systemd" / "linkedge-edge-sync.timer"
    units = {}
    for path in (service, timer):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read_string(path.read_text())
        units[path.suffix] = parser
    assert units[".timer"]["Timer"]["OnUnitActiveSec"] == "15min"
    assert units[".timer"]["Timer"]["RandomizedDelaySec"] == "10min"
    assert units[".timer"]["Timer"]["Persistent"] == "true"
    assert units[".service"]["Service"]["Type"] == "oneshot"
    assert units[".service"]["Service"]["MemoryMax"] == "512M"
    exec_start = units[".service"]["Service"]["ExecStart"]
    assert f"{ANSIBLE_PLAYBOOK} linkedge.edge.sync -i localhost, -c local -e @" in exec_start

    analyze = shutil.which("systemd-analyze")
    if analyze:
        result = run([analyze, "verify", "--man=no", service, timer])
        print("systemd-analyze verify:", result.returncode, result.stderr[-1500:])
        problems = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if "linkedge-edge-sync" in line
        ]
        assert result.returncode == 0 and not problems, problems

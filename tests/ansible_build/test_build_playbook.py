"""playbooks/build.yml (role image_builder) end to end: release, idempotence, gate, registry."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

pytestmark = pytest.mark.docker
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's ansible-playbook, whatever PATH says
# The role's default signing key: the project's development key, generated on first use.
DEV_PUBLIC_KEY = REPO / "build" / "keys" / "release-signing.pub"


# The platforms every run builds (set by the `releases` fixture): the role's defaults, or
# amd64 alone where QEMU cannot run arm64 code. The same in every run, so "same inputs" holds.
PLATFORMS: dict[str, list[str]] = {}


def run_build(releases: Path, work: Path, **extra_vars) -> subprocess.CompletedProcess:
    variables = {
        "image_builder_releases_dir": str(releases),
        "image_builder_work_dir": str(work),
        **PLATFORMS,
        **extra_vars,
    }
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "playbooks/build.yml", "-e", json.dumps(variables)],
        cwd=REPO,
        env={
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=1800,  # the first run builds the arm64 image under emulation too
    )


def recap(result: subprocess.CompletedProcess) -> dict[str, int]:
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("localhost "))
    return {key: int(value) for key, value in (part.split("=") for part in line.split()[2:])}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def emulation_refused() -> str | None:
    """Why this machine cannot run arm64 code under QEMU (ensure-binfmt.sh's one line), or
    None when it can: the role's default platforms then include linux/arm64."""
    script = REPO / "inference_image" / "image" / "ensure-binfmt.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    if done.returncode == 3:
        return done.stderr.strip().splitlines()[-1]
    assert done.returncode == 0, done.stderr
    return None


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("build")
    started = time.monotonic()
    refused = emulation_refused()
    # The role's defaults (amd64 and arm64) where QEMU runs; amd64 alone where it cannot.
    PLATFORMS.update({"image_builder_platforms": ["linux/amd64"]} if refused else {})
    result = run_build(root / "releases", root / "work")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return {
        "root": root / "releases",
        "work": root / "work",
        "first_run": result,
        "seconds": time.monotonic() - started,
        "emulation_refused": refused,
    }


def test_publishes_a_complete_release(releases):
    root = releases["root"]
    manifest = json.loads((root / "current" / "manifest.json").read_text())
    release = root / manifest["version"]
    assert (root / "current").resolve() == release.resolve()
    archive = release / manifest["archive"]
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == manifest["archive_sha256"]
    assert (release / (manifest["archive"] + ".sha256")).read_text().split()[0] == manifest[
        "archive_sha256"
    ]
    for key in ("version", "image_id", "bundle_sha256", "built_at", "source_commit"):
        assert manifest[key], key
    card = json.loads((release / "model_card.json").read_text())
    assert card["version"] == manifest["version"]
    repeated = card["metrics"]["repeated_cv"]
    assert repeated["cost_ratio_mean"] <= 0.09
    assert len(repeated["per_repetition"]) == repeated["repetitions"] == 5
    assert (release / "bundle" / "SHA256SUMS").is_file()
    packages = {
        p["name"]: p["version"] for p in json.loads((release / "packages.json").read_text())
    }
    assert {"numpy", "xgboost-cpu", "flask", "gunicorn"} <= set(packages)
    assert "scipy" not in packages and "pip" not in packages
    image = docker.from_env().images.get(manifest["image"])
    assert image.id == manifest["image_id"]
    assert not any(path.name.startswith(".") for path in root.iterdir() if path.is_dir())


def test_the_release_is_signed_and_its_manifest_covers_every_file(releases):
    from inference_image import signing

    release = (releases["root"] / "current").resolve()
    manifest = json.loads((release / "manifest.json").read_text())
    public_key = signing.load_public_key(DEV_PUBLIC_KEY)
    assert signing.verify_manifest(release / "manifest.json", public_key) == signing.key_id(
        public_key
    )
    record = json.loads((release / "manifest.json.sig").read_text())
    assert record["algorithm"] == "ed25519" and record["key_id"] == signing.key_id(public_key)
    listed = {path.relative_to(release).as_posix() for path in release.rglob("*") if path.is_file()}
    archives = {image["archive"] for image in manifest["architectures"].values()}
    assert manifest["archive"] in archives
    assert set(manifest["files"]) == listed - archives - {"manifest.json", "manifest.json.sig"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((release / name).read_bytes()).hexdigest() == digest, name
    assert manifest["files"]["bundle/SHA256SUMS"] == manifest["bundle_sha256"]
    private_key = REPO / "build" / "keys" / "release-signing.key"
    assert private_key.stat().st_mode & 0o777 == 0o600
    ignored = subprocess.run(["git", "check-ignore", "-q", str(private_key)], cwd=REPO)
    assert ignored.returncode == 0, "the signing key must be git-ignored"


def _saved_config(archive: Path) -> bytes:
    """A docker save archive's image config, as stored (its sha256 is the image ID)."""
    import tarfile

    with tarfile.open(archive) as saved:
        (manifest,) = json.loads(saved.extractfile("manifest.json").read())
        return saved.extractfile(manifest["Config"]).read()


def test_one_signed_release_carries_an_amd64_and_an_arm64_image(releases):
    """The role's default platforms: both images from one bundle, each smoke-tested as a truck
    runs it (arm64 under emulation), one signed manifest naming both, the same model layer."""
    if releases["emulation_refused"]:
        pytest.skip(f"no arm64 image here: {releases['emulation_refused']}")
    release = (releases["root"] / "current").resolve()
    manifest = json.loads((release / "manifest.json").read_text())
    images = manifest["architectures"]
    assert sorted(images) == ["amd64", "arm64"]
    assert {key: manifest[key] for key in images["amd64"]} == images["amd64"]  # top level
    assert images["arm64"]["image"] == images["amd64"]["image"] + "-arm64"
    layers = {}
    for architecture, image in images.items():
        archive = release / image["archive"]
        assert archive.stat().st_size == image["archive_bytes"]
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == image["archive_sha256"]
        config_bytes = _saved_config(archive)
        assert "sha256:" + hashlib.sha256(config_bytes).hexdigest() == image["image_id"]
        config = json.loads(config_bytes)
        assert config["architecture"] == architecture
        layers[architecture] = config["rootfs"]["diff_ids"]
    assert layers["amd64"][-1] == layers["arm64"][-1], "the model layer differs"
    assert layers["amd64"][:-1] != layers["arm64"][:-1]  # the code below it is each its own
    output = releases["first_run"].stdout
    assert output.count("Smoke | Probe it on its service port") == len(images)
    for image in images.values():
        assert f"smoke.yml for localhost => (item={image['image']})" in output, image["image"]


def test_same_inputs_make_no_new_release(releases):
    root = releases["root"]
    before = sorted(p.name for p in root.iterdir())
    manifest_mtime = (root / "current" / "manifest.json").stat().st_mtime
    result = run_build(root, releases["work"])
    assert result.returncode == 0, result.stdout[-2000:]
    assert recap(result)["changed"] == 0
    assert "nothing to do" in result.stdout
    assert sorted(p.name for p in root.iterdir()) == before
    assert (root / "current" / "manifest.json").stat().st_mtime == manifest_mtime


def test_an_unsigned_release_of_the_same_inputs_gets_signed(releases):
    release = (releases["root"] / "current").resolve()
    signature = release / "manifest.json.sig"
    before = signature.read_bytes()
    signature.unlink()
    result = run_build(releases["root"], releases["work"])
    assert result.returncode == 0, result.stdout[-2000:]
    assert recap(result)["changed"] == 1  # only the signature: nothing was rebuilt
    assert signature.read_bytes() == before  # Ed25519 signatures are deterministic


def test_a_configured_signing_key_that_is_missing_stops_the_build(releases, tmp_path):
    root = releases["root"]
    before = sorted(p.name for p in root.iterdir())
    result = run_build(
        root, releases["work"], image_builder_signing_key=str(tmp_path / "ci-release.key")
    )
    assert result.returncode != 0
    assert f"Signing key {tmp_path / 'ci-release.key'} (image_builder_signing_key) not found" in (
        " ".join(result.stdout.split())
    )
    assert "Nothing was built." in result.stdout
    assert sorted(p.name for p in root.iterdir()) == before


def test_gate_refuses_a_worse_model_with_both_figures(releases):
    root = releases["root"]
    current = json.loads((root / "current" / "manifest.json").read_text())
    before = sorted(p.name for p in root.iterdir())
    result = run_build(
        root,
        releases["work"],
        image_builder_training={"n_estimators": 2, "max_depth": 1},
        image_builder_max_cost_ratio=1.0,  # only the comparison with the release can refuse it
    )
    assert result.returncode != 0
    output = " ".join(result.stdout.split())
    assert "Quality gate refused model" in output
    # Paired on the same folds and seeds: the release's figures come from its model card.
    assert f"against the current release {current['version']}" in output
    assert f"vs champion {current['version']}" in output
    assert "paired repetitions): difference +" in output
    assert "refused: worse beyond the noise" in output
    assert sorted(p.name for p in root.iterdir()) == before  # nothing published
    assert json.loads((root / "current" / "manifest.json").read_text()) == current


def test_ceiling_refuses_even_without_a_current_release(tmp_path):
    result = run_build(
        tmp_path / "releases",
        tmp_path / "work",
        image_builder_training={"n_estimators": 2, "max_depth": 1},
    )
    assert result.returncode != 0
    output = " ".join(result.stdout.split())
    assert "repetitions of 5-fold nested CV) against the ceiling 0.09" in output
    assert not (tmp_path / "releases" / "current").exists()


def run_role_ship(release_dir: Path, tmp_path: Path, name: str, port: int = 0) -> tuple[int, dict]:
    """The inference_service role, whole (edge facts, verification on the "truck", transfer when
    the image is absent, switch) against this host; (rc, json callback output)."""
    variables = {
        "inference_service_release_dir": str(release_dir),
        "inference_service_release_public_key": str(DEV_PUBLIC_KEY),  # a path on the controller
        "inference_service_release_manifest_dir": str(tmp_path / "truck" / "releases"),
        "inference_service_staging_dir": str(tmp_path / "truck" / "staging"),
        "inference_service_state_file": str(tmp_path / "truck" / "last-outcome.json"),
        "inference_service_cache_dir": str(tmp_path / "controller" / "cache"),
        "inference_service_migrate_queued_connections": False,  # no sysctl on the CI host
        "inference_service_prune_images": False,  # other tests' images live on this engine
        "inference_service_api_token_path": str(tmp_path / "truck" / "api-token"),
        "inference_service_port": port or free_port(),
        "inference_service_grpc_port": free_port(),  # not 8081: other servers share this host
        "inference_service_bind_address": "127.0.0.1",
        "inference_service_name": name,
        "ansible_python_interpreter": sys.executable,
    }
    role = "linkedge.edge.inference_service"
    play = [{
        "hosts": "localhost", "connection": "local", "gather_facts": False, "vars": variables,
        "tasks": [
            {"ansible.builtin.include_role": {"name": role}},
        ],
    }]  # fmt: skip
    playbook = tmp_path / f"ship-{time.monotonic_ns()}.yml"
    playbook.write_text(json.dumps(play))
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)],
        cwd=REPO,
        env={
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_STDOUT_CALLBACK": "json",
            "ANSIBLE_SHOW_CUSTOM_STATS": "1",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            # The report callback (ansible.cfg) writes here and prints its summary after the
            # JSON callback's document.
            "LINKEDGE_ROLLOUT_REPORT_DIR": str(tmp_path / "reports"),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    document, _ = json.JSONDecoder().raw_decode(result.stdout)
    return result.returncode, document


def _tampered_copy(release: Path, out: Path) -> Path:
    """The release with every file hard-linked (the 236 MB archive is not copied): replace a
    file before changing it."""
    shutil.copytree(release, out, copy_function=os.link)
    return out


def _rewrite(path: Path, data: bytes) -> None:
    path.unlink()  # break the hard link: the built release stays intact
    path.write_bytes(data)


@pytest.fixture
def serving(releases):
    """A container of the release's image: what the "truck" serves while releases are refused."""
    client = docker.from_env()
    manifest = json.loads((releases["root"] / "current" / "manifest.json").read_text())
    name = f"lkbuild-serving-{os.getpid()}"
    container = client.containers.run(
        manifest["image_id"], name=name, detach=True, network_mode="none"
    )
    yield container
    with contextlib.suppress(docker.errors.NotFound):  # the switch may have replaced it
        container.remove(force=True)


def test_the_truck_refuses_a_tampered_release_and_keeps_serving(releases, serving, tmp_path):
    from inference_image import signing

    release = (releases["root"] / "current").resolve()
    manifest = json.loads((release / "manifest.json").read_text())
    client = docker.from_env()
    images_before = sorted(image.id for image in client.images.list())
    key_id = signing.key_id(signing.load_public_key(DEV_PUBLIC_KEY))

    other = signing.generate_key_pair(tmp_path / "other-key")
    altered = (release / "manifest.json").read_text().replace(manifest["image_id"][-12:], "0" * 12)
    cases = {
        # The manifest points the truck at another image: one field changed, signature kept.
        "manifest": (
            lambda out: _rewrite(out / "manifest.json", altered.encode()),
            f"signature does not match the trusted key {key_id}: the manifest was altered",
        ),
        "another key": (
            lambda out: (
                (out / "manifest.json.sig").unlink(),
                signing.sign_manifest(
                    out / "manifest.json", signing.load_private_key(other.private_key)
                ),
            ),
            f"(the signature file names key {other.key_id})",
        ),
        "no signature": (
            lambda out: (out / "manifest.json.sig").unlink(),
            "is not a signed release",
        ),
    }
    for case, (tamper, expected) in cases.items():
        out = _tampered_copy(release, tmp_path / case.replace(" ", "-"))
        tamper(out)
        rc, output = run_role_ship(out, tmp_path, serving.name)
        assert rc != 0, case
        report = output["global_custom_stats"]["linkedge_outcome"]["localhost"]
        assert report["outcome"] == "failed" and not report["changed"], case
        assert report["reason"].startswith("release refused: "), report
        assert expected in " ".join(report["reason"].split()), (case, report["reason"])
        assert report["serving_version"] == manifest["version"]  # what the truck still serves
        assert report["bytes_transferred"] == 0, report
        serving.reload()
        assert serving.status == "running" and serving.image.id == manifest["image_id"], case
        assert sorted(image.id for image in client.images.list()) == images_before, case

    # The signed release passes, and the role switches the "truck" to it as on a truck.
    try:
        rc, output = run_role_ship(release, tmp_path, serving.name)
        assert rc == 0, json.dumps(output)[-3000:]
        report = output["global_custom_stats"]["linkedge_outcome"]["localhost"]
        assert report["outcome"] == "updated", report
        assert report["key_id"] == key_id and report["image_id"] == manifest["image_id"], report
        assert report["serving_version"] == manifest["version"], report
        assert report["smoke_vectors_checked"] > 0, report
        kept = tmp_path / "truck" / "releases" / manifest["version"] / "manifest.json"
        assert kept.read_bytes() == (release / "manifest.json").read_bytes()
        state = json.loads((tmp_path / "truck" / "last-outcome.json").read_text())
        assert state == report  # the truck keeps the record it published
    finally:
        for leftover in (serving.name, serving.name + "-previous"):
            with contextlib.suppress(docker.errors.NotFound):
                client.containers.get(leftover).remove(force=True)


@pytest.fixture
def clean_engine():
    """A second Docker engine with empty storage, to pull into.

    It gets a bridge of its own: with `--bridge none` dockerd deletes the host's docker0
    interface at start-up, which breaks the main engine's networking.
    """
    root = Path("/tmp") / f"linkedge-engine-{os.getpid()}"
    root.mkdir()
    socket_path = root / "docker.sock"
    bridge = f"lkclean{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    process = None
    try:
        subprocess.run(["ip", "addr", "add", "10.254.254.1/24", "dev", bridge], check=True)
        process = subprocess.Popen(
            ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "docker.pid"), "--host", f"unix://{socket_path}",
             "--bridge", bridge, "--iptables=false", "--ip6tables=false"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        client = docker.DockerClient(base_url=f"unix://{socket_path}", version="1.41")
        while time.monotonic() < deadline:
            try:
                client.ping()
                break
            except Exception:  # not up yet
                time.sleep(0.1)
        assert client.images.list() == []
        yield client
        client.close()
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        subprocess.run(["ip", "link", "delete", bridge], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_registry_round_trip_into_a_clean_engine(releases, registry, clean_engine):
    root = releases["root"]
    manifest = json.loads((root / "current" / "manifest.json").read_text())
    result = run_build(root, releases["work"], image_builder_registry=registry)
    assert result.returncode == 0, result.stdout[-3000:]
    pulled = clean_engine.images.pull(
        f"{registry}/linkedge/aps-classifier", tag=manifest["version"]
    )
    assert pulled.id == manifest["image_id"]
    if "arm64" in manifest["architectures"]:  # pushed under the tag an arm64 truck pulls
        pulled = clean_engine.images.pull(
            f"{registry}/linkedge/aps-classifier",
            tag=f"{manifest['version']}-arm64",
            platform="linux/arm64",
        )
        assert pulled.id == manifest["architectures"]["arm64"]["image_id"]

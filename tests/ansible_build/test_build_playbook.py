"""playbooks/build.yml (role image_builder) end to end: release, idempotence, gate, registry."""

from __future__ import annotations

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


def run_build(releases: Path, work: Path, **extra_vars) -> subprocess.CompletedProcess:
    variables = {
        "image_builder_releases_dir": str(releases),
        "image_builder_work_dir": str(work),
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
        timeout=900,
    )


def recap(result: subprocess.CompletedProcess) -> dict[str, int]:
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("localhost "))
    return {key: int(value) for key, value in (part.split("=") for part in line.split()[2:])}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("build")
    started = time.monotonic()
    result = run_build(root / "releases", root / "work")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return {
        "root": root / "releases",
        "work": root / "work",
        "first_run": result,
        "seconds": time.monotonic() - started,
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
    assert manifest["cost_ratio"] <= 0.09
    card = json.loads((release / "model_card.json").read_text())
    assert card["version"] == manifest["version"]
    assert (release / "bundle" / "SHA256SUMS").is_file()
    packages = {
        p["name"]: p["version"] for p in json.loads((release / "packages.json").read_text())
    }
    assert {"numpy", "xgboost-cpu", "flask", "gunicorn"} <= set(packages)
    assert "scipy" not in packages and "pip" not in packages
    image = docker.from_env().images.get(manifest["image"])
    assert image.id == manifest["image_id"]
    assert not any(path.name.startswith(".") for path in root.iterdir() if path.is_dir())


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
    assert "Quality gate refused model" in result.stdout
    assert f"current release {current['version']} at {current['cost_ratio']}" in result.stdout
    assert sorted(p.name for p in root.iterdir()) == before  # nothing published
    assert json.loads((root / "current" / "manifest.json").read_text()) == current


def test_ceiling_refuses_even_without_a_current_release(tmp_path):
    result = run_build(
        tmp_path / "releases",
        tmp_path / "work",
        image_builder_training={"n_estimators": 2, "max_depth": 1},
    )
    assert result.returncode != 0
    assert "against the ceiling 0.09" in result.stdout
    assert not (tmp_path / "releases" / "current").exists()


@pytest.fixture
def registry(tmp_path):
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry not installed (make test installs it)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield address
    process.terminate()
    process.wait(timeout=10)


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

"""Shared by the tests of the installed collection: linkedge.edge as a user gets it (the
tarball, installed with its dependencies into an empty collections path, used by an
ansible-core-only environment from outside the checkout). Built once per test session.

No Galaxy: the dependencies are built from the copies the `ansible` PyPI package ships. The
ansible-core-only virtual environment (ansible-core of this venv, plus meta/requirements.txt) is
cached in build/collection-venv/; creating it needs a package index, and the tests skip when pip
cannot reach one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_CACHE = REPO / "build" / "collection-venv"
PYTHON_REQUIREMENTS = REPO / "meta" / "requirements.txt"
INVENTORY = "[trucks]\ntruck-1 ansible_host=192.0.2.1\ntruck-2 ansible_host=192.0.2.2\n"


@dataclass
class Installed:
    tarball: Path
    members: dict[str, tarfile.TarInfo]
    manifest: dict
    collections: Path  # ANSIBLE_COLLECTIONS_PATH
    collection: Path  # .../ansible_collections/linkedge/edge
    outside: Path  # working directory, outside the checkout, without ansible.cfg
    env: dict[str, str]
    bin: Path

    def run(self, *argv: str | Path, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / str(argv[0])), *map(str, argv[1:])],
            cwd=self.outside,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=600, **kwargs
    )


def checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def collection_venv() -> Path:
    """ansible-core (the version of this venv) and the modules' Python packages, nothing else."""
    try:
        core = importlib.metadata.version("ansible-core")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("ansible-core is not installed in the test's Python environment")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    venv = VENV_CACHE / f"ansible-core-{core}-py{python}"
    key = hashlib.sha256(f"{core}\n{PYTHON_REQUIREMENTS.read_text()}".encode()).hexdigest()
    stamp = venv / ".complete"
    if stamp.is_file() and stamp.read_text() == key and (venv / "bin" / "ansible-doc").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    checked(run([sys.executable, "-m", "venv", venv]))
    pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    probe = run([*pip, "index", "versions", "ansible-core"])
    if probe.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        pytest.skip(
            "pip cannot reach a package index to create the ansible-core-only venv: "
            + (probe.stderr.strip().splitlines() or ["no output"])[-1]
        )
    checked(run([*pip, "install", "--quiet", f"ansible-core=={core}", "-r", PYTHON_REQUIREMENTS]))
    stamp.write_text(key)
    return venv


def bundled_collections() -> Path:
    """ansible_collections/ of the `ansible` package (Galaxy is not reachable)."""
    try:
        path = Path(importlib.metadata.distribution("ansible").locate_file("ansible_collections"))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the ansible package (source of the dependencies' tarballs) is not installed")
    assert path.is_dir(), path
    return path


EDGE_MANAGER_WHEELHOUSE = REPO / "build" / "edge-manager-wheels"


def edge_manager_wheelhouse(core: str) -> Path | None:
    """ansible-core and the modules' packages as wheels for a truck's Python (what the role
    edge_manager installs offline), cached in build/edge-manager-wheels. Downloading them needs a
    package index: None without one."""
    if not list(EDGE_MANAGER_WHEELHOUSE.glob(f"ansible_core-{core}-*.whl")):
        result = run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "-d",
                EDGE_MANAGER_WHEELHOUSE,
                f"ansible-core=={core}",
                "-r",
                PYTHON_REQUIREMENTS,
            ]
        )
        if result.returncode != 0:
            print(result.stderr[-300:], file=sys.stderr)
            return None
    return EDGE_MANAGER_WHEELHOUSE


def dependency_closure(direct: dict[str, str], source: Path) -> list[Path]:
    """Directories (in the ansible package) of the dependencies and theirs."""
    found: list[Path] = []
    todo = list(direct)
    while todo:
        namespace, name = todo.pop(0).split(".")
        path = source / namespace / name
        if path in found:
            continue
        assert (path / "MANIFEST.json").is_file(), f"the ansible package has no {namespace}.{name}"
        found.append(path)
        todo += json.loads((path / "MANIFEST.json").read_text())["collection_info"]["dependencies"]
    return found


def build_installed_copy(installed: Path, work: Path, output: Path, galaxy: Path) -> None:
    """`ansible-galaxy collection build` needs a galaxy.yml: the installed copy has MANIFEST.json
    (its FILES.json lists files the ansible package leaves out, so a plain tar of the directory
    would not install)."""
    source = work / installed.parent.name / installed.name
    shutil.copytree(installed, source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    info = json.loads((source / "MANIFEST.json").read_text())["collection_info"]
    (source / "galaxy.yml").write_text(json.dumps(info, indent=2))  # JSON is YAML
    checked(run([galaxy, "collection", "build", "--output-path", output, source]))


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Installed:
    venv = collection_venv()
    galaxy = venv / "bin" / "ansible-galaxy"
    root = tmp_path_factory.mktemp("installed-collection")
    assert not root.resolve().is_relative_to(REPO)
    dist, dependencies = root / "dist", root / "dependencies"

    # 1. The collection's tarball, built from the repository root.
    checked(run([galaxy, "collection", "build", "--output-path", dist], cwd=REPO))
    (tarball,) = dist.glob("linkedge-edge-*.tar.gz")
    with tarfile.open(tarball) as archive:
        members = {member.name: member for member in archive.getmembers()}
        manifest = json.load(archive.extractfile("MANIFEST.json"))

    # 2. Its dependencies' tarballs, from the ansible package's copies.
    for path in dependency_closure(
        manifest["collection_info"]["dependencies"], bundled_collections()
    ):
        build_installed_copy(path, root / "dependency-sources", dependencies, galaxy)

    # 3. Installed together (the dependencies resolve from the local tarballs), from a
    # directory outside the checkout, with no configuration file.
    outside = root / "outside"
    (outside / "home").mkdir(parents=True)
    (outside / "inventory.ini").write_text(INVENTORY)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ANSIBLE_") and key not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env.update(
        HOME=str(outside / "home"),  # no ~/.ansible.cfg, no ~/.ansible/collections
        PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
        ANSIBLE_COLLECTIONS_PATH=str(root / "collections"),
        ANSIBLE_NOCOLOR="1",
    )
    result = Installed(
        tarball=tarball,
        members=members,
        manifest=manifest,
        collections=root / "collections",
        collection=root / "collections" / "ansible_collections" / "linkedge" / "edge",
        outside=outside,
        env=env,
        bin=venv / "bin",
    )
    checked(
        result.run(
            "ansible-galaxy",
            "collection",
            "install",
            "--offline",
            "-p",
            result.collections,
            tarball,
            *sorted(dependencies.glob("*.tar.gz")),
        )
    )
    return result

"""linkedge.edge as a user gets it: the tarball, installed with its dependencies into an empty
collections path, used by an ansible-core-only environment from outside the checkout.

No Galaxy: the dependencies are built from the copies the `ansible` PyPI package ships. The
ansible-core-only virtual environment (ansible-core of this venv, plus meta/requirements.txt) is
cached in build/collection-venv/; creating it needs a package index, and the test skips when pip
cannot reach one. No Docker needed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_CACHE = REPO / "build" / "collection-venv"
PYTHON_REQUIREMENTS = REPO / "meta" / "requirements.txt"

MODULES = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("*.py"))
# Plugin types whose file name is the plugin name (filter and test files may hold several).
DOC_TYPES = ("callback", "lookup", "connection", "inventory", "become", "cache", "vars")
PLUGINS = sorted(
    (plugin_type, path.stem)
    for plugin_type in DOC_TYPES
    for path in (REPO / "plugins" / plugin_type).glob("*.py")
    if path.name != "__init__.py"
)
# Every playbook under playbooks/, plus the entry points the documentation names (a missing
# one shows as "could not be found").
DOCUMENTED_PLAYBOOKS = {"site", "build", "rollout", "rollback", "status", "simulated_fleet"}
PLAYBOOKS = sorted(
    {path.stem for path in (REPO / "playbooks").glob("*.yml")} | DOCUMENTED_PLAYBOOKS
)
# Playbooks that do not pass `ansible-playbook --syntax-check linkedge.edge.<name>` from the
# installed collection yet, with the reason. strict: one that passes fails the test until it
# is removed from here.
SYNTAX_CHECK_XFAIL: dict[str, str] = {}

# Nothing of the checkout's tooling, tests or the image builder in the tarball (top level;
# the first two at any depth).
NOT_SHIPPED = (
    "*.egg-info",
    ".gitignore",
    "ansible.cfg",
    "trucks",
    ".ci",
    ".git",
    "inference_image",
    "tests",
    "molecule",
    "bench",
    "build",
    "scripts",
    ".venv",
    "collections",
    "Makefile",
    "pyproject.toml",
    ".ansible-lint",
    ".hypothesis",
    ".pytest_cache",
    ".ruff_cache",
    "dist",
    "*.tar",
    "*.tar.gz",
)
SHIPPED = (
    "LICENSE",
    "README.md",
    "requirements.yml",
    "requirements.txt",
    "meta/runtime.yml",
    "meta/execution-environment.yml",
    "meta/requirements.txt",
    "changelogs/changelog.yaml",
    "changelogs/config.yaml",
    "plugins/module_utils/contract.py",
)
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


@pytest.fixture(scope="module")
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


def test_runs_without_configuration_or_checkout(installed):
    version = checked(installed.run("ansible", "--version")).stdout
    assert "config file = None" in version
    assert f"ansible collection location = {installed.collections}" in version
    assert (installed.collection / "MANIFEST.json").is_file()


def test_dependencies_are_declared_and_installed(installed):
    declared = installed.manifest["collection_info"]["dependencies"]
    galaxy_yml = yaml.safe_load((REPO / "galaxy.yml").read_text())
    requirements = yaml.safe_load((REPO / "requirements.yml").read_text())["collections"]
    assert declared == galaxy_yml["dependencies"]
    assert {entry["name"]: entry["version"] for entry in requirements} == declared
    assert "community.docker" in declared
    for fqcn in declared:
        namespace, name = fqcn.split(".")
        path = installed.collections / "ansible_collections" / namespace / name
        assert (path / "MANIFEST.json").is_file(), f"{fqcn} not installed"


@pytest.mark.parametrize("pattern", NOT_SHIPPED)
def test_tarball_leaves_out(installed, pattern):
    anywhere = pattern in ("*.egg-info", ".gitignore")
    shipped = [
        name
        for name in installed.members
        if fnmatch.fnmatch(name.split("/")[0], pattern)
        or (anywhere and any(fnmatch.fnmatch(part, pattern) for part in name.split("/")))
    ]
    assert not shipped


@pytest.mark.parametrize("path", SHIPPED)
def test_tarball_ships(installed, path):
    assert path in installed.members


def test_contract_is_the_real_module_util(installed):
    # inference_image/contract.py links to it: the tarball holds the file itself, once.
    member = installed.members["plugins/module_utils/contract.py"]
    assert member.isfile()
    assert not [name for name in installed.members if name.endswith("contract.py")][1:]
    with tarfile.open(installed.tarball) as archive:
        shipped = archive.extractfile(member).read()
    assert shipped == (REPO / "plugins" / "module_utils" / "contract.py").read_bytes()


def test_license_is_apache_2(installed):
    assert installed.manifest["collection_info"]["license"] == ["Apache-2.0"]
    text = (installed.collection / "LICENSE").read_text()
    assert "Apache License" in text.splitlines()[1] and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("module", MODULES)
def test_module_doc(installed, module):
    result = checked(installed.run("ansible-doc", f"linkedge.edge.{module}"))
    assert f"MODULE linkedge.edge.{module} ({installed.collection}/plugins/modules/" in (
        result.stdout
    )


@pytest.mark.parametrize(("plugin_type", "name"), PLUGINS, ids=[f"{t}-{n}" for t, n in PLUGINS])
def test_plugin_doc(installed, plugin_type, name):
    result = checked(installed.run("ansible-doc", "-t", plugin_type, f"linkedge.edge.{name}"))
    assert f"linkedge.edge.{name} ({installed.collection}/plugins/{plugin_type}/" in result.stdout


def test_rollout_report_callback_is_among_the_plugins():
    assert ("callback", "rollout_report") in PLUGINS


@pytest.mark.parametrize(
    "playbook",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=SYNTAX_CHECK_XFAIL[name]))
        if name in SYNTAX_CHECK_XFAIL
        else name
        for name in PLAYBOOKS
    ],
)
def test_playbook_syntax(installed, playbook):
    result = installed.run(
        "ansible-playbook", "-i", "inventory.ini", "--syntax-check", f"linkedge.edge.{playbook}"
    )
    checked(result)
    assert f"playbook: {installed.collection}/playbooks/{playbook}.yml" in result.stdout


@pytest.fixture(scope="module")
def ansible_builder():
    if importlib.util.find_spec("ansible_builder") is None:
        pytest.skip("ansible-builder is not installed (pip install -e '.[dev]')")
    return Path(importlib.util.find_spec("ansible_builder").origin).parent


def test_execution_environment_is_accepted(installed, ansible_builder, tmp_path):
    checked(
        run(
            [
                sys.executable,
                "-m",
                "ansible_builder",
                "create",
                "-f",
                installed.collection / "meta" / "execution-environment.yml",
                "-c",
                tmp_path / "context",
            ]
        )
    )
    (containerfile,) = [
        path
        for path in (tmp_path / "context").iterdir()
        if path.name in ("Containerfile", "Dockerfile")
    ]
    assert "--user-pip=requirements.txt" in containerfile.read_text()
    pip = (tmp_path / "context" / "_build" / "requirements.txt").read_text()
    assert "docker" in pip and "cryptography" in pip
    galaxy = yaml.safe_load((tmp_path / "context" / "_build" / "requirements.yml").read_text())
    assert {entry["name"] for entry in galaxy["collections"]} == set(
        installed.manifest["collection_info"]["dependencies"]
    )


def test_other_execution_environments_can_install_it(installed, ansible_builder):
    # ansible-builder's introspection reads meta/execution-environment.yml of every collection
    # in an EE: `dependencies.python` must be a path from the collection root.
    result = checked(
        run(
            [
                sys.executable,
                ansible_builder / "_target_scripts" / "introspect.py",
                "introspect",
                installed.collections,
            ]
        )
    )
    python = yaml.safe_load(result.stdout)["python"]
    ours = [line.split("#")[0].strip() for line in python if "collection linkedge.edge" in line]
    assert any(line.startswith("docker") for line in ours), python
    assert any(line.startswith("cryptography") for line in ours), python

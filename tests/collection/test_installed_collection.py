"""linkedge.edge as a user gets it: the tarball, installed with its dependencies into an empty
collections path, used by an ansible-core-only environment from outside the checkout.

No Galaxy: the dependencies are built from the copies the `ansible` PyPI package ships. The
ansible-core-only virtual environment (ansible-core of this venv, plus meta/requirements.txt) is
cached in build/collection-venv/; creating it needs a package index, and the test skips when pip
cannot reach one. No Docker needed.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, checked, run

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

"""Fixtures for the simulated-truck tests (run by `molecule verify` through testinfra).

The truck is reached two ways: testinfra's `host` (docker exec through the Ansible inventory)
for state, and `docker exec -i <truck> python3 -` from this machine for HTTP calls made on the
truck itself (the API is published on the truck's 127.0.0.1 only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
from truck_api import Release  # shared with the other scenarios' tests
from truck_api import truck_http as shared_truck_http

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
RELEASES = PROJECT / "build" / "releases"
SERVICE = "linkedge-inference"
# The scenario's API token (molecule.yml; a test value, not a secret).
TOKEN = "molecule-api-token-3f9c2e7a"


@pytest.fixture(scope="session")
def releases() -> dict[str, Release]:
    return {name: Release(RELEASES / name) for name in ("v1", "v2")}


@pytest.fixture(scope="session")
def expected(releases) -> Release:
    """The release the last converge (converge.yml: v1, side_effect.yml: v2) shipped."""
    marker = EPHEMERAL / "expected_release"
    path = Path(marker.read_text().strip()) if marker.exists() else RELEASES / "v1"
    return releases[path.name]


@pytest.fixture(scope="session")
def previous(releases, expected) -> Release | None:
    return releases["v1"] if expected.name == "v2" else None


@pytest.fixture(scope="module")
def truck(host) -> str:
    return host.backend.host


def truck_http(
    truck: str,
    method: str,
    path: str,
    payload=None,
    timeout: float = 10.0,
    token: str | None = TOKEN,
):
    """HTTP from inside the truck to its API (with the scenario's bearer token unless
    `token` is None); returns (status, body)."""
    return shared_truck_http(truck, method, path, payload, timeout, token)


def wait_ready(truck: str, timeout: float = 120.0) -> float:
    """Seconds until the truck's API answered ready (after a boot)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            status, _ = truck_http(truck, "GET", "/v2/health/ready", timeout=2)
            if status == 200:
                return time.monotonic() - started
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError):
            pass
        time.sleep(1)
    raise AssertionError(f"{truck}: the API was not ready {timeout:.0f} s after boot")


def inspect(host, name: str) -> dict:
    """`docker inspect` of a container or image on the truck."""
    return json.loads(host.check_output(f"docker inspect {name}"))[0]

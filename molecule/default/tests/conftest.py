"""Fixtures for the simulated-truck tests (run by `molecule verify` through testinfra).

The truck is reached two ways: testinfra's `host` (docker exec through the Ansible inventory)
for state, and `docker exec -i <truck> python3 -` from this machine for HTTP calls made on the
truck itself (the API is published on the truck's 127.0.0.1 only).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
RELEASES = PROJECT / "build" / "releases"
SERVICE = "linkedge-inference"
# The scenario's API token (molecule.yml; a test value, not a secret).
TOKEN = "molecule-api-token-3f9c2e7a"

# Runs on the truck (stdlib only): POST/GET JSON to the served API, print {"status", "body"}.
HTTP_CLIENT = r"""
import json, sys, urllib.error, urllib.request
method, url = sys.argv[1], sys.argv[2]
data = sys.stdin.buffer.read() if method == "POST" else None
req = urllib.request.Request(url, data=data, method=method)
if data is not None:
    req.add_header("Content-Type", "application/json")
if len(sys.argv) > 4:
    req.add_header("Authorization", "Bearer " + sys.argv[4])
try:
    with urllib.request.urlopen(req, timeout=float(sys.argv[3])) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
except OSError as e:
    status, body = 0, json.dumps(str(e)).encode()
try:
    decoded = json.loads(body or b"null")
except ValueError:  # /metrics is Prometheus text
    decoded = body.decode("utf-8", "replace")
print(json.dumps({"status": status, "body": decoded}))
"""


class Release:
    """A release directory written by scripts/molecule-releases.sh."""

    def __init__(self, path: Path):
        self.path = path
        self.name = path.name
        self.image = json.loads((path / "image.json").read_text())
        self.model_version = self.image["model_version"]
        self.image_id = self.image["image_id"]
        self.smoke_vectors = json.loads((path / "bundle" / "smoke_vectors.json").read_text())
        self.features = json.loads((path / "bundle" / "schema.json").read_text())["features"]


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
    result = subprocess.run(
        [
            "docker",
            "exec",
            "-i",
            truck,
            "python3",
            "-c",
            HTTP_CLIENT,
            method,
            f"http://127.0.0.1:8080{path}",
            str(timeout),
            *([token] if token else []),
        ],
        input=json.dumps(payload).encode() if payload is not None else b"",
        capture_output=True,
        check=True,
        timeout=timeout + 30,
    )
    answer = json.loads(result.stdout)
    return answer["status"], answer["body"]


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

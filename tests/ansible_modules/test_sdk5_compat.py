"""The modules on the Docker SDK trucks have: python3-docker 5.0.3 (Debian 12, Ubuntu 22.04).

Runs a release end to end with a target Python whose docker package is 5.x:
LINKEDGE_TEST_SDK5_PYTHON, else /usr/bin/python3 (on Debian 12, `apt-get install python3-docker`
gives exactly that). Skipped when there is none.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

import pytest

from .run_module import free_port, run_module

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def sdk5_python() -> str:
    python = os.environ.get("LINKEDGE_TEST_SDK5_PYTHON", "/usr/bin/python3")
    try:
        version = subprocess.run(
            [python, "-c", "import docker; print(docker.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"{python} has no Docker SDK (apt-get install python3-docker)")
    if not version.startswith("5."):
        pytest.skip(f"{python} has Docker SDK {version}, not 5.x")
    return python


def test_release_with_docker_sdk_5(docker_client, images, exported, service, sdk5_python):
    import docker.errors

    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(exported.image_id, force=True)
    load_args = {
        "archive": str(exported.archive),
        "sha256": exported.sha256,
        "image_id": exported.image_id,
    }
    checked = run_module("image_load", load_args, check=True, python=sdk5_python)
    assert not checked.failed and checked["changed"], checked.result
    loaded = run_module("image_load", load_args, python=sdk5_python)
    assert not loaded.failed and loaded["loaded"], loaded.result
    assert docker_client.images.get(exported.image_id).id == exported.image_id

    port = free_port()

    def deploy(image, **options):
        args = {"name": service, "image": image.tag, "published_port": port, **options}
        return run_module("inference_container", args, python=sdk5_python)

    assert deploy(images.v1)["outcome"] == "updated"
    assert deploy(images.v1)["outcome"] == "unchanged"
    switch = deploy(images.v2)
    assert switch["outcome"] == "updated" and switch["serving_gap_seconds"] == 0.0, switch.result
    assert switch["handover_seconds"] > 0, switch.result
    rollback = deploy(images.bad, fail_on_rollback=False)
    assert rollback["outcome"] == "rolled_back", rollback.result
    assert docker_client.containers.get(service).attrs["Image"] == images.v2.id

    probe = run_module(
        "inference_probe",
        {"url": f"http://127.0.0.1:{port}", "smoke_vectors_from": service},
        python=sdk5_python,
    )
    assert not probe.failed and probe["model_version"] == images.v2.version, probe.result
    facts = run_module("edge_facts", {"name": service}, python=sdk5_python)
    linkedge = facts["ansible_facts"]["linkedge"]
    assert linkedge["docker_sdk_version"].startswith("5.")
    assert linkedge["serving"]["model_version"] == images.v2.version
    assert linkedge["previous"]["model_version"] == images.v1.version

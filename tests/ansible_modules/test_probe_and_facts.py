"""linkedge.edge.inference_probe and linkedge.edge.edge_facts return what the host really has."""

from __future__ import annotations

import pytest

from .run_module import free_port, run_module

pytestmark = pytest.mark.docker


@pytest.fixture
def switched(docker_client, images, service):
    """v1 then v2 deployed as `service`: v2 serves, v1 is the previous container."""
    port = free_port()
    for image in (images.v1, images.v2):
        run = run_module(
            "inference_container", {"name": service, "image": image.tag, "published_port": port}
        )
        assert run["outcome"] == "updated", run.result
    return service, port


def test_probe_checks_health_version_and_smoke_vectors(images, switched):
    service, port = switched
    url = f"http://127.0.0.1:{port}"
    for source in (service, images.v2.tag):  # from the container, then from the image
        run = run_module("inference_probe", {"url": url, "smoke_vectors_from": source})
        assert not run.failed, run.result
        assert run["live"] and run["ready"] and run["not_ready_reason"] is None
        assert run["model_version"] == run["expected_model_version"] == images.v2.version
        assert run["smoke_vectors_checked"] >= 30 and run["mismatches"] == []
        assert 0 < run["latency_ms"] < 2000
        assert not run["changed"]


def test_probe_reports_a_version_that_answers_differently(images, switched):
    _, port = switched
    args = {"url": f"http://127.0.0.1:{port}", "smoke_vectors_from": images.v1.tag}
    run = run_module("inference_probe", args)
    assert run.failed and run["mismatches"], run.result
    assert f"serves model {images.v2.version}, expected {images.v1.version}" in run["msg"]
    assert any("/predict vector" in m for m in run["mismatches"])
    assert any("/infer vector" in m for m in run["mismatches"])

    quiet = run_module("inference_probe", dict(args, fail_on_mismatch=False))
    assert not quiet.failed and quiet["mismatches"] == run["mismatches"]


def test_probe_of_nothing(docker_client):
    url = f"http://127.0.0.1:{free_port()}"
    look = run_module("inference_probe", {"url": url})
    assert not look.failed, look.result  # only looking: no expectation, no failure
    assert not look["live"] and not look["ready"] and look["model_version"] is None
    assert look["latency_ms"] is None and "Connection refused" in look["not_ready_reason"]

    wait = run_module("inference_probe", {"url": url, "wait_ready": 2})
    assert wait.failed and "not ready within 2 s" in wait["msg"], wait.result


def test_edge_facts(docker_client, images, switched):
    service, _ = switched
    run = run_module("edge_facts", {"name": service})
    assert not run.failed and not run["changed"], run.result
    facts = run["ansible_facts"]["linkedge"]
    assert facts["docker_version"] == docker_client.version()["Version"]
    assert facts["docker_sdk_version"]
    serving = facts["serving"]
    container = docker_client.containers.get(service)
    assert serving["container"] == service and serving["container_id"] == container.id
    assert serving["image"] == images.v2.tag and serving["image_id"] == images.v2.id
    assert serving["model_version"] == images.v2.version
    assert serving["bundle_sha256"] == container.labels["io.linkedge.bundle.sha256"]
    assert serving["status"] == "running" and serving["health"] in ("starting", "healthy")
    assert serving["started_at"] == container.attrs["State"]["StartedAt"]
    assert facts["previous"] == {
        "container": f"{service}-previous",
        "image_id": images.v1.id,
        "model_version": images.v1.version,
        "status": "exited",
        "available": True,
    }
    by_id = {image["id"]: image for image in facts["images"]}
    for image in (images.v1, images.v2):
        assert by_id[image.id]["model_version"] == image.version
        assert image.tag in by_id[image.id]["tags"] and by_id[image.id]["size"] > 0
    assert facts["docker_root_free_bytes"] > 0

    nothing = run_module("edge_facts", {"name": f"{service}-nothing"})
    assert nothing["ansible_facts"]["linkedge"]["serving"] is None
    assert nothing["ansible_facts"]["linkedge"]["previous"] is None

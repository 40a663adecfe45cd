"""linkedge.edge.image_prune against the real engine: unused release images go, the images of the
serving container, of <name>-previous, of any other container and of `keep` stay.

The images are tiny (FROM scratch, one 1 MiB random layer each) but carry the builder's label
io.linkedge.model.version, plus a session label the module's `labels` option is scoped to, so
the test never touches the release images of anything else on this engine.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest

from .conftest import SESSION
from .run_module import run_module

pytestmark = pytest.mark.docker

MIB = 1 << 20
SCOPE = {"io.linkedge.test.prune": SESSION}


@pytest.fixture
def fleet_images(docker_client):
    """Five labelled release images p1..p5; removed (with their containers) after the test."""
    import docker.errors

    built = {}
    with tempfile.TemporaryDirectory(prefix="linkedge-prune-") as tmp:
        context = Path(tmp)
        for name in ("p1", "p2", "p3", "p4", "p5"):
            (context / "blob").write_bytes(os.urandom(MIB))
            (context / "Dockerfile").write_text(
                "FROM scratch\nCOPY blob /blob\n"
                f"LABEL io.linkedge.model.version={name} io.linkedge.test.prune={SESSION}\n"
            )
            tag = f"linkedge-test/prune:{SESSION}-{name}"
            image, _ = docker_client.images.build(path=str(context), tag=tag, rm=True, pull=False)
            built[name] = image
    yield built
    for container in docker_client.containers.list(all=True, filters={"name": SESSION}):
        container.remove(force=True)
    for image in built.values():
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            docker_client.images.remove(image.id, force=True)


def _present(client, image_id: str) -> bool:
    import docker.errors

    try:
        client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


def test_prunes_only_what_no_container_uses(docker_client, fleet_images, service, tmp_path):
    images = fleet_images
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "interrupted-v2.tar").write_bytes(b"x" * 4096)  # left by a power cut
    (staging / "notes.txt").write_text("not an archive: kept")
    # Containers only need to exist (any state) to protect their image: created, never started.
    docker_client.containers.create(images["p3"].id, command=["/blob"], name=service)
    docker_client.containers.create(images["p2"].id, command=["/blob"], name=f"{service}-previous")
    docker_client.containers.create(images["p4"].id, command=["/blob"], name=f"{SESSION}-other")
    args = {
        "name": service,
        "labels": SCOPE,
        "keep": [images["p5"].tags[0]],
        "staging_dirs": [str(staging), str(tmp_path / "absent"), str(staging)],
    }

    planned = run_module("image_prune", args, check=True)
    assert not planned.failed, planned.result
    assert planned.result["changed"]
    assert [r["model_version"] for r in planned["removed"]] == ["p1"]
    assert planned["bytes_freed"] >= MIB
    assert all(_present(docker_client, i.id) for i in images.values())  # check mode: untouched
    assert planned["staging_removed"] == [
        {"path": str(staging / "interrupted-v2.tar"), "size": 4096}
    ]
    assert (staging / "interrupted-v2.tar").exists()

    run = run_module("image_prune", args)
    assert not run.failed, run.result
    assert run.result["changed"] and not run["refused"]
    assert [r["id"] for r in run["removed"]] == [images["p1"].id]
    assert run["removed"][0]["tags"] == [f"linkedge-test/prune:{SESSION}-p1"]
    assert run["bytes_freed"] >= MIB
    assert run["docker_root_free_bytes"] is not None
    kept = {k["model_version"]: k["used_by"] for k in run["kept"]}
    assert kept == {
        "p2": [f"{service}-previous"],
        "p3": [service],
        "p4": [f"{SESSION}-other"],
        "p5": ["keep"],
    }
    assert not _present(docker_client, images["p1"].id)
    assert [r["path"] for r in run["staging_removed"]] == [str(staging / "interrupted-v2.tar")]
    assert sorted(f.name for f in staging.iterdir()) == ["notes.txt"]
    assert all(_present(docker_client, images[n].id) for n in ("p2", "p3", "p4", "p5"))

    again = run_module("image_prune", args)
    assert not again.failed, again.result
    assert not again.result["changed"] and again["removed"] == [] and again["bytes_freed"] == 0

    # Once the other container is gone its image is no longer protected; the previous one is.
    docker_client.containers.get(f"{SESSION}-other").remove()
    later = run_module("image_prune", dict(args, keep=[]))
    assert {r["model_version"] for r in later["removed"]} == {"p4", "p5"}
    assert _present(docker_client, images["p2"].id) and _present(docker_client, images["p3"].id)


def test_nothing_is_pruned_without_a_serving_container(docker_client, fleet_images, service):
    run = run_module("image_prune", {"name": service, "labels": SCOPE})
    assert not run.failed, run.result
    assert not run.result["changed"] and run["removed"] == []
    assert any(f"no container {service}" in w for w in run.get("warnings", []))
    assert all(_present(docker_client, i.id) for i in fleet_images.values())

"""linkedge.edge.image_pull against the real engine and a real registry (Debian's
docker-registry): only the layers the engine lacks come, the signed image ID is enforced, a
registry without the image or without an answer fails clearly and changes nothing."""

from __future__ import annotations

import contextlib

import pytest

from .conftest import _derive
from .run_module import free_port, run_module

pytestmark = pytest.mark.docker

ABSENT_ID = "sha256:" + "ab" * 32


def pushed(client, base, registry: str, name: str, tmp_path) -> tuple[str, str]:
    """An image FROM `base` with one small layer of its own (a file: the serving image has no
    shell to RUN), pushed to the registry and then removed from the engine (so only the registry
    has it); (reference, image ID)."""
    reference = f"{registry}/linkedge-test/pull:{name}"
    marker = tmp_path / f"marker-{name}"
    marker.mkdir()
    (marker / "name").write_text(name + "\n")
    image = _derive(
        client, base, reference, "COPY marker /etc/linkedge-pull-test/\n", {"marker": marker}
    )
    for line in client.api.push(reference, stream=True, decode=True):
        assert "error" not in line, line
    client.images.remove(reference)
    return reference, image.id


def test_pulls_only_the_missing_layer_then_is_unchanged(docker_client, images, registry, tmp_path):
    reference, image_id = pushed(docker_client, images.v2, registry, "one", tmp_path)
    try:
        check = run_module("image_pull", {"reference": reference, "image_id": image_id}, check=True)
        assert not check.failed and check["changed"] and not check["pulled"], check.result
        with pytest.raises(Exception):  # noqa: B017 - check mode pulled nothing
            docker_client.images.get(image_id)

        first = run_module("image_pull", {"reference": reference, "image_id": image_id})
        assert not first.failed, first.result
        assert first["changed"] and first["pulled"] and first["image_id"] == image_id
        # The engine held every layer of v2: only the one layer of this image came.
        assert first["layers_pulled"] == 1 and first["layers_present"] >= 1, first.result
        # (a layer this small may arrive before the engine reports any progress: 0 then)
        assert 0 <= first["size_bytes"] < 1_000_000 and not first["full"], first.result
        assert docker_client.images.get(reference).id == image_id

        again = run_module("image_pull", {"reference": reference, "image_id": image_id})
        assert not again.failed and not again["changed"] and not again["pulled"], again.result
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(reference, force=True)


def test_another_image_under_the_name_is_refused_and_removed(
    docker_client, images, registry, tmp_path
):
    reference, image_id = pushed(docker_client, images.v2, registry, "swapped", tmp_path)
    run = run_module("image_pull", {"reference": reference, "image_id": ABSENT_ID})
    assert run.failed and run["reason"] == "image_mismatch", run.result
    assert image_id in run.result["msg"] and ABSENT_ID in run.result["msg"]
    with pytest.raises(Exception):  # noqa: B017 - untagged again: nothing left to use
        docker_client.images.get(reference)


def test_a_registry_without_the_image_or_without_an_answer_fails_clearly(registry):
    unknown = run_module(
        "image_pull", {"reference": f"{registry}/linkedge-test/pull:none", "image_id": ABSENT_ID}
    )
    assert unknown.failed and unknown["reason"] == "not_in_registry", unknown.result
    assert unknown["attempts"] == 1  # no use asking again

    down = f"127.0.0.1:{free_port()}/linkedge-test/pull:any"
    run = run_module(
        "image_pull", {"reference": down, "image_id": ABSENT_ID, "retries": 2, "delay": 0.2}
    )
    assert run.failed and run["reason"] == "registry_unavailable", run.result
    assert run["attempts"] == 3 and "3 attempts" in run.result["msg"]
    assert "untouched" in run.result["msg"]

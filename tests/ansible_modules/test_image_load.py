"""linkedge.edge.image_load against the engine: verified, loaded once, nothing on a mismatch."""

from __future__ import annotations

import contextlib
import os

import pytest

from .run_module import run_module

pytestmark = pytest.mark.docker


@pytest.fixture
def absent(docker_client, exported):
    """The exported image is not in the engine when the test starts."""
    import docker.errors

    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(exported.image_id, force=True)
    return exported


def _present(client, image_id: str) -> bool:
    import docker.errors

    try:
        client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


def test_loads_once_then_is_unchanged(docker_client, absent, tmp_path):
    link = tmp_path / absent.archive.name
    os.link(absent.archive, link)  # a second name for the archive, deleted by remove_archive
    args = {
        "archive": str(link),
        "sha256": f"{absent.sha256}  {absent.archive.name}",  # the .sha256 file's content
        "image_id": absent.image_id,
        "image": f"{absent.tag}-retagged",
        "remove_archive": True,
    }
    first = run_module("image_load", args)
    assert not first.failed, first.result
    assert first["changed"] and first["loaded"] and first["archive_removed"]
    assert first["image_id"] == absent.image_id
    assert first["archive_sha256"] == absent.sha256
    assert {absent.tag, f"{absent.tag}-retagged"} <= set(first["tags"])
    assert not link.exists() and absent.archive.exists()
    image = docker_client.images.get(absent.image_id)
    assert image.labels["io.linkedge.model.version"]

    again = run_module("image_load", dict(args, archive=str(absent.archive), remove_archive=False))
    assert not again.failed, again.result
    assert not again["changed"] and not again["loaded"]
    assert "archive_sha256" not in again.result  # present: the archive is not even read
    assert again["image_id"] == absent.image_id

    # Without image_id or image, presence comes from the archive's manifest.
    bare = run_module("image_load", {"archive": str(absent.archive), "sha256": absent.sha256})
    assert not bare.failed and not bare["changed"], bare.result
    assert bare["image_id"] == absent.image_id


def test_sha256_mismatch_fails_and_loads_nothing(docker_client, absent):
    wrong = "0" * 64
    run = run_module("image_load", {"archive": str(absent.archive), "sha256": wrong})
    assert run.failed
    assert f"has sha256 {absent.sha256}, the release says {wrong}" in run["msg"]
    assert "nothing was loaded" in run["msg"]
    assert not _present(docker_client, absent.image_id)


def test_other_image_id_fails_before_loading(docker_client, absent):
    other = "sha256:" + "1" * 64
    run = run_module(
        "image_load", {"archive": str(absent.archive), "sha256": absent.sha256, "image_id": other}
    )
    assert run.failed
    assert f"holds image {absent.image_id}, the release says {other}" in run["msg"]
    assert not _present(docker_client, absent.image_id)


def test_check_mode_changes_nothing(docker_client, absent, tmp_path):
    args = {"archive": str(absent.archive), "sha256": absent.sha256, "image_id": absent.image_id}
    run = run_module("image_load", args, check=True)
    assert not run.failed, run.result
    assert run["changed"] and not run["loaded"]
    assert run["archive_sha256"] == absent.sha256
    assert not _present(docker_client, absent.image_id)

    # The archive may not have been copied in check mode: a warning, not a failure.
    missing = run_module("image_load", dict(args, archive=str(tmp_path / "nope.tar")), check=True)
    assert not missing.failed and missing["changed"], missing.result
    assert any("not on the target yet" in warning for warning in missing.get("warnings", []))

    # A wrong digest is still an error in check mode: the real run would fail.
    wrong = run_module("image_load", dict(args, sha256="f" * 64), check=True)
    assert wrong.failed and "nothing was loaded" in wrong["msg"]


def test_missing_archive_says_what_to_do(absent, tmp_path):
    run = run_module(
        "image_load",
        {
            "archive": str(tmp_path / "nope.tar"),
            "sha256": absent.sha256,
            "image_id": absent.image_id,
        },
    )
    assert run.failed and "copy it there first" in run["msg"]


def test_malformed_digest_is_refused(absent):
    run = run_module("image_load", {"archive": str(absent.archive), "sha256": "abc"})
    assert run.failed and "is not a sha256 digest" in run["msg"]

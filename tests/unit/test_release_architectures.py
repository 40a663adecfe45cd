"""One release, an image per architecture: the contract's choice of a truck's image (the
filter release_for and release_verify use it), the registry tag per architecture, and the
release checks covering every architecture's archive."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from inference_image.contract import (
    architecture_named,
    manifest_for_architecture,
    registry_reference,
    release_images,
)
from inference_image.release import (
    ReleaseError,
    archives,
    check_release_files,
    release_files,
    release_present,
)

from . import fakes_docker  # noqa: F401  (puts the collection on sys.path)


def release_for(release: dict, architecture: str) -> dict:
    from ansible_collections.linkedge.edge.plugins.filter.release import release_for

    return release_for(release, architecture)


def image_fields(tag: str, fill: str, size: int) -> dict:
    """One architecture's image entry in a release manifest."""
    return {
        "image": f"linkedge/aps-classifier:{tag}",
        "image_id": "sha256:" + fill * 64,
        "archive": f"{tag}.tar",
        "archive_sha256": fill * 64,
        "archive_bytes": size,
    }


AMD64 = image_fields("v1", "1", 3)
ARM64 = image_fields("v1-arm64", "2", 4)
BOTH = {
    "version": "v1",
    "bundle_sha256": "c" * 64,
    **AMD64,
    "architectures": {"amd64": AMD64, "arm64": ARM64},
}
BEFORE_ARM64 = {"version": "v0", "bundle_sha256": "c" * 64, **AMD64}


@pytest.mark.parametrize(
    ("name", "expected"),
    [("aarch64", "arm64"), ("ARM64", "arm64"), ("linux/arm64", "arm64"), ("x86_64", "amd64"),
     ("amd64", "amd64"), (" linux/amd64 ", "amd64")],
)  # fmt: skip
def test_every_name_of_an_architecture_is_understood(name, expected):
    assert architecture_named(name) == expected


def test_an_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError, match=r"amd64 \(x86_64\), arm64 \(aarch64\)"):
        architecture_named("riscv64")


def test_an_arm64_truck_reads_the_arm64_image_and_nothing_else_changes():
    chosen = manifest_for_architecture(BOTH, "aarch64")
    assert chosen == {**BOTH, **ARM64, "architecture": "arm64"}
    assert manifest_for_architecture(BOTH, "x86_64") == {**BOTH, "architecture": "amd64"}


def test_a_release_made_before_arm64_has_only_its_amd64_image():
    assert release_images(BEFORE_ARM64) == {"amd64": AMD64}
    assert manifest_for_architecture(BEFORE_ARM64, "amd64")["image_id"] == AMD64["image_id"]
    assert manifest_for_architecture(BEFORE_ARM64, "arm64") is None


def test_the_filter_fails_saying_what_the_release_has_and_what_to_do():
    assert release_for(BOTH, "aarch64")["archive"] == "v1-arm64.tar"
    with pytest.raises(AnsibleFilterError) as refused:
        release_for(BEFORE_ARM64, "aarch64")
    message = str(refused.value)
    assert "release v0 has no image for arm64 (it has amd64)" in message
    assert "build --platform linux/arm64" in message and "Nothing was sent" in message
    with pytest.raises(AnsibleFilterError, match="unknown architecture"):
        release_for(BOTH, "mips")


def test_the_registry_tag_carries_the_architecture_except_amd64s():
    assert registry_reference("depot:5000", "linkedge/aps-classifier:v1", "v1") == (
        "depot:5000/linkedge/aps-classifier:v1"
    )
    assert registry_reference("depot:5000/", "linkedge/aps-classifier:v1", "v1", "aarch64") == (
        "depot:5000/linkedge/aps-classifier:v1-arm64"
    )


def _release_dir(tmp_path: Path) -> tuple[Path, dict]:
    manifest = json.loads(json.dumps(BOTH))
    for image in (manifest, *manifest["architectures"].values()):
        data = image["archive"].encode()
        (tmp_path / image["archive"]).write_bytes(data)
        image["archive_sha256"] = hashlib.sha256(data).hexdigest()
        image["archive_bytes"] = len(data)
    (tmp_path / "model_card.json").write_text("{}")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "manifest.json.sig").write_text("-")
    return tmp_path, manifest


def test_every_architectures_archive_is_checked_and_none_is_listed_as_a_file(tmp_path):
    release, manifest = _release_dir(tmp_path)
    assert archives(manifest) == ["v1.tar", "v1-arm64.tar"]
    assert sorted(release_files(release, manifest)) == ["model_card.json"]
    check_release_files(release, manifest)
    assert release_present(release)
    (release / "v1-arm64.tar").write_bytes(b"v1-arm64.taX")  # same size, other bytes
    with pytest.raises(ReleaseError, match=r"v1-arm64\.tar does not match"):
        check_release_files(release, manifest)
    (release / "v1-arm64.tar").write_bytes(b"v1")  # truncated
    assert not release_present(release)

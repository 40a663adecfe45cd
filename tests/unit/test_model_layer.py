"""The model layer is a function of the bundle's bytes alone: the same tar for two copies of a
bundle made at different times (so the amd64 and arm64 images share it), a different one when
a byte of the model changes."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from inference_image.image.model_layer import FIXED_MTIME, model_layer


def write_bundle(directory: Path, model: bytes = b"{}", mtime: int = 1_700_000_000) -> Path:
    directory.mkdir()
    for name, data in (("model.json", model), ("manifest.json", b'{"v": 1}'), ("a.txt", b"a")):
        (directory / name).write_bytes(data)
        os.utime(directory / name, (mtime, mtime))
    os.chmod(directory, 0o700)
    return directory


def members(layer: bytes) -> list[tuple[str, int, int, int, int, str]]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as archive:
        return [(m.name, m.type[0], m.mode, m.uid, m.mtime, m.uname) for m in archive.getmembers()]


def test_two_copies_made_at_different_times_give_the_same_bytes(tmp_path: Path) -> None:
    first = model_layer(write_bundle(tmp_path / "one", mtime=1_600_000_000))
    second = model_layer(write_bundle(tmp_path / "two", mtime=1_750_000_000))
    assert first == second
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_a_changed_model_gives_another_layer(tmp_path: Path) -> None:
    first = model_layer(write_bundle(tmp_path / "one", model=b"{}"))
    assert model_layer(write_bundle(tmp_path / "two", model=b"{ }")) != first


def test_the_files_are_read_only_root_owned_in_name_order_at_the_fixed_time(
    tmp_path: Path,
) -> None:
    layer = model_layer(write_bundle(tmp_path / "bundle"))
    assert members(layer) == [
        ("opt/linkedge/model", 53, 0o555, 0, FIXED_MTIME, "root"),  # "5": a directory
        ("opt/linkedge/model/a.txt", 48, 0o444, 0, FIXED_MTIME, "root"),  # "0": a file
        ("opt/linkedge/model/manifest.json", 48, 0o444, 0, FIXED_MTIME, "root"),
        ("opt/linkedge/model/model.json", 48, 0o444, 0, FIXED_MTIME, "root"),
    ]
    with tarfile.open(fileobj=io.BytesIO(layer)) as archive:
        assert archive.extractfile("opt/linkedge/model/model.json").read() == b"{}"


def test_a_bundle_with_a_directory_is_refused(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    (bundle / "nested").mkdir()
    with pytest.raises(ValueError, match="holds only files"):
        model_layer(bundle)

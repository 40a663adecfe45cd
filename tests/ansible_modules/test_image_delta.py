"""linkedge.edge.image_delta on synthetic `docker save` archives (no Docker engine needed)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from .run_module import run_module

LAYERS = {"base": b"B" * 4096, "deps": b"D" * 2048, "model": b"M" * 512}


def _diff_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def archive(tmp_path) -> tuple[Path, str]:
    """A docker-save-shaped archive of three layers; returns (path, sha256)."""
    config = {"rootfs": {"type": "layers", "diff_ids": [_diff_id(d) for d in LAYERS.values()]}}
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_names = [f"{name}/layer.tar" for name in LAYERS]
    manifest = [{"Config": config_name, "RepoTags": ["x/y:1"], "Layers": layer_names}]
    path = tmp_path / "release.tar"
    with tarfile.open(path, "w:") as tar:
        for name, data in zip(layer_names, LAYERS.values(), strict=True):
            _add(tar, name, data)
        _add(tar, config_name, config_bytes)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
        _add(tar, "repositories", b'{"x/y": {"1": "abc"}}')
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _members(path: str) -> set[str]:
    with tarfile.open(path) as tar:
        return set(tar.getnames())


def test_nothing_in_common_sends_the_full_archive(archive, tmp_path):
    path, digest = archive
    run = run_module(
        "image_delta",
        {"archive": str(path), "archive_sha256": digest, "cache_dir": str(tmp_path / "cache")},
    )
    assert not run.failed, run.result
    assert run["full"] is True and run["path"] == str(path) and run["sha256"] == digest
    assert run["layers_sent"] == 3 and not run.result["changed"]


def test_delta_keeps_only_the_missing_layers_and_is_cached(archive, tmp_path):
    path, digest = archive
    args = {
        "archive": str(path),
        "archive_sha256": digest,
        "have_layers": [_diff_id(LAYERS["base"]), _diff_id(LAYERS["deps"]), "sha256:" + "0" * 64],
        "cache_dir": str(tmp_path / "cache"),
    }
    planned = run_module("image_delta", args, check=True)
    assert not planned.failed, planned.result
    assert planned["sha256"] is None and not Path(planned["path"]).exists()

    first = run_module("image_delta", args)
    assert not first.failed, first.result
    assert first.result["changed"] and first["full"] is False
    assert first["layers_total"] == 3 and first["layers_sent"] == 1
    names = _members(first["path"])
    assert "model/layer.tar" in names and "manifest.json" in names and "repositories" in names
    assert "base/layer.tar" not in names and "deps/layer.tar" not in names
    data = Path(first["path"]).read_bytes()
    assert first["sha256"] == hashlib.sha256(data).hexdigest()
    assert first["size_bytes"] == len(data) < path.stat().st_size

    again = run_module("image_delta", args)
    assert not again.result["changed"] and again["path"] == first["path"]
    assert again["sha256"] == first["sha256"]


def test_not_an_image_archive_fails_with_advice(tmp_path):
    bogus = tmp_path / "bogus.tar"
    with tarfile.open(bogus, "w:") as tar:
        _add(tar, "hello", b"x")
    run = run_module(
        "image_delta",
        {"archive": str(bogus), "archive_sha256": "0" * 64, "cache_dir": str(tmp_path)},
    )
    assert run.failed and "docker save archive" in run["msg"]


def _chains(*layers: bytes) -> list[str]:
    """Docker's chain IDs, computed here independently of the module."""
    chains = [_diff_id(layers[0])]
    for data in layers[1:]:
        below = chains[-1]
        chains.append("sha256:" + hashlib.sha256(f"{below} {_diff_id(data)}".encode()).hexdigest())
    return chains


def _run(archive, tmp_path, **have):
    path, digest = archive
    args = {"archive": str(path), "archive_sha256": digest, "cache_dir": str(tmp_path / "c")}
    run = run_module("image_delta", {**args, **have})
    assert not run.failed, run.result
    return run, _members(run["path"])


def test_with_chains_a_layer_is_dropped_only_on_the_same_layers_below(archive, tmp_path):
    """The same model bytes on another image's layers (an arm64 image of the same bundle) is
    not a layer docker load can reuse: it is sent."""
    other_arch = _chains(b"b" * 4096, b"d" * 2048, LAYERS["model"])  # same model, other below
    run, names = _run(archive, tmp_path, have_chains=other_arch)
    assert run["full"] is True and run["layers_sent"] == 3, run.result
    same_below = _chains(LAYERS["base"], LAYERS["deps"])  # an older model on the same layers
    run, names = _run(archive, tmp_path, have_chains=same_below)
    assert run["layers_sent"] == 1 and names >= {"model/layer.tar"}
    assert not names & {"base/layer.tar", "deps/layer.tar"}


def test_with_diff_ids_only_the_lowest_layers_held_in_a_row_are_dropped(archive, tmp_path):
    """Held diff IDs that do not start at the image's lowest layer say nothing of what lies
    below them: base missing, so deps and model are sent although their diff IDs are held."""
    run, _ = _run(
        archive, tmp_path, have_layers=[_diff_id(LAYERS["deps"]), _diff_id(LAYERS["model"])]
    )
    assert run["full"] is True and run["layers_sent"] == 3, run.result

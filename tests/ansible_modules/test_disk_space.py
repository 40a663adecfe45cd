"""Room for a load: image_load (on the engine's host) and image_delta (on the controller, with the
truck's measured free space) refuse a load that does not fit, before anything is loaded or
written, with the needed and free space in the message; check mode reports would_fail.

image_load runs against the real engine with a tiny real image (FROM scratch, one 1 MiB layer)
saved by that engine: the engine's Docker root is the host's, so the refusal is obtained by
asking for more headroom (min_free) than the filesystem has free.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

import pytest

from .conftest import SESSION
from .run_module import run_module

MIB = 1 << 20


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _archive_sizes(path: Path) -> tuple[int, int]:
    """(unpacked size of the archive's files, size of its layer tarballs)."""
    with tarfile.open(path) as tar:
        sizes = {m.name: m.size for m in tar.getmembers() if m.isfile()}
        manifest = json.loads(tar.extractfile("manifest.json").read())
    return sum(sizes.values()), sum(sizes.get(layer, 0) for layer in manifest[0]["Layers"])


@pytest.fixture(scope="module")
def tiny_archive(docker_client, tmp_path_factory):
    """A `docker save` archive of a tiny labelled image that is no longer in the engine."""
    import docker.errors

    tag = f"linkedge-test/disk-space:{SESSION}"
    with tempfile.TemporaryDirectory(prefix="linkedge-disk-space-") as tmp:
        context = Path(tmp)
        (context / "blob").write_bytes(os.urandom(MIB))
        (context / "Dockerfile").write_text(
            f"FROM scratch\nCOPY blob /blob\nLABEL io.linkedge.test.session={SESSION}\n"
        )
        image, _ = docker_client.images.build(path=str(context), tag=tag, rm=True, pull=False)
    out = tmp_path_factory.mktemp("disk-space") / "tiny.tar"
    with out.open("wb") as handle:
        for chunk in image.save(named=True):
            handle.write(chunk)
    image_id = image.id
    docker_client.images.remove(image_id, force=True)
    yield out, _sha256(out), image_id
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(image_id, force=True)


def _present(client, image_id: str) -> bool:
    import docker.errors

    try:
        client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


@pytest.mark.docker
def test_image_load_refuses_a_load_that_does_not_fit(docker_client, tiny_archive):
    path, digest, image_id = tiny_archive
    root = docker_client.info()["DockerRootDir"]
    args = {"archive": str(path), "sha256": digest, "image_id": image_id, "min_free": "1P"}

    run = run_module("image_load", args)
    assert run.failed, run.result
    space = run["disk_space"]
    unpacked, layers = _archive_sizes(path)
    # docker load unpacks the whole archive under the root, then stores the missing layer.
    assert space["layer_bytes"] == unpacked + layers
    assert space["min_free_bytes"] == 1 << 50
    assert space["needed_bytes"] == space["layer_bytes"] + space["min_free_bytes"]
    assert space["docker_root"] == root and not space["enough"]
    assert 0 < space["free_bytes"] < space["needed_bytes"]
    msg = run["msg"]
    assert msg.startswith(f"needs 1048576.0 GiB free under {root} (")
    assert f"{space['layer_bytes'] / MIB:.1f} MiB for the layers + 1048576.0 GiB headroom)" in msg
    assert ", only " in msg and " free: free space on the truck" in msg
    assert "image_prune" in msg and "nothing was loaded" in msg
    assert "archive_sha256" not in run.result  # refused before even reading the whole archive
    assert not _present(docker_client, image_id) and path.exists()

    planned = run_module("image_load", args, check=True)
    assert not planned.failed, planned.result
    assert planned["would_fail"] is True and planned.result["changed"]
    assert planned["disk_space"]["needed_bytes"] == space["needed_bytes"]
    assert any("needs " in w for w in planned.get("warnings", []))
    assert not _present(docker_client, image_id)

    # With the default headroom the same archive fits: loaded, and the check says so.
    loaded = run_module("image_load", dict(args, min_free="1M"))
    assert not loaded.failed, loaded.result
    assert loaded["loaded"] and loaded["would_fail"] is False
    assert loaded["disk_space"]["enough"] is True
    assert _present(docker_client, image_id)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def synthetic(tmp_path) -> tuple[Path, str, dict[str, bytes]]:
    """A docker-save-shaped archive with a 64 KiB base layer and a 4 KiB model layer."""
    layers = {"base": b"B" * 65536, "model": b"M" * 4096}
    diff_ids = ["sha256:" + hashlib.sha256(d).hexdigest() for d in layers.values()]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{name}/layer.tar" for name in layers]
    manifest = [{"Config": config_name, "RepoTags": ["x/y:2"], "Layers": names}]
    path = tmp_path / "release.tar"
    with tarfile.open(path, "w:") as tar:
        for name, data in zip(names, layers.values(), strict=True):
            _add(tar, name, data)
        _add(tar, config_name, config)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return path, _sha256(path), dict(zip(diff_ids, layers.values(), strict=True))


def test_image_delta_refuses_a_truck_without_room(synthetic, tmp_path):
    path, digest, layers = synthetic
    base_id, model_id = list(layers)
    cache = tmp_path / "cache"
    args = {
        "archive": str(path),
        "archive_sha256": digest,
        "have_layers": [base_id],
        "cache_dir": str(cache),
        "free_bytes": 10 * MIB,
        "min_free": "10M",
    }
    with tarfile.open(path) as tar:
        sent_unpacked = sum(m.size for m in tar.getmembers() if m.name != "base/layer.tar")
    expected_layers = sent_unpacked + len(layers[model_id])

    run = run_module("image_delta", args)
    assert run.failed, run.result
    space = run["disk_space"]
    assert space["layer_bytes"] == expected_layers
    assert space["needed_bytes"] == expected_layers + 10 * MIB
    assert space["free_bytes"] == 10 * MIB and not space["enough"]
    assert run["msg"].startswith("needs 10.0 MiB free under /var/lib/docker (")
    assert "KiB for the layers + 10.0 MiB headroom), only 10.0 MiB free" in run["msg"]
    assert not cache.exists()  # nothing written, so nothing can be sent

    planned = run_module("image_delta", args, check=True)
    assert not planned.failed, planned.result
    assert planned["would_fail"] is True and planned["layers_sent"] == 1
    assert not cache.exists()

    # The full archive (nothing in common) needs room for every layer.
    full = run_module("image_delta", dict(args, have_layers=[], free_bytes=20 * MIB))
    assert not full.failed, full.result
    assert full["full"] is True and full["disk_space"]["enough"] is True
    unpacked = sum(len(d) for d in layers.values())
    assert full["disk_space"]["layer_bytes"] > 2 * unpacked

    fits = run_module("image_delta", dict(args, free_bytes=11 * MIB))
    assert not fits.failed, fits.result
    assert fits["disk_space"]["enough"] and fits["would_fail"] is False
    assert Path(fits["path"]).exists() and fits["layers_sent"] == 1

    unchecked = run_module("image_delta", {k: v for k, v in args.items() if k != "free_bytes"})
    assert not unchecked.failed and "disk_space" not in unchecked.result

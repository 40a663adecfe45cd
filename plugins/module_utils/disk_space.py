# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Room under the Docker root for a `docker load`: what it needs, what is free, the refusal.

`docker load` first unpacks the whole archive into `<DockerRootDir>/tmp/docker-import-*`, then
registers each layer the engine lacks in its layer store (a second copy of that layer's data),
then removes the unpacked copy. Its peak need is therefore the archive's unpacked size plus the
size of the layers the engine does not hold yet. Layers of a `docker save` archive are plain
(uncompressed) tarballs, so their member sizes are their unpacked sizes.

Only the Python standard library: image_delta uses it on the controller, image_load on the truck.
"""

from __future__ import annotations

import json
import os
import tarfile

from ansible_collections.linkedge.edge.plugins.module_utils.image_archive import chain_ids

MIB = 1 << 20
DEFAULT_MIN_FREE = 256 * MIB
DEFAULT_DOCKER_ROOT = "/var/lib/docker"


def human(size: int | float) -> str:
    """1536 -> '1.5 KiB'; 0 -> '0 B'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop always returns


def docker_root_free(client, warn) -> tuple[str | None, int | None]:
    """(the engine's Docker root, bytes free under it) for a module on the engine's host;
    `warn` says so, and the bytes are None, when the root is not visible from here (an engine
    on another host)."""
    root = client.info().get("DockerRootDir")
    free = free_bytes(root)
    if free is None:
        warn(f"the Docker root {root!r} is not visible from the module: free space not checked")
    return root, free


def free_bytes(path: str | None) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of `path` (None: unknown)."""
    if not path:
        return None
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def layer_members(
    member_sizes: dict[str, int], layers: list[str], diff_ids: list[str]
) -> list[tuple[str, int | None]]:
    """(diff ID, size of its tarball in the archive, None when the archive leaves it out)."""
    return [
        (diff_id, member_sizes.get(layer))
        for layer, diff_id in zip(layers, diff_ids)  # noqa: B905 - Python 3.8 (no strict)
    ]


def load_need(
    member_sizes: dict[str, int], layers: list[str], diff_ids: list[str], have_chains: set[str]
) -> int:
    """Peak bytes `docker load` writes under the Docker root for an archive whose regular files
    have `member_sizes`, on an engine that already holds the layers `have_chains` (chain IDs: a
    layer's bytes on other layers below are another layer to the engine)."""
    unpacked = sum(member_sizes.values())
    chains = chain_ids(diff_ids)
    missing = sum(
        size or 0
        for (_diff_id, size), chain in zip(  # noqa: B905 - Python 3.8 (no strict)
            layer_members(member_sizes, layers, diff_ids), chains
        )
        if chain not in have_chains
    )
    return unpacked + missing


def read_archive(path: str) -> tuple[dict[str, int], list[str], list[str]]:
    """(regular file sizes, manifest Layers, config diff IDs) of a one-image `docker save`
    archive (plain or compressed tar). Raises OSError, ValueError, KeyError or TarError."""
    with tarfile.open(path, "r:*") as tar:
        sizes = {member.name: member.size for member in tar.getmembers() if member.isfile()}
        handle = tar.extractfile("manifest.json")
        if handle is None:
            raise ValueError("manifest.json is not a file in the archive")
        manifest = json.loads(handle.read())
        if not isinstance(manifest, list) or len(manifest) != 1:
            raise ValueError("the archive must hold exactly one image")
        entry = manifest[0]
        handle = tar.extractfile(entry["Config"])
        if handle is None:
            raise ValueError(f"{entry['Config']} is not a file in the archive")
        config = json.loads(handle.read())
    return sizes, list(entry.get("Layers") or []), list(config["rootfs"]["diff_ids"])


def check(docker_root: str, free: int, layer_bytes: int, min_free: int) -> dict:
    """The space verdict returned by the modules (`disk_space`), with the refusal as `msg`."""
    needed = layer_bytes + min_free
    verdict = dict(
        docker_root=docker_root,
        free_bytes=free,
        needed_bytes=needed,
        layer_bytes=layer_bytes,
        min_free_bytes=min_free,
        enough=free >= needed,
        msg=None,
    )
    if not verdict["enough"]:
        verdict["msg"] = (
            f"needs {human(needed)} free under {docker_root} ({human(layer_bytes)} for the layers"
            f" + {human(min_free)} headroom), only {human(free)} free: free space on the truck"
            " (remove images no container uses with linkedge.edge.image_prune or"
            " `docker image prune -a`, or delete files on that filesystem), then run again;"
            " nothing was loaded"
        )
    return verdict

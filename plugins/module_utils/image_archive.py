# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""`docker save` archives: digest, what image they hold, and loading them."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import tarfile


class ArchiveError(Exception):
    """The archive is unreadable, not a `docker save` archive, or not what the release says."""


def normalize_sha256(text: str) -> str:
    """The hex digest from `abc...`, `sha256:abc...` or a sha256sum line `abc...  file.tar`."""
    token = (text or "").strip().split()[0] if (text or "").strip() else ""
    if token.lower().startswith("sha256:"):
        token = token[len("sha256:") :]
    token = token.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", token):
        raise ArchiveError(f"{text!r} is not a sha256 digest (64 hexadecimal characters)")
    return token


def chain_ids(diff_ids: list) -> list:
    """The chain ID of each layer of an image (Docker's and OCI's ChainID): the first layer's
    is its diff ID, each next one sha256("<chain ID below> <diff ID>"). An engine holds a
    layer *on top of the same layers* only when it holds its chain ID: the same bytes (diff ID)
    on other layers below are another layer to `docker load`."""
    chains: list = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            below = chains[-1]
            chains.append("sha256:" + hashlib.sha256(f"{below} {diff_id}".encode()).hexdigest())
    return chains


def held_chains(images_layers) -> set:
    """The chain IDs an engine holds, from each of its images' diff IDs (RootFS Layers): what
    a load need not write again and a delta need not send."""
    return {chain for layers in images_layers for chain in chain_ids(list(layers or []))}


def normalize_image_id(text: str) -> str:
    return "sha256:" + normalize_sha256(text)


def read_manifest(path: str) -> tuple[str, list[str]]:
    """(image ID, repo tags) of the single image in a `docker save` archive.

    Both layouts are understood: `<id>.json` configs (Docker <= 24) and OCI
    `blobs/sha256/<id>` configs (Docker >= 25).
    """
    try:
        with tarfile.open(path, "r:*") as archive:
            member = archive.extractfile("manifest.json")
            manifest = json.loads(member.read()) if member is not None else None
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise ArchiveError(f"{path} is not a `docker save` archive: {exc}") from exc
    if not isinstance(manifest, list) or len(manifest) != 1:
        count = len(manifest) if isinstance(manifest, list) else 0
        raise ArchiveError(
            f"{path} holds {count} images, a LinkEdge release archive holds exactly one"
        )
    config = posixpath.basename(manifest[0].get("Config") or "")
    if config.endswith(".json"):
        config = config[: -len(".json")]
    return normalize_image_id(config), list(manifest[0].get("RepoTags") or [])


def load_archive(client, path: str) -> list[str]:
    """`docker load` the archive, streamed from disk; the references the engine reports."""
    loaded = []
    with open(path, "rb") as handle:
        for chunk in client.api.load_image(handle):
            if "error" in chunk:
                raise ArchiveError(f"docker load of {path} failed: {chunk['error']}")
            match = re.search(r"Loaded image(?: ID)?: (\S+)", chunk.get("stream", ""))
            if match:
                loaded.append(match.group(1))
    return loaded

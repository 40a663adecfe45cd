# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Read files out of an image (without running it) or out of a container."""

from __future__ import annotations

import io
import json
import posixpath
import tarfile

from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    BUNDLE_DIR,
    LABEL_ROLE,
    SCHEMA_FILE,
    SMOKE_VECTORS_FILE,
)
from ansible_collections.linkedge.edge.plugins.module_utils.docker_client import NotFound


class ImageFileError(Exception):
    """The file is not in the image or container, or is not what it should be."""


def read_container_files(container, directory: str, names: tuple[str, ...]) -> dict[str, bytes]:
    """{name: bytes} for the regular files `names` directly inside `directory`."""
    try:
        stream, _stat = container.get_archive(directory)
    except NotFound as exc:
        raise ImageFileError(f"{directory} is not in {container.name}") from exc
    wanted = {posixpath.join(posixpath.basename(directory.rstrip("/")), n): n for n in names}
    found = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        for member in archive.getmembers():
            name = wanted.get(member.name)
            if name is None:
                continue
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is None:
                raise ImageFileError(f"{directory}/{name} is not a regular file")
            found[name] = handle.read()
    missing = sorted(set(names) - set(found))
    if missing:
        raise ImageFileError(f"{', '.join(missing)} missing from {directory}")
    return found


def read_image_files(
    client, image: str, directory: str, names: tuple[str, ...]
) -> dict[str, bytes]:
    """Same as read_container_files, from a created (never started) container of `image`."""
    container = client.containers.create(
        image, entrypoint=["/bin/true"], labels={LABEL_ROLE: "file-reader"}
    )
    try:
        return read_container_files(container, directory, names)
    finally:
        container.remove(force=True)


def _parse_bundle_files(files: dict[str, bytes], source: str) -> tuple[list, list]:
    try:
        vectors = json.loads(files[SMOKE_VECTORS_FILE])
        features = json.loads(files[SCHEMA_FILE])["features"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageFileError(f"the model bundle in {source} is malformed: {exc}") from exc
    if not isinstance(vectors, list) or not vectors:
        raise ImageFileError(f"{source} has no smoke vectors in {BUNDLE_DIR}/{SMOKE_VECTORS_FILE}")
    return vectors, features


def smoke_vectors_from_image(client, image: str) -> tuple[list, list]:
    """(smoke vectors, feature names) from the model bundle inside `image`."""
    files = read_image_files(client, image, BUNDLE_DIR, (SMOKE_VECTORS_FILE, SCHEMA_FILE))
    return _parse_bundle_files(files, f"image {image}")


def smoke_vectors_from_container(container) -> tuple[list, list]:
    """(smoke vectors, feature names) from the model bundle inside a container."""
    files = read_container_files(container, BUNDLE_DIR, (SMOKE_VECTORS_FILE, SCHEMA_FILE))
    return _parse_bundle_files(files, f"container {container.name}")

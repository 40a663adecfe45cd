# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Read files out of an image (without running it) or out of a container."""

from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
import tarfile
import tempfile

from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    BUNDLE_DIR,
    LABEL_ROLE,
    SCHEMA_FILE,
    SMOKE_VECTORS_FILE,
    SUMS_FILE,
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


def export_bundle(client, image_id: str, root: str) -> str:
    """The model bundle inside image `image_id`, copied once to <root>/<12 hex digits of the
    image ID>/ (files 0644 in a 0755 directory, readable by the serving user) and its path. A
    bundle already there is used as is; a half-written one is never seen under that name (it
    is written beside it, then renamed)."""
    name = image_id.split(":", 1)[-1][:12]
    destination = os.path.join(root, name)
    if os.path.isfile(os.path.join(destination, SUMS_FILE)):
        return destination  # complete (the serving side checks every file against it)
    shutil.rmtree(destination, ignore_errors=True)  # not a bundle: export it again
    os.makedirs(root, mode=0o755, exist_ok=True)
    container = client.containers.create(
        image_id, entrypoint=["/bin/true"], labels={LABEL_ROLE: "file-reader"}
    )
    try:
        stream, _stat = container.get_archive(BUNDLE_DIR)
        data = b"".join(stream)
    except NotFound as exc:
        raise ImageFileError(f"{BUNDLE_DIR} is not in image {image_id}") from exc
    finally:
        container.remove(force=True)
    top = posixpath.basename(BUNDLE_DIR)
    partial = tempfile.mkdtemp(prefix=f".{name}.", dir=root)  # two runs never share it
    written = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive.getmembers():
            parent, _separator, base = member.name.rpartition("/")
            if parent != top or not member.isfile() or base in ("", ".", ".."):
                continue  # only the regular files directly in the bundle directory
            handle = archive.extractfile(member)
            target = os.path.join(partial, base)
            with open(target, "wb") as out:
                shutil.copyfileobj(handle, out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(target, 0o644)
            written += 1
    if written == 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise ImageFileError(f"the model bundle in image {image_id} ({BUNDLE_DIR}) is empty")
    os.chmod(partial, 0o755)
    _fsync_directory(partial)
    try:
        os.rename(partial, destination)
    except OSError:  # another run exported it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
        if not os.path.isdir(destination):
            raise
    _fsync_directory(root)
    return destination


def _fsync_directory(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

"""Write an image as a `docker save` archive with its sha256 and model card, for trucks
that have no registry."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from ..contract import (
    BUNDLE_DIR,
    LABEL_BUNDLE_SHA256,
    LABEL_MODEL_NAME,
    LABEL_MODEL_VERSION,
    MANIFEST_FILE,
    MODEL_CARD_FILE,
    MODEL_NAME,
)

MODEL_CARD_IN_IMAGE = f"{BUNDLE_DIR}/{MODEL_CARD_FILE}"


class ExportError(RuntimeError):
    """The image is absent or its archive could not be written."""


@dataclass(frozen=True)
class ExportedImage:
    archive: Path
    sha256: str
    size_bytes: int
    image: str
    image_id: str
    model_version: str
    bundle_sha256: str


def archive_name(image: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", image) + ".tar"


def read_file_from_image(client: docker.DockerClient, image: str, path: str) -> bytes:
    """Copy one file out of an image without running it."""
    container = client.containers.create(image, entrypoint=["/bin/true"])
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.extractfile(archive.getmembers()[0])
            if member is None:
                raise ExportError(f"{path} in {image} is not a regular file")
            return member.read()
    finally:
        container.remove(force=True)


def export_image(
    image: str, out_dir: Path, client: docker.DockerClient | None = None
) -> ExportedImage:
    """`docker save` to OUT/<image>.tar, then <archive>.sha256, model_card.json and the
    release's (unsigned) manifest.json: the one record of a release, completed and signed by
    `release.sign_release` or `release.publish_release`."""
    client = client or docker.from_env(timeout=600)
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise ExportError(f"image {image} not found: build it first with `build`") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / archive_name(image)
    partial = archive.with_suffix(".tar.partial")
    digest = hashlib.sha256()
    size = 0
    with open(partial, "wb") as handle:
        for chunk in client.api.get_image(image):
            handle.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    partial.replace(archive)
    sha256 = digest.hexdigest()
    archive.with_name(archive.name + ".sha256").write_text(f"{sha256}  {archive.name}\n")
    (out_dir / "model_card.json").write_bytes(
        read_file_from_image(client, image, MODEL_CARD_IN_IMAGE)
    )
    labels = found.attrs["Config"].get("Labels") or {}
    exported = ExportedImage(
        archive=archive,
        sha256=sha256,
        size_bytes=size,
        image=image,
        image_id=found.id,
        model_version=labels.get(LABEL_MODEL_VERSION, "unknown"),
        bundle_sha256=labels.get(LABEL_BUNDLE_SHA256, "unknown"),
    )
    manifest = {
        "name": labels.get(LABEL_MODEL_NAME, MODEL_NAME),
        "version": exported.model_version,
        "image": image,
        "image_id": found.id,
        "archive": archive.name,
        "archive_sha256": sha256,
        "archive_bytes": size,
        "bundle_sha256": exported.bundle_sha256,
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return exported

"""Write a release's images (one per architecture) as `docker save` archives with their sha256
and the model card, for trucks that have no registry."""

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
    DEFAULT_ARCHITECTURE,
    IMAGE_FIELDS,
    LABEL_BUNDLE_SHA256,
    LABEL_MODEL_NAME,
    LABEL_MODEL_VERSION,
    MANIFEST_ARCHITECTURES,
    MANIFEST_FILE,
    MODEL_CARD_FILE,
    MODEL_NAME,
    architecture_named,
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
    architecture: str  # the image config's: amd64, arm64

    def image_fields(self) -> dict[str, object]:
        """This image's entry in the release manifest (contract.IMAGE_FIELDS)."""
        fields = {
            "image": self.image,
            "image_id": self.image_id,
            "archive": self.archive.name,
            "archive_sha256": self.sha256,
            "archive_bytes": self.size_bytes,
        }
        return {name: fields[name] for name in IMAGE_FIELDS}


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


def _save(client: docker.DockerClient, image: str, out_dir: Path) -> ExportedImage:
    """`docker save` IMAGE to OUT/<image>.tar (written under another name, then renamed) and
    <archive>.sha256."""
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise ExportError(f"image {image} not found: build it first with `build`") from exc
    try:
        architecture = architecture_named(found.attrs.get("Architecture", ""))
    except ValueError as exc:
        raise ExportError(f"image {image}: {exc}") from None
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
    labels = found.attrs["Config"].get("Labels") or {}
    return ExportedImage(
        archive=archive,
        sha256=sha256,
        size_bytes=size,
        image=image,
        image_id=found.id,
        model_version=labels.get(LABEL_MODEL_VERSION, "unknown"),
        bundle_sha256=labels.get(LABEL_BUNDLE_SHA256, "unknown"),
        architecture=architecture,
    )


def export_images(
    images: list[str], out_dir: Path, client: docker.DockerClient | None = None
) -> list[ExportedImage]:
    """`docker save` each of IMAGES (one per architecture, all from one bundle) into OUT, then
    model_card.json and the release's (unsigned) manifest.json: the one record of a release,
    completed and signed by `release.sign_release` or `release.publish_release`. The manifest's
    top-level image is the amd64 one (the first image when there is none); ``architectures``
    names every image."""
    if not images:
        raise ExportError("no image to export")
    client = client or docker.from_env(timeout=600)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exported: list[ExportedImage] = []
    for image in images:
        saved = _save(client, image, out_dir)
        first = exported[0] if exported else saved
        if (saved.model_version, saved.bundle_sha256) != (first.model_version, first.bundle_sha256):
            raise ExportError(
                f"{image} serves {saved.model_version} (bundle {saved.bundle_sha256}), "
                f"{first.image} {first.model_version} (bundle {first.bundle_sha256}): a release's "
                "images are built from one bundle"
            )
        if any(other.architecture == saved.architecture for other in exported):
            raise ExportError(
                f"{image} is a second {saved.architecture} image: a release has one image per "
                "architecture"
            )
        exported.append(saved)
    (out_dir / "model_card.json").write_bytes(
        read_file_from_image(client, images[0], MODEL_CARD_IN_IMAGE)
    )
    top = next((e for e in exported if e.architecture == DEFAULT_ARCHITECTURE), exported[0])
    labels = client.images.get(top.image).attrs["Config"].get("Labels") or {}
    manifest = {
        "name": labels.get(LABEL_MODEL_NAME, MODEL_NAME),
        "version": top.model_version,
        **top.image_fields(),
        "bundle_sha256": top.bundle_sha256,
        MANIFEST_ARCHITECTURES: {e.architecture: e.image_fields() for e in exported},
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return exported


def export_image(
    image: str, out_dir: Path, client: docker.DockerClient | None = None
) -> ExportedImage:
    """A release of one image (export_images)."""
    return export_images([image], out_dir, client)[0]

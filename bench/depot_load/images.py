"""The images: blobs and manifests as ``docker push`` leaves them in a registry (synthetic, or
read from the releases' ``docker save`` archives)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import CONFIG_TYPE, LAYER_TYPE, MANIFEST_V2, REPOSITORY, SetupError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return "sha256:" + sha256_hex(self.data)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "size": len(self.data), "digest": self.digest}


@dataclass(frozen=True)
class Image:
    version: str
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def image_id(self) -> str:
        return self.config.digest  # the engine's image ID is its config's digest

    @property
    def reference(self) -> str:
        return f"{REPOSITORY}:{self.version}"

    @property
    def manifest(self) -> bytes:
        document = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": self.config.descriptor(),
            "layers": [layer.descriptor() for layer in self.layers],
        }
        return json.dumps(document, indent=3).encode()


def gzip_layer(raw: bytes, level: int) -> Blob:
    return Blob(gzip.compress(raw, compresslevel=level, mtime=0), LAYER_TYPE)


def tar_of(name: str, payload: bytes) -> bytes:
    """An image layer: a tar holding one file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        member = tarfile.TarInfo(name)
        member.size, member.mode, member.mtime = len(payload), 0o644, 0
        archive.addfile(member, io.BytesIO(payload))
    return buffer.getvalue()


def image_config(version: str, diff_ids: list[str]) -> Blob:
    document = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "10001:10001",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["python3", "-m", "serving"],
            "Labels": {"org.linkedge.model_version": version},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "depot_load synthetic layer"} for _ in diff_ids],
    }
    return Blob(json.dumps(document, separators=(",", ":")).encode(), CONFIG_TYPE)


def synthetic_images(base_bytes: int, model_bytes: int, seed: int) -> dict[str, Image]:
    """v1 and v2: one big shared base layer, one model layer each (random bytes stand for
    content that is already compressed; gzip level 0 keeps their size)."""
    rng = random.Random(seed)
    base_tar = tar_of("opt/linkedge/base.bin", rng.randbytes(base_bytes))
    base = gzip_layer(base_tar, 0)
    images = {}
    for name in ("v1", "v2"):
        model_tar = tar_of("opt/linkedge/model/model.json", rng.randbytes(model_bytes))
        model = gzip_layer(model_tar, 0)
        version = f"aps-xgb-{sha256_hex(model.data)[:12]}"
        diff_ids = ["sha256:" + sha256_hex(raw) for raw in (base_tar, model_tar)]
        images[name] = Image(version, image_config(version, diff_ids), (base, model))
    return images


def release_images(manifests: dict[str, dict[str, Any]], releases: dict[str, Path]) -> dict:
    """The releases' own images, read from their `docker save` archives: the config as it is
    (its digest is the signed image ID) and every layer gzip-compressed at Go's default level,
    as `docker push` sends it. Layers the two images share are compressed once."""
    compressed: dict[str, Blob] = {}
    images = {}
    for name, release in releases.items():
        manifest = manifests[name]
        with tarfile.open(release / manifest["archive"]) as archive:
            (entry,) = json.loads(_member(archive, "manifest.json"))
            config = Blob(_member(archive, entry["Config"]), CONFIG_TYPE)
            layers = []
            for path in entry["Layers"]:
                if path not in compressed:
                    compressed[path] = gzip_layer(_member(archive, path), 6)
                layers.append(compressed[path])
        if config.digest != manifest["image_id"]:
            raise SetupError(f"{release}: the archive's config is not the signed image ID")
        images[name] = Image(manifest["version"], config, tuple(layers))
    return images


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    handle = archive.extractfile(name)
    if handle is None:
        raise SetupError(f"{archive.name} has no file {name}")
    return handle.read()

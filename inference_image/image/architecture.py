"""Finish a built image: its config names the architecture its code is for, and its last
layer is the model, written here so that it is the same bytes on every architecture.

An engine that is not multi-platform (Debian's docker.io without experimental features)
records its own architecture for ``docker import --platform`` and for a classic ``docker build
--platform`` of a ``FROM scratch`` stage. The layers are right; only the config's
``architecture`` is wrong, and a truck (or ``docker run``) would then refuse or mislabel the
image. A classic build's ``COPY`` also stamps the directories of its layer with the build's
time, so two builds of one bundle (for two architectures, or twice) would give two model
layers. Both are put right through ``docker save`` / ``docker load``: the config is rewritten
and the model layer appended (see :mod:`.model_layer`), so the image ID is new.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime
from typing import Any

from .platforms import Platform


class ArchitectureError(RuntimeError):
    """The image could not be given its architecture (or its model layer)."""


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    if member is None:
        raise ArchitectureError(f"docker save gave no {name}")
    return member.read()


def _add(target: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    target.addfile(info, io.BytesIO(data))


def set_architecture(
    client: Any,
    tag: str,
    platform: Platform,
    layer: bytes | None = None,
    layer_comment: str = "",
) -> str:
    """Give TAG's config PLATFORM's architecture and, with LAYER (an uncompressed layer tar),
    append that layer (LAYER_COMMENT is its history entry); a no-op when the architecture is
    right and there is no layer. The image ID."""
    image = client.images.get(tag)
    if image.attrs.get("Architecture") == platform.debian_arch and layer is None:
        return image.id
    saved = b"".join(client.api.get_image(tag))
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(saved)) as source,
        tarfile.open(fileobj=out, mode="w") as target,
    ):
        (manifest,) = json.loads(_member(source, "manifest.json"))
        config = json.loads(_member(source, manifest["Config"]))
        config["architecture"] = platform.debian_arch
        config.pop("variant", None)
        if platform.debian_arch == "arm64":
            config["variant"] = "v8"
        old_config = manifest["Config"]
        for member in source.getmembers():
            top_level_json = member.name.endswith(".json") and "/" not in member.name
            if top_level_json or member.name in (old_config, "repositories", "oci-layout"):
                # The old config and the indexes: what is loaded is the classic layout (the
                # layers plus manifest.json), which every engine's loader reads.
                continue
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        if layer is not None:
            digest = hashlib.sha256(layer).hexdigest()
            layer_name = f"{digest}/layer.tar"
            if layer_name not in source.getnames():
                _add(target, layer_name, layer)
            manifest["Layers"] = [*manifest["Layers"], layer_name]
            config["rootfs"]["diff_ids"] = [*config["rootfs"]["diff_ids"], f"sha256:{digest}"]
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            config["history"] = [
                *config.get("history", []),
                {"created": created, "created_by": layer_comment or "linkedge: a layer"},
            ]
            config["created"] = created
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        manifest["Config"] = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest["RepoTags"] = [tag]
        _add(target, manifest["Config"], config_bytes)
        _add(target, "manifest.json", json.dumps([manifest]).encode())
    client.images.load(out.getvalue())
    loaded = client.images.get(tag)
    if loaded.attrs.get("Architecture") != platform.debian_arch:
        raise ArchitectureError(
            f"{tag}: loaded with architecture {loaded.attrs.get('Architecture')}, "
            f"not {platform.debian_arch}"
        )
    if layer is not None and loaded.attrs["RootFS"]["Layers"][-1] != f"sha256:{digest}":
        raise ArchitectureError(f"{tag}: loaded without its model layer sha256:{digest}")
    if loaded.id != image.id:
        # The image as built is now untagged: drop its record, not its parents (the build
        # cache) nor any layer (the loaded image holds them all).
        with contextlib.suppress(Exception):
            client.images.remove(image.id, noprune=True)
    return loaded.id

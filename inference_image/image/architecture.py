"""Make an image's config name the architecture its code is for.

An engine that is not multi-platform (Debian's docker.io without experimental features)
records its own architecture for ``docker import --platform`` and for a classic ``docker build
--platform`` of a ``FROM scratch`` stage. The layers are right; only the config's
``architecture`` is wrong, and a truck (or ``docker run``) would then refuse or mislabel the
image. This rewrites the config through ``docker save`` / ``docker load``: same layers, a new
config, so a new image ID.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any

from .platforms import Platform


class ArchitectureError(RuntimeError):
    """The image could not be given its architecture."""


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    if member is None:
        raise ArchitectureError(f"docker save gave no {name}")
    return member.read()


def set_architecture(client: Any, tag: str, platform: Platform) -> str:
    """Give TAG's config PLATFORM's architecture (a no-op when it has it); the image ID."""
    image = client.images.get(tag)
    if image.attrs.get("Architecture") == platform.debian_arch:
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
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        old_config = manifest["Config"]
        manifest["Config"] = config_name
        manifest["RepoTags"] = [tag]
        for member in source.getmembers():
            top_level_json = member.name.endswith(".json") and "/" not in member.name
            if top_level_json or member.name in (old_config, "repositories", "oci-layout"):
                # The old config and the indexes: what is loaded is the classic layout (the
                # layers plus manifest.json), which every engine's loader reads.
                continue
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        for name, data in (
            (config_name, config_bytes),
            ("manifest.json", json.dumps([manifest]).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))
    client.images.load(out.getvalue())
    loaded = client.images.get(tag)
    if loaded.attrs.get("Architecture") != platform.debian_arch:
        raise ArchitectureError(
            f"{tag}: loaded with architecture {loaded.attrs.get('Architecture')}, "
            f"not {platform.debian_arch}"
        )
    return loaded.id

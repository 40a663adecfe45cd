"""The depot: releases and channels, written by the real CLI (``linkedge-image``), and the
release signatures a truck checks."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from inference_image.release import release_present

from .images import Image, sha256_hex
from .settings import BUILD_KEY, BUILD_RELEASES, CHANNEL, CLI, REPO, SOURCE_CHANNEL, SetupError


def run_cli(*args: str | Path) -> dict[str, Any]:
    """The project's CLI (linkedge-image), as CI runs it; its JSON summary."""
    argv = [*CLI, *(str(arg) for arg in args)]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise SetupError(f"linkedge-image {args[0]} {args[1]} failed: {last}")
    return json.loads(result.stdout)


def raw_public_key(pem: bytes) -> bytes:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise SetupError("the release-signing public key is not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signature_verifies(raw_key: bytes, data: bytes, signature_file: bytes) -> bool:
    """Whether the signature file (the release signature format) signs DATA's exact bytes."""
    try:
        record = json.loads(signature_file)
        signature = base64.b64decode(record["signature"], validate=True)
        Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, data)
    except (ValueError, KeyError, TypeError, InvalidSignature):
        return False
    return True


def build_releases_ready() -> bool:
    return BUILD_KEY.is_file() and all(
        release_present(BUILD_RELEASES / name) for name in ("v1", "v2")
    )


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@dataclass(frozen=True)
class Published:
    """The depot as the CLI left it: v1 on `stable`, v2 on `canary`."""

    source: str  # "build/releases" or "fabricated"
    root: Path
    signing_key: Path
    public_key: bytes  # raw Ed25519
    releases: dict[str, Path]  # "v1"/"v2" -> the release directory in the depot
    manifests: dict[str, dict[str, Any]]  # "v1"/"v2" -> manifest.json

    def file_sizes(self) -> dict[str, int]:
        channels = self.root / "channels"
        release = self.releases["v2"]
        return {
            "pointer": (channels / f"{CHANNEL}.json").stat().st_size,
            "pointer_signature": (channels / f"{CHANNEL}.json.sig").stat().st_size,
            "manifest": (release / "manifest.json").stat().st_size,
            "manifest_signature": (release / "manifest.json.sig").stat().st_size,
        }


def snapshot_build_releases(root: Path) -> tuple[dict[str, Path], Path]:
    """build/releases/v1 and v2 in the depot (hard links: a rebuild does not change them)."""
    releases = {}
    for name in ("v1", "v2"):
        version = json.loads((BUILD_RELEASES / name / "manifest.json").read_text())["version"]
        target = root / "releases" / version
        shutil.copytree(BUILD_RELEASES / name, target, copy_function=link_or_copy)
        releases[name] = target
    return releases, BUILD_KEY


def fabricate_release(root: Path, image: Image, signing_key: Path) -> Path:
    """A release directory in the depot for IMAGE: a placeholder archive (trucks with a
    registry never fetch it) and a manifest naming the image, signed by the CLI."""
    target = root / "releases" / image.version
    target.mkdir(parents=True)
    archive = f"linkedge_aps-classifier_{image.version}.tar"
    placeholder = f"placeholder for the docker save archive of {image.reference}\n".encode()
    (target / archive).write_bytes(placeholder)
    (target / f"{archive}.sha256").write_text(f"{sha256_hex(placeholder)}  {archive}\n")
    manifest = {
        "archive": archive,
        "archive_bytes": len(placeholder),
        "archive_sha256": sha256_hex(placeholder),
        "bundle_sha256": sha256_hex(image.version.encode()),
        "image": image.reference,
        "image_id": image.image_id,
        "name": "aps-classifier",
        "version": image.version,
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    run_cli("sign", "--release", target, "--signing-key", signing_key)
    return target


def publish_depot(
    root: Path, work: Path, source: str, images: dict[str, Image] | None = None
) -> Published:
    """The depot directory: releases, then v1 published on `stable` and v2 on `canary`.
    `build`: build/releases' own; `fabricated`: one per image, signed with a new key."""
    (root / "channels").mkdir(parents=True)
    if source == "build" or images is None:
        releases, key = snapshot_build_releases(root)
        public = key.with_name("release-signing.pub").read_bytes()
    else:
        keys = run_cli("keygen", "--out", work / "keys")
        key, public = Path(keys["private_key"]), Path(keys["public_key"]).read_bytes()
        releases = {name: fabricate_release(root, images[name], key) for name in ("v1", "v2")}
    for channel, name in ((CHANNEL, "v1"), (SOURCE_CHANNEL, "v2")):
        run_cli(
            "channel",
            "publish",
            "--depot",
            root,
            "--channel",
            channel,
            "--release",
            releases[name],
            "--signing-key",
            key,
        )
        wait_until_dated(root / "channels" / f"{channel}.json")
    manifests = {
        name: json.loads((path / "manifest.json").read_text()) for name, path in releases.items()
    }
    label = "build/releases" if source == "build" else "fabricated"
    return Published(label, root, key, raw_public_key(public), releases, manifests)


def wait_until_dated(pointer: Path) -> None:
    """The CLI dates a new pointer the next whole second, so that any download of the previous
    one is older in HTTP's whole seconds. A real truck's next poll is minutes later; the
    compressed simulation's may fall within that second: start polling once it has passed."""
    delay = pointer.stat().st_mtime - time.time()
    if delay > 0:
        time.sleep(delay + 0.01)


def promote(published: Published) -> dict[str, Any]:
    result = run_cli(
        "channel",
        "promote",
        "--depot",
        published.root,
        "--from",
        SOURCE_CHANNEL,
        "--to",
        CHANNEL,
        "--signing-key",
        published.signing_key,
    )
    wait_until_dated(published.root / "channels" / f"{CHANNEL}.json")
    return result

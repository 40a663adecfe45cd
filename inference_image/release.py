"""Releases: the directory a rollout ships, published atomically and identified by its inputs.

A release directory ``RELEASES/<version>/`` holds::

    <image>.tar, <image>.tar.sha256   the image as `docker save` wrote it (one per architecture)
    model_card.json                    the model card
    bundle/                            the model bundle (checksummed)
    packages.json                      Python packages (name, version) inside the image
    manifest.json                      THE release record (version, image ID, digests, ...)
    manifest.json.sig                  Ed25519 signature over manifest.json's bytes (signing.py)

`export` writes the first manifest.json (what it knows of the image); `sign_release` and
`publish_release` complete it (file digests, model figures, provenance) and sign it. Nothing
else records a release: the truck reads only the signed manifest.

The manifest names every checksum a truck relies on: ``image_id``, ``archive_sha256`` (and
``archive_bytes``), ``bundle_sha256`` (the digest of ``bundle/SHA256SUMS``, which lists each
bundle file's sha256) and ``files``: the sha256 of every other file of the release (relative
path -> hex digest). Signed, it lets a truck check all of them with one trusted public key.

``RELEASES/current`` links to the newest accepted release and ``RELEASES/index/<fingerprint>``
names the release built from a given set of inputs, so the same inputs never make a second one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from . import signing
from .bundle import SUMS_FILE, load_bundle, sha256_file
from .captured import fingerprint_name
from .contract import MANIFEST_FILE as MANIFEST
from .contract import MANIFEST_REQUIRED, release_images

PACKAGE_DIR = Path(__file__).resolve().parent
CURRENT = "current"
INDEX = "index"
LIST_PACKAGES = (
    "import importlib.metadata as m, json; "
    "print(json.dumps(sorted({d.metadata['Name'].lower(): d.version "
    "for d in m.distributions()}.items())))"
)


class ReleaseError(RuntimeError):
    """A release cannot be published or read."""


def source_files(root: Path = PACKAGE_DIR) -> list[Path]:
    """Every file that shapes the model or the image: the package's code and image recipe."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )


def input_fingerprint(data_files: list[Path], settings: dict[str, Any]) -> dict[str, Any]:
    """sha256 over the data, the source and the settings: equal inputs, equal fingerprint."""
    digest = hashlib.sha256()
    data = {fingerprint_name(path): sha256_file(path) for path in sorted(data_files)}
    source = hashlib.sha256()
    for path in source_files():
        source.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0")
        source.update(sha256_file(path).encode())
    digest.update(json.dumps({"data": data, "settings": settings}, sort_keys=True).encode())
    digest.update(source.hexdigest().encode())
    return {
        "fingerprint": digest.hexdigest(),
        "data": data,
        "source_sha256": source.hexdigest(),
        "settings": settings,
    }


def source_commit(repo: Path = PACKAGE_DIR) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", str(repo)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def image_packages(image: str) -> list[list[str]]:
    """[name, version] of every Python distribution importable inside the image."""
    result = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python3",
            image,
            "-c",
            LIST_PACKAGES,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ReleaseError(f"cannot list the packages of {image}: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout)


def find_release(releases: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest of the release built from these inputs, if it still exists intact."""
    pointer = Path(releases) / INDEX / fingerprint
    if not pointer.is_file():
        return None
    manifest_path = Path(releases) / pointer.read_text().strip() / MANIFEST
    if not manifest_path.is_file():
        return None
    return json.loads(manifest_path.read_text())


def current_release(releases: Path) -> dict[str, Any] | None:
    manifest_path = Path(releases) / CURRENT / MANIFEST
    return json.loads(manifest_path.read_text()) if manifest_path.is_file() else None


def image_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The top-level image (what earlier trucks read) and every architecture's, each once:
    the top level is usually the amd64 entry itself (same archive, digest and size)."""
    entries = [manifest, *release_images(manifest).values()]
    key = ("archive", "archive_sha256", "archive_bytes")
    return list({tuple(entry.get(name) for name in key): entry for entry in entries}.values())


def archives(manifest: dict[str, Any]) -> list[str]:
    """The archive of every architecture's image of a release (the top-level one first)."""
    return list(dict.fromkeys(e["archive"] for e in image_entries(manifest) if e.get("archive")))


def release_files(release_dir: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """sha256 of every file of a release except the archives (each has its own digest in the
    manifest), the manifest and its signature."""
    release_dir = Path(release_dir)
    skip = {*archives(manifest), MANIFEST, MANIFEST + signing.SIGNATURE_SUFFIX}
    return {
        path.relative_to(release_dir).as_posix(): sha256_file(path)
        for path in sorted(release_dir.rglob("*"))
        if path.is_file() and path.relative_to(release_dir).as_posix() not in skip
    }


def write_manifest(release_dir: Path, manifest: dict[str, Any]) -> None:
    (Path(release_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(release_dir: Path) -> dict[str, Any]:
    """RELEASE/manifest.json, with the fields every truck-side step relies on."""
    path = Path(release_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReleaseError(
            f"{path} not found: export the image first (`python -m inference_image export`)"
        ) from None
    except ValueError as exc:
        raise ReleaseError(f"{path} is not JSON: {exc}") from None
    missing = [name for name in MANIFEST_REQUIRED if name not in manifest]
    if missing:
        raise ReleaseError(f"{path} lacks {', '.join(missing)}: export the release again")
    return manifest


def release_present(release_dir: Path, with_bundle: bool = False, signed: bool = True) -> bool:
    """RELEASE holds its manifest (signed, unless `signed` is false) and its archive of the
    recorded size (and, with `with_bundle`, the model bundle it was built from, as
    scripts/molecule-releases.sh keeps it): a cheap check that an export or a copy finished,
    not a verification."""
    release_dir = Path(release_dir)
    try:
        manifest = json.loads((release_dir / MANIFEST).read_text())
        archive_complete = all(
            (release_dir / image["archive"]).stat().st_size == image["archive_bytes"]
            for image in image_entries(manifest)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False
    has_signature = (release_dir / (MANIFEST + signing.SIGNATURE_SUFFIX)).is_file()
    bundled = not with_bundle or (release_dir / "bundle" / "smoke_vectors.json").is_file()
    return archive_complete and (has_signature or not signed) and bundled


def complete_manifest(
    release_dir: Path, manifest: dict[str, Any], **provenance: Any
) -> dict[str, Any]:
    """The export's manifest with what a truck and an auditor need besides: the model's
    figures, the source commit, the sha256 of every other release file, and `provenance`
    (build time, inputs). The bundle next to it, if any, must be the one the image carries."""
    release_dir = Path(release_dir)
    bundle_dir = release_dir / "bundle"
    card_path = release_dir / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    if (bundle_dir / SUMS_FILE).is_file():
        bundle = load_bundle(bundle_dir)  # every bundle file checked against SHA256SUMS
        if bundle.sha256 != manifest["bundle_sha256"]:
            raise ReleaseError(
                f"{bundle_dir} has digest {bundle.sha256}, the image carries "
                f"{manifest['bundle_sha256']}: put the bundle the image was built from there"
            )
        card = bundle.card
    metrics = card.get("metrics") or {}
    repeated = metrics.get("repeated_cv") or {}
    return {
        **manifest,
        "name": card.get("name", manifest.get("name")),
        # The repeated nested CV's mean and spread (what the gate judged); a card from before
        # it has only the single nested CV (out_of_fold).
        "cost_ratio": repeated.get(
            "cost_ratio_mean", (metrics.get("out_of_fold") or {}).get("cost_ratio")
        ),
        "cost_ratio_std": repeated.get("cost_ratio_std"),
        "source_commit": source_commit(),
        **provenance,
        "files": release_files(release_dir, manifest),
    }


def check_release_files(release_dir: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest names has the digest it says (so only what matches is signed)."""
    release_dir = Path(release_dir)
    for image in image_entries(manifest):
        archive = release_dir / image["archive"]
        if not archive.is_file():
            raise ReleaseError(f"{archive} is missing: the release is incomplete")
        if archive.stat().st_size != image["archive_bytes"] or (
            sha256_file(archive) != image["archive_sha256"]
        ):
            raise ReleaseError(f"{archive} does not match manifest.json: the release was altered")
    bundle_sums = release_dir / "bundle" / SUMS_FILE
    if bundle_sums.is_file() and sha256_file(bundle_sums) != manifest["bundle_sha256"]:
        raise ReleaseError(f"{bundle_sums} does not match manifest.json: the release was altered")
    for name, digest in (manifest.get("files") or {}).items():
        path = release_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            raise ReleaseError(f"{path} does not match manifest.json: the release was altered")


def sign_release(release_dir: Path, signing_key: Path) -> dict[str, Any]:
    """Sign RELEASE/manifest.json (completed first when the directory is a bare export) after
    checking the files against it. Idempotent: a manifest already signed by this key is left
    alone. Returns {manifest, signature, key_id, version, changed}."""
    release_dir = Path(release_dir)
    key = signing.load_private_key(signing_key)
    manifest_path = release_dir / MANIFEST
    manifest = read_manifest(release_dir)
    changed = False
    if "files" not in manifest:  # a bare export: complete it before it is signed
        manifest = complete_manifest(release_dir, manifest)
        write_manifest(release_dir, manifest)
        changed = True
    try:
        key_id = signing.verify_manifest(manifest_path, key.public_key())
    except signing.SigningError:
        check_release_files(release_dir, manifest)  # sign only what matches the manifest
        signing.sign_manifest(manifest_path, key)
        key_id, changed = signing.key_id(key.public_key()), True
    return {
        "manifest": str(manifest_path),
        "signature": str(signing.signature_path(manifest_path)),
        "key_id": key_id,
        "version": manifest["version"],
        "changed": changed,
    }


def publish_release(
    releases: Path,
    bundle_dir: Path,
    export_dir: Path,
    packages: list[list[str]],
    fingerprint: dict[str, Any],
    build_seconds: float | None = None,
    signing_key: Path | None = None,
) -> dict[str, Any]:
    """Move an export and its bundle into RELEASES/<version>/ atomically (signed with
    SIGNING_KEY when given), then point `current` and the fingerprint index at it. Refuses to
    replace an existing version."""
    releases = Path(releases)
    key = signing.load_private_key(signing_key) if signing_key is not None else None
    bundle = load_bundle(bundle_dir)
    exported = read_manifest(export_dir)
    if exported["bundle_sha256"] != bundle.sha256:
        raise ReleaseError(
            f"the exported image carries bundle {exported['bundle_sha256']}, "
            f"not {bundle.sha256}: export the image built from this bundle"
        )
    target = releases / bundle.version
    if target.exists():
        raise ReleaseError(
            f"release {target} already exists; releases are immutable: publish other images "
            "of the same model (another platform) under a new version (train --version, "
            "image_builder_version)"
        )
    releases.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle.version}.", dir=releases))
    try:
        for item in Path(export_dir).iterdir():
            shutil.move(str(item), staging / item.name)
        shutil.copytree(bundle.path, staging / "bundle")
        listing = [{"name": name, "version": version} for name, version in packages]
        (staging / "packages.json").write_text(json.dumps(listing, indent=2) + "\n")
        manifest = complete_manifest(
            staging,
            exported,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            build_seconds=build_seconds,
            inputs=fingerprint,
        )
        write_manifest(staging, manifest)
        if key is not None:
            signing.sign_manifest(staging / MANIFEST, key)
        staging.chmod(0o755)  # mkdtemp made it private; releases are read by deploy users
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _point(releases / CURRENT, bundle.version)
    (releases / INDEX).mkdir(exist_ok=True)
    _write_atomically(releases / INDEX / fingerprint["fingerprint"], bundle.version + "\n")
    return manifest


def _point(link: Path, target: str) -> None:
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    temporary.replace(link)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    temporary.replace(path)

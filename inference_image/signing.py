"""Ed25519 release signatures: key pairs, signing and verifying the exact bytes of a manifest.

Files::

    release-signing.key    private key, PEM (PKCS#8, unencrypted), mode 0600: CI only, never
                           committed (the project's dev key lives in build/keys/, git-ignored)
    release-signing.pub    public key, PEM (SubjectPublicKeyInfo): what the trucks trust
    manifest.json.sig      JSON {"algorithm": "ed25519", "key_id": "<hex>",
                           "signature": "<base64 of the 64-byte signature>"}

The signature covers the exact bytes of manifest.json (no parsing, no canonicalisation): one
changed byte, even whitespace, fails verification. The key id is the sha256 (hex) of the raw
32-byte public key; it is in the signature file to name the key in messages, and is not trusted
for anything else (the truck verifies with the key it was given, never with one the release
names). Verification is the truck's own code: plugins/module_utils/release_signature.py, linked
here as inference_image/release_signature.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from . import release_signature
from .contract import SIGNATURE_SUFFIX

ALGORITHM = release_signature.ALGORITHM
PRIVATE_KEY_FILE = "release-signing.key"
PUBLIC_KEY_FILE = "release-signing.pub"


class SigningError(ValueError):
    """A key or signature is missing, malformed or does not match; the message says why."""


@dataclass(frozen=True)
class KeyPair:
    private_key: Path
    public_key: Path
    key_id: str


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 (hex) of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_key_pair(out_dir: Path) -> KeyPair:
    """Write release-signing.key (0600) and release-signing.pub into OUT; refuse to overwrite."""
    out_dir = Path(out_dir)
    private_path, public_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise SigningError(f"{path} already exists: keys are never overwritten; choose --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL + 0600 at creation: the private key is never readable by others, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPair(private_path, public_path, key_id(public))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    if not path.is_file():
        raise SigningError(
            f"signing key {path} not found: create one with "
            f"`python -m inference_image keygen --out DIR` or point to the CI's key"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(source: Path | str | bytes) -> Ed25519PublicKey:
    """A public key from a PEM file path, PEM text, or base64 of the raw 32 bytes."""
    if isinstance(source, Path):
        if not source.is_file():
            raise SigningError(f"public key {source} not found")
        data = source.read_bytes()
    else:
        data = source.encode() if isinstance(source, str) else source
    data = data.strip()
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise SigningError(f"not an Ed25519 public key (PEM or base64 of 32 bytes): {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError("not an Ed25519 public key")
    return key


def signature_path(manifest: Path) -> Path:
    manifest = Path(manifest)
    return manifest.with_name(manifest.name + SIGNATURE_SUFFIX)


def sign_bytes(private_key: Ed25519PrivateKey, data: bytes) -> dict[str, str]:
    """The signature record (algorithm, key id, base64 signature) of DATA."""
    return {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(data)).decode("ascii"),
    }


def sign_manifest(manifest: Path, private_key: Ed25519PrivateKey) -> Path:
    """Write MANIFEST.sig over the exact bytes of MANIFEST (atomically); return its path."""
    record = sign_bytes(private_key, Path(manifest).read_bytes())
    target = signature_path(manifest)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    temporary.chmod(0o644)
    temporary.replace(target)
    return target


def verify_manifest(manifest: Path, public_key: Ed25519PublicKey) -> str:
    """Check MANIFEST.sig over MANIFEST's bytes with the trusted key; its key id, or
    SigningError. The check is the truck's own (release_signature.check_signature)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    manifest = Path(manifest)
    try:
        return release_signature.check_signature(
            manifest.read_bytes(), str(signature_path(manifest)), raw
        )
    except release_signature.ReleaseRefused as exc:
        # "nothing was loaded" is the truck's word; here nothing is loaded anyway.
        raise SigningError(str(exc).removesuffix(f"; {release_signature.NOTHING_LOADED}")) from None

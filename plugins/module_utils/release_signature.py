# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Verify a signed LinkEdge release on the target: Ed25519 signature, then checksums.

The builder (inference_image/signing.py) signs the exact bytes of ``manifest.json`` and writes
``manifest.json.sig``: JSON ``{"algorithm": "ed25519", "key_id": <hex>, "signature": <base64>}``.
The key id is the sha256 (hex) of the raw 32-byte public key. Only the trusted key given to
the verifier decides; the key id in the signature file is only used to word the message.

Runs with Python 3.8+ and python3-cryptography >= 2.6 (Debian 11/12, Ubuntu 20.04+): the
public key is decoded here (PEM SubjectPublicKeyInfo or base64 of the raw 32 bytes) and handed
to ``Ed25519PublicKey.from_public_bytes``, so no backend argument is ever needed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import traceback

# Relative import: the builder imports this very file as inference_image.release_signature
# (a link), next to inference_image.contract.
from .contract import sha256_file

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:  # reported by the module with missing_required_lib()
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

    class InvalidSignature(Exception):  # type: ignore[no-redef]
        pass


ALGORITHM = "ed25519"
SIGNATURE_BYTES = 64
SUMS_FILE = "SHA256SUMS"
# DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE, AlgorithmIdentifier
# 1.3.101.112, BIT STRING of 33 bytes (0 unused bits + the 32-byte key).
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
REQUIRED_FIELDS = ("version", "image_id", "archive", "archive_sha256", "bundle_sha256")
NOTHING_LOADED = "nothing was loaded"


class ReleaseRefused(Exception):
    """The release must not be loaded; the message says what was wrong and what to do."""


def _hex(text) -> str:
    token = str(text or "").strip().lower()
    return token[len("sha256:") :] if token.startswith("sha256:") else token


def raw_public_key(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as PEM or as base64 of the raw bytes."""
    text = (text or "").strip()
    if not text:
        raise ReleaseRefused(
            "no trusted public key was given: pass the content of the release signer's "
            "release-signing.pub (inference_service_release_public_key); nothing was loaded"
        )
    pem = re.search(
        r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", text, flags=re.DOTALL
    )
    try:
        if pem:
            der = base64.b64decode("".join(pem.group(1).split()), validate=True)
            if len(der) != len(SPKI_PREFIX) + 32 or not der.startswith(SPKI_PREFIX):
                raise ValueError("the PEM key is not an Ed25519 key")
            return der[len(SPKI_PREFIX) :]
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ReleaseRefused(
            f"the trusted public key is not an Ed25519 public key (PEM 'PUBLIC KEY' or base64 "
            f"of the 32 raw bytes): {exc}; pass the content of the release-signing.pub written "
            f"by `python -m inference_image keygen`"
        ) from exc
    if len(raw) != 32:
        raise ReleaseRefused(
            f"the trusted public key has {len(raw)} bytes, an Ed25519 public key has 32: pass "
            f"the content of the release-signing.pub written by `python -m inference_image keygen`"
        )
    return raw


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def read_signature(path: str) -> tuple:
    """(key id named by the file, 64-byte signature)."""
    if not os.path.isfile(path):
        raise ReleaseRefused(
            f"signature file {path} is missing: the release is not signed or its signature was "
            f"not shipped; sign it (python -m inference_image sign --release DIR --signing-key "
            f"KEY) and run again; {NOTHING_LOADED}"
        )
    try:
        with open(path, "rb") as handle:
            record = json.loads(handle.read().decode("utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if record.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {record.get('algorithm')!r} is not {ALGORITHM!r}")
        signature = base64.b64decode(str(record["signature"]), validate=True)
    except (ValueError, KeyError, binascii.Error) as exc:
        raise ReleaseRefused(
            f"signature file {path} is malformed ({exc}): republish the release; {NOTHING_LOADED}"
        ) from exc
    if len(signature) != SIGNATURE_BYTES:
        raise ReleaseRefused(
            f"signature file {path} is malformed (the signature has {len(signature)} bytes, an "
            f"Ed25519 signature has {SIGNATURE_BYTES}): republish the release; {NOTHING_LOADED}"
        )
    return str(record.get("key_id") or ""), signature


def check_signature(data: bytes, signature_path: str, raw: bytes) -> str:
    """The trusted key's id when the signature file holds its Ed25519 signature over `data`
    (the manifest's exact bytes); ReleaseRefused otherwise. The one verifier: the truck's
    module and the builder (inference_image.signing) both call it."""
    trusted = key_id(raw)
    named, signature = read_signature(signature_path)
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
    except InvalidSignature:
        other = f" (the signature file names key {named})" if named and named != trusted else ""
        raise ReleaseRefused(
            f"signature does not match the trusted key {trusted}{other}: the manifest was "
            f"altered or signed by another key; republish the release; {NOTHING_LOADED}"
        ) from None
    return trusted


def verify_signature(manifest_path: str, signature_path: str, public_key: str) -> tuple:
    """Check the signature over the manifest's exact bytes; (manifest, its sha256, key id)."""
    raw = raw_public_key(public_key)
    if not os.path.isfile(manifest_path):
        raise ReleaseRefused(
            f"manifest {manifest_path} is missing: copy the release's manifest.json to the "
            f"target; {NOTHING_LOADED}"
        )
    with open(manifest_path, "rb") as handle:
        data = handle.read()
    trusted = check_signature(data, signature_path, raw)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise ReleaseRefused(
            f"signed manifest {manifest_path} is not JSON ({exc}): republish the release"
        ) from exc
    if not isinstance(manifest, dict):
        manifest = {}
    missing = [name for name in REQUIRED_FIELDS if not manifest.get(name)]
    if missing:
        raise ReleaseRefused(
            f"signed manifest {manifest_path} lacks {', '.join(missing)}: republish the release "
            f"with a current builder; {NOTHING_LOADED}"
        )
    return manifest, hashlib.sha256(data).hexdigest(), trusted


def verify_archive(path: str, manifest: dict) -> str:
    """The archive's sha256 after checking size and digest against the signed manifest."""
    expected_bytes = manifest.get("archive_bytes")
    size = os.path.getsize(path)
    if isinstance(expected_bytes, int) and size != expected_bytes:
        raise ReleaseRefused(
            f"archive {path} has {size} bytes, the signed manifest says {expected_bytes}: the "
            f"archive was altered or truncated; copy it again from the release; {NOTHING_LOADED}"
        )
    actual = sha256_file(path)
    expected = _hex(manifest["archive_sha256"])
    if actual != expected:
        raise ReleaseRefused(
            f"archive {path} has sha256 {actual}, the signed manifest says {expected}: the "
            f"archive was altered or corrupted; copy it again from the release; {NOTHING_LOADED}"
        )
    return actual


def verify_bundle(directory: str, manifest: dict) -> list:
    """Names of the bundle files checked: SHA256SUMS against the signed ``bundle_sha256``, then
    every file it lists against it."""
    sums_path = os.path.join(directory, SUMS_FILE)
    if not os.path.isfile(sums_path):
        raise ReleaseRefused(
            f"bundle {directory} has no {SUMS_FILE}: ship the release's bundle directory; "
            f"{NOTHING_LOADED}"
        )
    actual = sha256_file(sums_path)
    expected = _hex(manifest["bundle_sha256"])
    if actual != expected:
        raise ReleaseRefused(
            f"bundle {sums_path} has sha256 {actual}, the signed manifest says {expected}: the "
            f"bundle was altered; ship the release's bundle again; {NOTHING_LOADED}"
        )
    checked = [SUMS_FILE]
    with open(sums_path, "rb") as handle:
        lines = handle.read().decode("utf-8").splitlines()
    for line in lines:
        digest, _sep, name = line.partition("  ")
        if not name or "/" in name or name.startswith("."):
            raise ReleaseRefused(f"bundle {sums_path} lists an invalid file name {name!r}")
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise ReleaseRefused(
                f"bundle file {path} is missing: ship the release's bundle again; {NOTHING_LOADED}"
            )
        found = sha256_file(path)
        if found != digest.lower():
            raise ReleaseRefused(
                f"bundle file {path} has sha256 {found}, the signed manifest (through "
                f"{SUMS_FILE}) says {digest}: the bundle was altered; ship the release's bundle "
                f"again; {NOTHING_LOADED}"
            )
        checked.append(name)
    return checked

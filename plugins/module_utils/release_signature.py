# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Verify a signed LinkEdge release on the target: Ed25519 signature, then checksums.

The builder (inference_image/signing.py) signs the exact bytes of ``manifest.json`` and writes
``manifest.json.sig``: JSON ``{"algorithm": "ed25519", "key_id": <hex>, "signature": <base64>}``.
The key id is the sha256 (hex) of the raw 32-byte public key. Channel pointers
(channel_pointer.py) are signed the same way.

The trust store (TrustStore) is the one place a signature is judged: several trusted public
keys at once (key rotation: sign with the new key, trust both, retire the old one) and a list
of revoked key ids. A signature verifies when one trusted key verifies it; a signature by a
revoked key is refused even while that key is still listed as trusted. Only the trusted keys
decide: the key id named in the signature file only orders the attempts and words messages.

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
from collections import namedtuple

# Relative import: the builder imports this very file as inference_image.release_signature
# (a link), next to inference_image.contract.
from .contract import SUMS_FILE, sha256_file

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
# DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE, AlgorithmIdentifier
# 1.3.101.112, BIT STRING of 33 bytes (0 unused bits + the 32-byte key).
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
PEM_PUBLIC_KEY = re.compile(
    r"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", flags=re.DOTALL
)
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{64}")
REQUIRED_FIELDS = ("version", "image_id", "archive", "archive_sha256", "bundle_sha256")
NOTHING_LOADED = "nothing was loaded"

# Machine-readable reasons of a refusal (ReleaseRefused.reason), reported by the modules.
REASON_ALTERED = "altered"  # a release file (archive, bundle) does not match the manifest
REASON_MISSING = "missing"  # a file to verify is not there
REASON_MALFORMED = "malformed"  # a signature file or signed document cannot be read
REASON_BAD_SIGNATURE = "bad_signature"  # altered, or no trusted key verifies it
REASON_UNKNOWN_KEY = "unknown_key"  # signed by a key that is not trusted
REASON_REVOKED_KEY = "revoked_key"  # signed by (or naming) a revoked key
REASON_BAD_TRUST = "bad_trust"  # the trusted keys or revoked ids given are unusable
REASON_MANIFEST_MISMATCH = "manifest_mismatch"  # not the manifest the channel pointer names
REASON_NO_ARCHITECTURE = "no_architecture"  # the release has no image for the truck's architecture


class ReleaseRefused(Exception):
    """The release (or channel pointer) must not be used; the message says what was wrong and
    what to do, ``reason`` says it for machines (one of the REASON_* values)."""

    def __init__(self, message: str, reason: str = REASON_ALTERED) -> None:
        super().__init__(message)
        self.reason = reason


# How messages name what a signature covers: the noun, what to do when it is unsigned or does
# not verify, and what did not happen as a result.
Signed = namedtuple("Signed", ("noun", "unsigned", "republish", "outcome"))
MANIFEST = Signed(
    noun="the manifest",
    unsigned=(
        "the release is not signed or its signature was not shipped; sign it (python -m "
        "inference_image sign --release DIR --signing-key KEY) and run again"
    ),
    republish="republish the release",
    outcome=NOTHING_LOADED,
)


def _hex(text) -> str:
    token = str(text or "").strip().lower()
    return token[len("sha256:") :] if token.startswith("sha256:") else token


def _raw_from_der(der: bytes) -> bytes:
    if len(der) != len(SPKI_PREFIX) + 32 or not der.startswith(SPKI_PREFIX):
        raise ValueError("the PEM key is not an Ed25519 key")
    return der[len(SPKI_PREFIX) :]


def raw_public_keys(text: str) -> list:
    """The 32-byte raw keys in TEXT: one or more PEM ``PUBLIC KEY`` blocks (a key ring file),
    or base64 of one key's 32 raw bytes. ReleaseRefused when TEXT holds none."""
    text = (text or "").strip()
    if not text:
        raise ReleaseRefused(
            "no trusted public key was given: pass the content of the release signer's "
            "release-signing.pub (inference_service_release_public_key); nothing was loaded",
            REASON_BAD_TRUST,
        )
    blocks = PEM_PUBLIC_KEY.findall(text)
    try:
        if blocks:
            return [
                _raw_from_der(base64.b64decode("".join(block.split()), validate=True))
                for block in blocks
            ]
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ReleaseRefused(
            f"the trusted public key is not an Ed25519 public key (PEM 'PUBLIC KEY' or base64 "
            f"of the 32 raw bytes): {exc}; pass the content of the release-signing.pub written "
            f"by `python -m inference_image keygen`",
            REASON_BAD_TRUST,
        ) from exc
    if len(raw) != 32:
        raise ReleaseRefused(
            f"the trusted public key has {len(raw)} bytes, an Ed25519 public key has 32: pass "
            f"the content of the release-signing.pub written by `python -m inference_image keygen`",
            REASON_BAD_TRUST,
        )
    return [raw]


def raw_public_key(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as PEM or as base64 of the raw bytes
    (the first key when TEXT holds several PEM blocks)."""
    return raw_public_keys(text)[0]


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def read_signature(path: str, subject: Signed = MANIFEST) -> tuple:
    """(key id named by the file, 64-byte signature)."""
    if not os.path.isfile(path):
        raise ReleaseRefused(
            f"signature file {path} is missing: {subject.unsigned}; {subject.outcome}",
            REASON_MISSING,
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
            f"signature file {path} is malformed ({exc}): {subject.republish}; {subject.outcome}",
            REASON_MALFORMED,
        ) from exc
    if len(signature) != SIGNATURE_BYTES:
        raise ReleaseRefused(
            f"signature file {path} is malformed (the signature has {len(signature)} bytes, an "
            f"Ed25519 signature has {SIGNATURE_BYTES}): {subject.republish}; {subject.outcome}",
            REASON_MALFORMED,
        )
    return str(record.get("key_id") or "").strip().lower(), signature


def _verifies(raw: bytes, signature: bytes, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
    except InvalidSignature:
        return False
    return True


class TrustStore:
    """Trusted Ed25519 public keys (key id -> raw bytes) and revoked key ids: the one judge of
    every signature a truck reads (release manifests and channel pointers)."""

    def __init__(self, raw_keys, revoked_key_ids=()) -> None:
        self.keys = {}
        for raw in raw_keys:
            self.keys[key_id(raw)] = raw
        self.revoked = set()
        for token in revoked_key_ids or ():
            revoked = _hex(token)
            if not KEY_ID_PATTERN.fullmatch(revoked):
                raise ReleaseRefused(
                    f"revoked key id {token!r} is not a key id (64 hex digits, the sha256 of the "
                    f"raw public key, as `linkedge-image keygen` prints it): correct the list of "
                    f"revoked key ids; {NOTHING_LOADED}",
                    REASON_BAD_TRUST,
                )
            self.revoked.add(revoked)
        if not self.keys:
            raise ReleaseRefused(
                "no trusted public key was given: pass the release signer's public key(s); "
                + NOTHING_LOADED,
                REASON_BAD_TRUST,
            )
        if not self.active_key_ids:
            raise ReleaseRefused(
                f"every trusted key is revoked ({', '.join(sorted(self.keys))}): add the current "
                f"signing key's public key to the trusted keys; {NOTHING_LOADED}",
                REASON_BAD_TRUST,
            )

    @classmethod
    def from_texts(cls, public_keys, revoked_key_ids=()) -> TrustStore:
        """From key texts (each PEM, several PEM blocks, or base64 of 32 raw bytes); empty
        texts are skipped."""
        raw_keys = []
        for text in public_keys:
            if text and str(text).strip():
                raw_keys.extend(raw_public_keys(str(text)))
        return cls(raw_keys, revoked_key_ids)

    @property
    def active_key_ids(self) -> list:
        """Ids of the trusted keys that are not revoked, sorted."""
        return sorted(kid for kid in self.keys if kid not in self.revoked)

    def _signer(self, data: bytes, signature: bytes, named: str):
        """Id of the trusted key (revoked or not) whose signature this is, or None."""
        ordered = sorted(self.keys, key=lambda kid: kid != named)  # the named key first
        for kid in ordered:
            if _verifies(self.keys[kid], signature, data):
                return kid
        return None

    def verify(self, data: bytes, signature_path: str, subject: Signed = MANIFEST) -> str:
        """Id of the trusted, unrevoked key whose Ed25519 signature over DATA (exact bytes) the
        signature file holds; ReleaseRefused (with its reason) otherwise."""
        named, signature = read_signature(signature_path, subject)
        signer = self._signer(data, signature, named)
        if signer is not None and signer not in self.revoked:
            return signer
        if signer is not None or named in self.revoked:
            raise self._revoked(signer or named, signer is not None, subject)
        raise self._no_match(named, subject)

    def _revoked(self, revoked: str, verified: bool, subject: Signed) -> ReleaseRefused:
        how = "is signed by" if verified else "names (and no trusted key verifies it)"
        return ReleaseRefused(
            f"{subject.noun} {how} revoked key {revoked}: re-sign it with a current key "
            f"(trusted: {', '.join(self.active_key_ids)}) and {subject.republish}; remove the "
            f"revoked key from the trusted keys; {subject.outcome}",
            REASON_REVOKED_KEY,
        )

    def _no_match(self, named: str, subject: Signed) -> ReleaseRefused:
        unknown = bool(named) and named not in self.keys
        other = f" (the signature file names key {named})" if unknown else ""
        if len(self.keys) == 1:
            trusted = f"the trusted key {next(iter(self.keys))}"
        else:
            trusted = f"any of the {len(self.keys)} trusted keys ({', '.join(sorted(self.keys))})"
        return ReleaseRefused(
            f"signature does not match {trusted}{other}: {subject.noun} was altered or signed "
            f"by another key; {subject.republish}; {subject.outcome}",
            REASON_UNKNOWN_KEY if unknown else REASON_BAD_SIGNATURE,
        )


# The trust options of the modules that verify signatures (release_verify, channel_verify).
TRUST_ARGUMENT_SPEC = dict(
    public_key=dict(type="str", no_log=False),
    public_key_path=dict(type="path"),
    public_keys=dict(type="list", elements="str", default=[], no_log=False),
    revoked_key_ids=dict(type="list", elements="str", default=[], no_log=False),
)


def _key_file_text(path: str) -> str:
    if not os.path.isfile(path):
        raise ReleaseRefused(
            f"trusted public key file {path} not found on the target: copy the release "
            f"signer's release-signing.pub there or pass the key itself; {NOTHING_LOADED}",
            REASON_BAD_TRUST,
        )
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def trust_store_from_params(params: dict) -> TrustStore:
    """The TrustStore of a module's TRUST_ARGUMENT_SPEC options: O(public_key) or the file
    O(public_key_path) (each may hold several PEM keys), plus every key of O(public_keys),
    O(revoked_key_ids) refused even when listed as trusted."""
    texts = list(params.get("public_keys") or [])
    if params.get("public_key_path"):
        texts.insert(0, _key_file_text(params["public_key_path"]))
    elif params.get("public_key"):
        texts.insert(0, params["public_key"])
    if not any(text and str(text).strip() for text in texts):
        raise ReleaseRefused(
            "no trusted public key was given: pass public_key, public_key_path or public_keys "
            "(the content of the release signer's release-signing.pub); " + NOTHING_LOADED,
            REASON_BAD_TRUST,
        )
    return TrustStore.from_texts(texts, params.get("revoked_key_ids") or ())


def check_signature(data: bytes, signature_path: str, raw: bytes) -> str:
    """The trusted key's id when the signature file holds its Ed25519 signature over `data`
    (the manifest's exact bytes); ReleaseRefused otherwise. The one-key form of
    TrustStore.verify, which the truck's modules and the builder (inference_image.signing)
    both use."""
    return TrustStore([raw]).verify(data, signature_path)


def verify_signature(manifest_path: str, signature_path: str, trust) -> tuple:
    """Check the signature over the manifest's exact bytes with TRUST (a TrustStore, or one
    public key's text); (manifest, its sha256, key id)."""
    if not isinstance(trust, TrustStore):
        trust = TrustStore([raw_public_key(trust)])
    if not os.path.isfile(manifest_path):
        raise ReleaseRefused(
            f"manifest {manifest_path} is missing: copy the release's manifest.json to the "
            f"target; {NOTHING_LOADED}",
            REASON_MISSING,
        )
    with open(manifest_path, "rb") as handle:
        data = handle.read()
    trusted = trust.verify(data, signature_path)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise ReleaseRefused(
            f"signed manifest {manifest_path} is not JSON ({exc}): republish the release",
            REASON_MALFORMED,
        ) from exc
    if not isinstance(manifest, dict):
        manifest = {}
    missing = [name for name in REQUIRED_FIELDS if not manifest.get(name)]
    if missing:
        raise ReleaseRefused(
            f"signed manifest {manifest_path} lacks {', '.join(missing)}: republish the release "
            f"with a current builder; {NOTHING_LOADED}",
            REASON_MALFORMED,
        )
    return manifest, hashlib.sha256(data).hexdigest(), trusted


def check_manifest_digest(manifest_path: str, actual: str, expected: str) -> None:
    """The manifest's sha256 ACTUAL must be EXPECTED, the digest a channel pointer names."""
    if actual != _hex(expected):
        raise ReleaseRefused(
            f"manifest {manifest_path} has sha256 {actual}, the channel pointer names "
            f"{_hex(expected)}: the depot served another manifest than the channel points at (a "
            f"stale mirror or an altered depot); fetch the manifest again from the path the "
            f"pointer names; {NOTHING_LOADED}",
            REASON_MANIFEST_MISMATCH,
        )


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
            f"{NOTHING_LOADED}",
            REASON_MISSING,
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
            raise ReleaseRefused(
                f"bundle {sums_path} lists an invalid file name {name!r}", REASON_MALFORMED
            )
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise ReleaseRefused(
                f"bundle file {path} is missing: ship the release's bundle again; {NOTHING_LOADED}",
                REASON_MISSING,
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

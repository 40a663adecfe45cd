"""Ed25519 release signatures (inference_image/signing.py): real keys, real files, no mocks."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from inference_image import signing

MANIFEST = b'{\n  "archive_sha256": "' + b"ab" * 32 + b'",\n  "version": "1.2.3"\n}\n'


@pytest.fixture
def keys(tmp_path: Path) -> signing.KeyPair:
    return signing.generate_key_pair(tmp_path / "keys")


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "release" / "manifest.json"
    path.parent.mkdir()
    path.write_bytes(MANIFEST)
    return path


def test_keygen_writes_a_private_key_only_its_owner_reads(keys):
    assert stat.S_IMODE(keys.private_key.stat().st_mode) == 0o600
    assert keys.private_key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keys.public_key.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    public = signing.load_public_key(keys.public_key)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert keys.key_id == hashlib.sha256(raw).hexdigest() == signing.key_id(public)
    with pytest.raises(signing.SigningError, match="never overwritten"):
        signing.generate_key_pair(keys.private_key.parent)


def test_round_trip_signs_the_exact_bytes(keys, manifest):
    sig_path = signing.sign_manifest(manifest, signing.load_private_key(keys.private_key))
    assert sig_path == manifest.with_name("manifest.json.sig")
    record = json.loads(sig_path.read_text())
    assert record["algorithm"] == "ed25519" and record["key_id"] == keys.key_id
    assert len(base64.b64decode(record["signature"])) == 64
    assert signing.verify_manifest(manifest, signing.load_public_key(keys.public_key)) == (
        keys.key_id
    )
    # The base64 of the raw 32 bytes is accepted as well as PEM.
    public = signing.load_public_key(keys.public_key)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert signing.verify_manifest(manifest, signing.load_public_key(base64.b64encode(raw)))


@pytest.mark.parametrize("offset", [0, len(MANIFEST) // 2, len(MANIFEST) - 1])
def test_one_changed_byte_of_the_manifest_is_refused(keys, manifest, offset):
    signing.sign_manifest(manifest, signing.load_private_key(keys.private_key))
    data = bytearray(manifest.read_bytes())
    data[offset] ^= 0x01
    manifest.write_bytes(bytes(data))
    with pytest.raises(signing.SigningError) as refused:
        signing.verify_manifest(manifest, signing.load_public_key(keys.public_key))
    assert str(refused.value) == (
        f"signature does not match the trusted key {keys.key_id}: the manifest was altered or "
        f"signed by another key; republish the release"
    )


def test_a_signature_by_another_key_is_refused_and_names_both_keys(keys, manifest, tmp_path):
    other = signing.generate_key_pair(tmp_path / "other")
    signing.sign_manifest(manifest, signing.load_private_key(other.private_key))
    with pytest.raises(signing.SigningError) as refused:
        signing.verify_manifest(manifest, signing.load_public_key(keys.public_key))
    message = str(refused.value)
    assert message.startswith(f"signature does not match the trusted key {keys.key_id}")
    assert f"(the signature file names key {other.key_id})" in message


def test_a_truncated_signature_is_refused_as_malformed(keys, manifest):
    sig_path = signing.sign_manifest(manifest, signing.load_private_key(keys.private_key))
    record = json.loads(sig_path.read_text())
    record["signature"] = base64.b64encode(base64.b64decode(record["signature"])[:40]).decode()
    sig_path.write_text(json.dumps(record))
    with pytest.raises(signing.SigningError, match="the signature has 40 bytes, an Ed25519"):
        signing.verify_manifest(manifest, signing.load_public_key(keys.public_key))
    sig_path.write_text(sig_path.read_text()[:30])  # a truncated file: not even JSON
    with pytest.raises(signing.SigningError, match="is malformed"):
        signing.verify_manifest(manifest, signing.load_public_key(keys.public_key))


def test_a_missing_signature_or_key_says_what_to_do(keys, manifest, tmp_path):
    with pytest.raises(signing.SigningError, match="is missing: the release is not signed"):
        signing.verify_manifest(manifest, signing.load_public_key(keys.public_key))
    with pytest.raises(signing.SigningError, match="keygen --out DIR"):
        signing.load_private_key(tmp_path / "absent.key")
    with pytest.raises(signing.SigningError, match="not an Ed25519 public key"):
        signing.load_public_key("bm90IGEga2V5")  # base64 of 9 bytes

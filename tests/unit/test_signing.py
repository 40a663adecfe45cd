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
from inference_image.release_signature import ReleaseRefused, TrustStore

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


# --- the trust store: several keys, rotation, revocation (release_signature.TrustStore) -------


def _signed_by(pair: signing.KeyPair, manifest: Path) -> str:
    signing.sign_manifest(manifest, signing.load_private_key(pair.private_key))
    return str(signing.signature_path(manifest))


def _store(*pairs: signing.KeyPair, revoked=()) -> TrustStore:
    return TrustStore.from_texts([pair.public_key.read_text() for pair in pairs], revoked)


def _refusal(store: TrustStore, manifest: Path) -> ReleaseRefused:
    with pytest.raises(ReleaseRefused) as refused:
        store.verify(manifest.read_bytes(), str(signing.signature_path(manifest)))
    return refused.value


@pytest.fixture
def new_keys(tmp_path: Path) -> signing.KeyPair:
    return signing.generate_key_pair(tmp_path / "new-keys")


def test_rotation_sign_with_the_new_key_trust_both_then_retire_the_old(keys, new_keys, manifest):
    signature = _signed_by(keys, manifest)
    data = manifest.read_bytes()
    assert _store(keys).verify(data, signature) == keys.key_id  # before the rotation
    both = _store(keys, new_keys)
    assert both.active_key_ids == sorted([keys.key_id, new_keys.key_id])
    assert both.verify(data, signature) == keys.key_id  # trucks trust both: old still passes
    signature = _signed_by(new_keys, manifest)
    assert both.verify(data, signature) == new_keys.key_id  # CI signs with the new key
    assert _store(new_keys).verify(data, signature) == new_keys.key_id  # old key retired
    _signed_by(keys, manifest)  # an old signature after the retirement
    refused = _refusal(_store(new_keys), manifest)
    assert refused.reason == "unknown_key"
    assert str(refused) == (
        f"signature does not match the trusted key {new_keys.key_id} (the signature file names "
        f"key {keys.key_id}): the manifest was altered or signed by another key; republish the "
        "release; nothing was loaded"
    )


def test_a_revoked_key_is_refused_even_while_still_trusted(keys, new_keys, manifest):
    _signed_by(keys, manifest)
    revoked = _store(keys, new_keys, revoked=[f"SHA256:{keys.key_id.upper()}"])
    refused = _refusal(revoked, manifest)
    assert refused.reason == "revoked_key"
    assert str(refused) == (
        f"the manifest is signed by revoked key {keys.key_id}: re-sign it with a current key "
        f"(trusted: {new_keys.key_id}) and republish the release; remove the revoked key from "
        "the trusted keys; nothing was loaded"
    )
    assert revoked.active_key_ids == [new_keys.key_id]
    _signed_by(new_keys, manifest)
    assert revoked.verify(manifest.read_bytes(), str(signing.signature_path(manifest))) == (
        new_keys.key_id
    )


def test_a_signature_naming_a_revoked_untrusted_key_is_refused_as_revoked(keys, new_keys, manifest):
    _signed_by(keys, manifest)
    refused = _refusal(_store(new_keys, revoked=[keys.key_id]), manifest)
    assert refused.reason == "revoked_key"
    assert f"names (and no trusted key verifies it) revoked key {keys.key_id}" in str(refused)


def test_an_altered_manifest_fails_every_trusted_key(keys, new_keys, manifest):
    _signed_by(new_keys, manifest)
    manifest.write_bytes(manifest.read_bytes().replace(b"1.2.3", b"1.2.4"))
    refused = _refusal(_store(keys, new_keys), manifest)
    assert refused.reason == "bad_signature"
    ids = ", ".join(sorted([keys.key_id, new_keys.key_id]))
    assert str(refused).startswith(f"signature does not match any of the 2 trusted keys ({ids}):")


def test_unusable_trust_settings_are_refused(keys, new_keys):
    with pytest.raises(ReleaseRefused, match="every trusted key is revoked") as refused:
        _store(keys, revoked=[keys.key_id])
    assert refused.value.reason == "bad_trust"
    with pytest.raises(ReleaseRefused, match="revoked key id 'abc' is not a key id"):
        _store(keys, revoked=["abc"])
    with pytest.raises(ReleaseRefused, match="no trusted public key was given"):
        TrustStore.from_texts(["", "  "])


def test_a_key_ring_text_holds_several_keys(keys, new_keys, manifest):
    ring = keys.public_key.read_text() + "\n" + new_keys.public_key.read_text()
    store = TrustStore.from_texts([ring])
    assert store.active_key_ids == sorted([keys.key_id, new_keys.key_id])
    signature = _signed_by(new_keys, manifest)
    assert store.verify(manifest.read_bytes(), signature) == new_keys.key_id

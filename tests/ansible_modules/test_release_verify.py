"""linkedge.edge.release_verify through ansible-playbook: a signed release passes, every kind of
tampering is refused with a message saying what was wrong.

Real keys (inference_image.signing), a real signed release directory (inference_image.release
sign_release over an export with its bundle), the module run as Ansible runs it. The target
Python is Debian's /usr/bin/python3 with python3-cryptography, as on a truck, when present.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference_image import signing
from inference_image.bundle import load_bundle, write_bundle
from inference_image.release import sign_release
from inference_image.schema import APS_FEATURES

from .run_module import run_module

DEBIAN_PYTHON = "/usr/bin/python3"
CARD = {"version": "aps-test-1", "threshold": 0.25, "metrics": {"out_of_fold": {}}}
SMOKE = [{"inputs": [None] * 170, "probability": 0.1, "label": "neg"}]
ARCHIVE = "linkedge_aps-classifier_aps-test-1.tar"


def _truck_python() -> str | None:
    """Debian's python3 when it has python3-cryptography (a truck's setup), else the venv's."""
    if not os.path.exists(DEBIAN_PYTHON):
        return None
    probe = subprocess.run([DEBIAN_PYTHON, "-c", "import cryptography"], capture_output=True)
    return DEBIAN_PYTHON if probe.returncode == 0 else None


TRUCK_PYTHON = _truck_python()


@dataclass(frozen=True)
class SignedRelease:
    path: Path
    keys: signing.KeyPair
    manifest: dict

    @property
    def public_key(self) -> str:
        return self.keys.public_key.read_text()

    def args(self, **extra) -> dict:
        return {
            "manifest": str(self.path / "manifest.json"),
            "public_key": self.public_key,
            "archive": str(self.path / ARCHIVE),
            "bundle_dir": str(self.path / "bundle"),
            **extra,
        }


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> signing.KeyPair:
    return signing.generate_key_pair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def release(tmp_path, keys) -> SignedRelease:
    """A signed release directory: archive (64 KiB), .sha256, manifest.json, bundle/."""
    path = tmp_path / "release"
    path.mkdir()
    archive = os.urandom(64 * 1024)
    (path / ARCHIVE).write_bytes(archive)
    digest = hashlib.sha256(archive).hexdigest()
    (path / f"{ARCHIVE}.sha256").write_text(f"{digest}  {ARCHIVE}\n")
    bundle = load_bundle(
        write_bundle(path / "bundle", b'{"model": 1}', list(APS_FEATURES), CARD, SMOKE)
    )
    exported = {  # what `inference_image export` writes
        "name": "aps-classifier",
        "archive": ARCHIVE,
        "archive_sha256": digest,
        "image": "linkedge/aps-classifier:aps-test-1",
        "image_id": "sha256:" + "1" * 64,
        "version": bundle.version,
        "bundle_sha256": bundle.sha256,
        "archive_bytes": len(archive),
    }
    (path / "manifest.json").write_text(json.dumps(exported))
    sign_release(path, keys.private_key)
    return SignedRelease(path, keys, json.loads((path / "manifest.json").read_text()))


def _flip_byte(path: Path, offset: int) -> None:
    mode = path.stat().st_mode
    path.chmod(mode | stat.S_IWUSR)  # bundle files are read-only
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _run(args: dict, check: bool = False):
    return run_module("release_verify", args, check=check, python=TRUCK_PYTHON)


def test_a_signed_release_passes_and_returns_the_signed_fields(release):
    result = _run(release.args())
    assert not result.failed, result.result
    assert result["verified"] is True and result["changed"] is False
    assert result["key_id"] == release.keys.key_id
    assert result["version"] == "aps-test-1"
    assert result["image_id"] == "sha256:" + "1" * 64
    assert result["manifest"] == release.manifest
    assert result["archive_sha256"] == release.manifest["archive_sha256"]
    assert result["bundle_files"] == [
        "SHA256SUMS", "model.json", "schema.json", "model_card.json", "smoke_vectors.json",
    ]  # fmt: skip
    manifest_bytes = (release.path / "manifest.json").read_bytes()
    assert result["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()


def test_verifies_in_check_mode_too(release):
    good = _run(release.args(), check=True)
    assert good["verified"] is True and not good.failed
    _flip_byte(release.path / ARCHIVE, 10)
    assert _run(release.args(), check=True).failed  # read-only, but never lenient


def test_check_mode_warns_when_nothing_was_copied_yet(release, tmp_path):
    args = release.args(manifest=str(tmp_path / "not-copied" / "manifest.json"))
    result = _run(args, check=True)
    assert not result.failed and result["verified"] is False
    assert "not copied in check mode" in " ".join(result.get("warnings", []))
    assert _run(args).failed  # a real run refuses


def test_key_as_a_file_or_as_base64_of_the_raw_bytes(release, tmp_path):
    key_file = tmp_path / "trusted.pub"
    shutil.copy(release.keys.public_key, key_file)
    by_path = release.args(public_key_path=str(key_file))
    del by_path["public_key"]
    assert _run(by_path)["verified"] is True
    pem = "".join(release.public_key.strip().splitlines()[1:-1])
    raw_b64 = base64.b64encode(base64.b64decode(pem)[-32:]).decode()  # SPKI ends with the key
    assert _run(release.args(public_key=raw_b64))["key_id"] == release.keys.key_id


def test_tampered_manifest_is_refused(release):
    manifest = release.path / "manifest.json"
    text = manifest.read_text()
    # The attacker points the truck at another image: one character of image_id changed.
    manifest.write_text(text.replace("1" * 64, "1" * 63 + "2"))
    result = _run(release.args())
    assert result.failed and result["verified"] is False
    assert result["reason"] == "bad_signature"
    assert result["msg"] == (
        f"signature does not match the trusted key {release.keys.key_id}: the manifest was "
        "altered or signed by another key; republish the release; nothing was loaded"
    )


def test_tampered_archive_is_refused(release):
    archive = release.path / ARCHIVE
    _flip_byte(archive, 32 * 1024)  # same size, one byte flipped
    actual = hashlib.sha256(archive.read_bytes()).hexdigest()
    result = _run(release.args())
    assert result.failed
    assert result["msg"] == (
        f"archive {archive} has sha256 {actual}, the signed manifest says "
        f"{release.manifest['archive_sha256']}: the archive was altered or corrupted; copy it "
        "again from the release; nothing was loaded"
    )
    with open(archive, "ab") as handle:
        handle.write(b"x")  # a longer (or truncated) archive is refused on its size at once
    assert "bytes, the signed manifest says 65536" in _run(release.args())["msg"]


def test_tampered_bundle_file_is_refused(release):
    model = release.path / "bundle" / "model.json"
    _flip_byte(model, 2)
    actual = hashlib.sha256(model.read_bytes()).hexdigest()
    result = _run(release.args())
    assert result.failed
    assert result["msg"].startswith(f"bundle file {model} has sha256 {actual}, the signed manifest")
    assert "the bundle was altered; ship the release's bundle again" in result["msg"]


def test_rewritten_bundle_checksums_are_refused(release):
    """An attacker who alters a file and rewrites SHA256SUMS to match is caught by the signed
    bundle digest."""
    bundle = release.path / "bundle"
    _flip_byte(bundle / "model.json", 2)
    sums = bundle / "SHA256SUMS"
    lines = []
    for line in sums.read_text().splitlines():
        _digest, _, name = line.partition("  ")
        lines.append(f"{hashlib.sha256((bundle / name).read_bytes()).hexdigest()}  {name}")
    sums.chmod(0o644)
    sums.write_text("\n".join(lines) + "\n")
    result = _run(release.args())
    assert result.failed
    assert result["msg"].startswith(f"bundle {sums} has sha256 ")
    assert f"the signed manifest says {release.manifest['bundle_sha256']}" in result["msg"]


def test_signature_by_another_key_is_refused(release, tmp_path):
    other = signing.generate_key_pair(tmp_path / "other")
    signing.sign_manifest(
        release.path / "manifest.json", signing.load_private_key(other.private_key)
    )
    result = _run(release.args())
    assert result.failed and result["reason"] == "unknown_key"
    assert result["msg"] == (
        f"signature does not match the trusted key {release.keys.key_id} (the signature file "
        f"names key {other.key_id}): the manifest was altered or signed by another key; "
        "republish the release; nothing was loaded"
    )


def test_missing_signature_is_refused(release):
    signature = release.path / "manifest.json.sig"
    signature.unlink()
    result = _run(release.args())
    assert result.failed and result["reason"] == "missing"
    assert result["msg"] == (
        f"signature file {signature} is missing: the release is not signed or its signature "
        "was not shipped; sign it (python -m inference_image sign --release DIR --signing-key "
        "KEY) and run again; nothing was loaded"
    )


def test_truncated_signature_and_bad_trusted_key_are_refused(release):
    signature = release.path / "manifest.json.sig"
    record = json.loads(signature.read_text())
    record["signature"] = record["signature"][:40]  # base64 of 30 bytes
    signature.write_text(json.dumps(record))
    assert "the signature has 30 bytes, an Ed25519 signature has 64" in _run(release.args())["msg"]
    result = _run(release.args(public_key="not a key"))
    assert result.failed and "the trusted public key is not an Ed25519 public key" in result["msg"]


def test_rotation_several_trusted_keys_then_the_old_one_retired(release, tmp_path):
    """Sign with the new key, trust both, retire the old: every step verifies on the truck."""
    new = signing.generate_key_pair(tmp_path / "new")
    both = release.args(public_key="", public_keys=[release.public_key, new.public_key.read_text()])
    old_signed = _run(both)
    assert not old_signed.failed and old_signed["key_id"] == release.keys.key_id
    assert old_signed["trusted_key_ids"] == sorted([release.keys.key_id, new.key_id])
    signing.sign_manifest(release.path / "manifest.json", signing.load_private_key(new.private_key))
    new_signed = _run(both)
    assert not new_signed.failed and new_signed["key_id"] == new.key_id
    retired = _run(release.args(public_key=new.public_key.read_text()))
    assert not retired.failed and retired["key_id"] == new.key_id
    # A key ring file (both PEM blocks in one file) is several trusted keys as well.
    ring = tmp_path / "trusted-keys.pem"
    ring.write_text(release.public_key + new.public_key.read_text())
    by_ring = release.args(public_key_path=str(ring))
    del by_ring["public_key"]
    assert _run(by_ring)["key_id"] == new.key_id


def test_a_revoked_key_is_refused_even_while_trusted(release, tmp_path):
    new = signing.generate_key_pair(tmp_path / "new")
    args = release.args(
        public_keys=[new.public_key.read_text()], revoked_key_ids=[release.keys.key_id]
    )
    result = _run(args)
    assert result.failed and result["reason"] == "revoked_key"
    assert result["msg"] == (
        f"the manifest is signed by revoked key {release.keys.key_id}: re-sign it with a current "
        f"key (trusted: {new.key_id}) and republish the release; remove the revoked key from the "
        "trusted keys; nothing was loaded"
    )
    signing.sign_manifest(release.path / "manifest.json", signing.load_private_key(new.private_key))
    assert _run(args)["key_id"] == new.key_id  # re-signed with the current key: accepted
    everything = _run(release.args(revoked_key_ids=[release.keys.key_id]))
    assert everything.failed and everything["reason"] == "bad_trust"
    assert everything["msg"].startswith("every trusted key is revoked")


def test_the_manifest_must_be_the_one_the_channel_pointer_names(release):
    digest = hashlib.sha256((release.path / "manifest.json").read_bytes()).hexdigest()
    assert not _run(release.args(manifest_sha256=digest)).failed
    result = _run(release.args(manifest_sha256="0" * 64))
    assert result.failed and result["reason"] == "manifest_mismatch"
    assert result["msg"].startswith(
        f"manifest {release.path / 'manifest.json'} has sha256 {digest}, the channel pointer "
        f"names {'0' * 64}: the depot served another manifest than the channel points at"
    )


@pytest.mark.skipif(
    not os.path.exists("build/sanity-pythons/python3.8"), reason="no Python 3.8 interpreter"
)
def test_target_without_cryptography_is_told_what_to_install(release):
    python = str(Path("build/sanity-pythons/python3.8").resolve())
    if subprocess.run([python, "-c", "import cryptography"], capture_output=True).returncode == 0:
        pytest.skip("this Python 3.8 has cryptography")
    result = run_module("release_verify", release.args(), python=python)
    assert result.failed
    assert "cryptography (python3-cryptography on Debian and Ubuntu)" in result["msg"]


def test_image_delta_refuses_an_archive_holding_another_image_than_the_signed_one(tmp_path):
    """The rollout passes the verified manifest's image_id to image_delta (controller side)."""
    import io
    import tarfile

    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}})
    config_id = hashlib.sha256(config.encode()).hexdigest()
    members = {
        f"{config_id}.json": config.encode(),
        "layer/layer.tar": b"layer",
        "manifest.json": json.dumps(
            [{"Config": f"{config_id}.json", "RepoTags": ["x:1"], "Layers": ["layer/layer.tar"]}]
        ).encode(),
    }
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    args = {
        "archive": str(archive),
        "archive_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "cache_dir": str(tmp_path / "cache"),
    }
    assert not run_module("image_delta", {**args, "image_id": f"sha256:{config_id}"}).failed
    refused = run_module("image_delta", {**args, "image_id": "sha256:" + "0" * 64})
    assert refused.failed
    assert refused["msg"] == (
        f"{archive} holds image sha256:{config_id}, the signed manifest says sha256:{'0' * 64}: "
        "the archive was altered or belongs to another release; republish the release"
    )


ARM64_ARCHIVE = "linkedge_aps-classifier_aps-test-1-arm64.tar"


@pytest.fixture
def two_architectures(tmp_path, keys) -> SignedRelease:
    """A signed release with an amd64 and an arm64 image (what `publish --image A --image B`
    writes): the top-level image is the amd64 one, ``architectures`` names both."""
    path = tmp_path / "release"
    path.mkdir()
    images = {}
    for architecture, name, fill in (("amd64", ARCHIVE, "1"), ("arm64", ARM64_ARCHIVE, "2")):
        archive = os.urandom(32 * 1024)
        (path / name).write_bytes(archive)
        images[architecture] = {
            "image": f"linkedge/aps-classifier:aps-test-1{'-arm64' if fill == '2' else ''}",
            "image_id": "sha256:" + fill * 64,
            "archive": name,
            "archive_sha256": hashlib.sha256(archive).hexdigest(),
            "archive_bytes": len(archive),
        }
    bundle = load_bundle(
        write_bundle(path / "bundle", b'{"model": 1}', list(APS_FEATURES), CARD, SMOKE)
    )
    exported = {
        "name": "aps-classifier",
        "version": bundle.version,
        "bundle_sha256": bundle.sha256,
        **images["amd64"],
        "architectures": images,
    }
    (path / "manifest.json").write_text(json.dumps(exported))
    sign_release(path, keys.private_key)
    return SignedRelease(path, keys, json.loads((path / "manifest.json").read_text()))


@pytest.mark.parametrize("name", ["aarch64", "arm64", "linux/arm64"])
def test_an_arm64_truck_gets_the_arm64_image_checked_against_its_archive(two_architectures, name):
    release = two_architectures
    result = _run(release.args(architecture=name, archive=str(release.path / ARM64_ARCHIVE)))
    assert not result.failed, result.result
    arm64 = release.manifest["architectures"]["arm64"]
    assert result["architecture"] == "arm64"
    assert result["image_id"] == arm64["image_id"] == "sha256:" + "2" * 64
    assert result["manifest"]["archive"] == ARM64_ARCHIVE
    assert result["manifest"]["image"].endswith("-arm64")
    assert result["archive_sha256"] == arm64["archive_sha256"]


def test_an_amd64_truck_gets_the_top_level_image(two_architectures):
    result = _run(two_architectures.args(architecture="x86_64"))
    assert not result.failed, result.result
    assert result["architecture"] == "amd64" and result["image_id"] == "sha256:" + "1" * 64
    assert result["manifest"]["archive"] == ARCHIVE


def test_the_amd64_archive_is_refused_for_an_arm64_truck(two_architectures):
    """The archive is checked against the chosen architecture's digest: the other image's
    archive (sent by mistake) does not pass."""
    result = _run(two_architectures.args(architecture="aarch64"))  # archive: the amd64 one
    assert result.failed and result["reason"] == "altered", result.result


def test_a_release_without_the_trucks_architecture_is_refused(release):
    """A release made before arm64 (no ``architectures``) has only an amd64 image."""
    result = _run(release.args(architecture="aarch64", archive=None))
    assert result.failed and result["reason"] == "no_architecture", result.result
    assert "has no image for arm64 (it has amd64)" in result["msg"]
    assert "--platform linux/arm64" in result["msg"]
    assert "Nothing was sent or loaded" in result["msg"]


def test_an_unknown_architecture_is_refused_naming_the_known_ones(two_architectures):
    result = _run(two_architectures.args(architecture="riscv64"))
    assert result.failed and result["reason"] == "malformed", result.result
    assert "amd64 (x86_64), arm64 (aarch64)" in result["msg"]

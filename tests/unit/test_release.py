import hashlib
import json

import pytest

from inference_image.release import (
    ReleaseError,
    current_release,
    find_release,
    input_fingerprint,
    publish_release,
)

from .test_bundle import CARD, SMOKE


def test_fingerprint_is_stable_and_follows_data_and_settings(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    first = input_fingerprint([data], {"n_estimators": 300})
    assert first == input_fingerprint([data], {"n_estimators": 300})
    assert first["fingerprint"] != input_fingerprint([data], {"n_estimators": 301})["fingerprint"]
    data.write_text("a,b\n1,3\n")
    assert first["fingerprint"] != input_fingerprint([data], {"n_estimators": 300})["fingerprint"]


def test_publish_is_atomic_indexed_and_immutable(tmp_path):
    from inference_image.bundle import load_bundle, write_bundle
    from inference_image.schema import APS_FEATURES

    card = {**CARD, "metrics": {"out_of_fold": {"cost_ratio": 0.08}}}
    bundle = load_bundle(write_bundle(tmp_path / "b", b"{}", list(APS_FEATURES), card, SMOKE))

    def export(name: str, bundle_sha256: str):
        out = tmp_path / name
        out.mkdir()
        (out / "img.tar").write_bytes(b"tar")
        record = {"archive": "img.tar", "archive_sha256": "ab" * 32, "image": "x:1",
                  "image_id": "sha256:1", "archive_bytes": 3, "bundle_sha256": bundle_sha256,
                  "version": "1.2.3"}  # fmt: skip
        (out / "manifest.json").write_text(json.dumps(record))
        return out

    releases = tmp_path / "releases"
    fingerprint = {"fingerprint": "f" * 64}
    manifest = publish_release(releases, bundle.path, export("e1", bundle.sha256), [], fingerprint)
    assert manifest["version"] == "1.2.3" and manifest["cost_ratio"] == 0.08
    assert find_release(releases, "f" * 64) == manifest == current_release(releases)
    assert (releases / "1.2.3" / "bundle" / "SHA256SUMS").is_file()
    with pytest.raises(ReleaseError, match="immutable"):
        publish_release(releases, bundle.path, export("e2", bundle.sha256), [], fingerprint)
    with pytest.raises(ReleaseError, match=r"not .* export the image built from this bundle"):
        publish_release(releases, bundle.path, export("e3", "0" * 64), [], fingerprint)
    assert [p.name for p in releases.iterdir() if p.name.startswith(".")] == []


def _bundle_and_export(tmp_path, name: str = "e"):
    import hashlib

    from inference_image.bundle import load_bundle, write_bundle
    from inference_image.schema import APS_FEATURES

    card = {**CARD, "metrics": {"out_of_fold": {"cost_ratio": 0.08}}}
    bundle = load_bundle(write_bundle(tmp_path / "b", b"{}", list(APS_FEATURES), card, SMOKE))
    out = tmp_path / name
    out.mkdir()
    (out / "img.tar").write_bytes(b"tar")
    digest = hashlib.sha256(b"tar").hexdigest()
    (out / "img.tar.sha256").write_text(f"{digest}  img.tar\n")
    record = {"archive": "img.tar", "archive_sha256": digest, "image": "x:1",
              "image_id": "sha256:1", "archive_bytes": 3, "bundle_sha256": bundle.sha256,
              "version": "1.2.3"}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(record))
    return bundle, out


def test_publish_signs_a_manifest_that_covers_every_file(tmp_path):
    from inference_image import signing

    keys = signing.generate_key_pair(tmp_path / "keys")
    bundle, export = _bundle_and_export(tmp_path)
    releases = tmp_path / "releases"
    manifest = publish_release(
        releases, bundle.path, export, [], {"fingerprint": "f" * 64}, signing_key=keys.private_key
    )
    release = releases / "1.2.3"
    assert (
        signing.verify_manifest(release / "manifest.json", signing.load_public_key(keys.public_key))
        == keys.key_id
    )
    assert manifest["archive_sha256"] == hashlib.sha256(b"tar").hexdigest()
    assert set(manifest["files"]) == {
        "img.tar.sha256", "packages.json",
        "bundle/SHA256SUMS", "bundle/model.json", "bundle/schema.json",
        "bundle/model_card.json", "bundle/smoke_vectors.json",
    }  # fmt: skip
    assert manifest["bundle_sha256"] == bundle.sha256


def test_publish_with_a_missing_key_publishes_nothing(tmp_path):
    from inference_image.signing import SigningError

    bundle, export = _bundle_and_export(tmp_path)
    with pytest.raises(SigningError, match="not found"):
        publish_release(
            tmp_path / "r", bundle.path, export, [], {"fingerprint": "f" * 64},
            signing_key=tmp_path / "absent.key",
        )  # fmt: skip
    assert not (tmp_path / "r" / "1.2.3").exists()


def test_sign_release_turns_an_export_into_a_signed_release_once(tmp_path):
    import shutil

    from inference_image import signing
    from inference_image.release import sign_release

    keys = signing.generate_key_pair(tmp_path / "keys")
    bundle, export = _bundle_and_export(tmp_path)
    shutil.copytree(bundle.path, export / "bundle")
    first = sign_release(export, keys.private_key)
    assert first["changed"] and first["key_id"] == keys.key_id and first["version"] == "1.2.3"
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["image_id"] == "sha256:1" and manifest["archive_bytes"] == 3
    assert "bundle/model.json" in manifest["files"]
    assert sign_release(export, keys.private_key)["changed"] is False  # idempotent
    (export / "manifest.json.sig").unlink()
    (export / "img.tar").write_bytes(b"taR")  # one byte flipped: nothing is signed
    with pytest.raises(
        ReleaseError, match=r"does not match manifest\.json: the release was altered"
    ):
        sign_release(export, keys.private_key)

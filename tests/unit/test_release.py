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
        record = {"archive": "img.tar", "sha256": "ab" * 32, "image": "x:1", "image_id": "sha256:1",
                  "size_bytes": 3, "bundle_sha256": bundle_sha256}  # fmt: skip
        (out / "image.json").write_text(json.dumps(record))
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

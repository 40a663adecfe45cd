import json
import os

import pytest

from inference_image.bundle import BundleError, load_bundle, verify_bundle, write_bundle
from inference_image.schema import APS_FEATURES

CARD = {"version": "1.2.3", "threshold": 0.25}
SMOKE = [{"inputs": [None] * 170, "probability": 0.1, "label": "neg"}]


@pytest.fixture
def bundle_dir(tmp_path):
    return write_bundle(tmp_path / "bundle", b'{"model": 1}', list(APS_FEATURES), CARD, SMOKE)


def test_written_bundle_loads_and_is_read_only(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert bundle.version == "1.2.3"
    assert bundle.feature_names == APS_FEATURES
    assert bundle.label_for(0.25) == "pos" and bundle.label_for(0.2499) == "neg"
    assert len(bundle.sha256) == 64
    assert not os.access(bundle_dir / "model.json", os.W_OK) or os.geteuid() == 0
    assert oct((bundle_dir / "model.json").stat().st_mode & 0o777) == "0o444"


def test_bundles_are_immutable(bundle_dir):
    with pytest.raises(BundleError, match="immutable"):
        write_bundle(bundle_dir, b"{}", list(APS_FEATURES), CARD, SMOKE)


@pytest.mark.parametrize(
    "name", ["model.json", "schema.json", "model_card.json", "smoke_vectors.json"]
)
def test_a_tampered_file_is_refused(bundle_dir, name):
    target = bundle_dir / name
    os.chmod(target, 0o644)
    target.write_bytes(target.read_bytes() + b" ")
    with pytest.raises(BundleError, match=f"{name} fails its checksum"):
        load_bundle(bundle_dir)


def test_a_missing_file_or_sums_is_refused(bundle_dir, tmp_path):
    os.chmod(bundle_dir, 0o755)
    (bundle_dir / "smoke_vectors.json").unlink()
    with pytest.raises(BundleError, match="is missing"):
        verify_bundle(bundle_dir)
    with pytest.raises(BundleError, match="not a model bundle"):
        verify_bundle(tmp_path)


def test_digest_changes_with_content(tmp_path):
    first = write_bundle(tmp_path / "a", b"{}", list(APS_FEATURES), CARD, SMOKE)
    second = write_bundle(tmp_path / "b", b"{ }", list(APS_FEATURES), CARD, SMOKE)
    same = write_bundle(tmp_path / "c", b"{}", list(APS_FEATURES), CARD, SMOKE)
    assert verify_bundle(first) != verify_bundle(second)
    assert verify_bundle(first) == verify_bundle(same)


def test_malformed_metadata_is_refused(tmp_path):
    path = write_bundle(tmp_path / "x", b"{}", list(APS_FEATURES), {"threshold": 0.5}, SMOKE)
    with pytest.raises(BundleError, match="malformed metadata"):
        load_bundle(path)
    assert json.loads((path / "model_card.json").read_text()) == {"threshold": 0.5}

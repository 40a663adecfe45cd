"""Derived features and merged ensembles: what training fits is exactly what is served."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from inference_image.ensemble import merge_boosters
from inference_image.features import HISTOGRAM_GROUPS, DerivedFeatures, parse_recipe
from inference_image.predictor import NativePredictor, PredictorError
from inference_image.schema import APS_FEATURES
from inference_image.training import TrainingParams, fit, predict

from .aps_files import synthetic_aps

ALL = DerivedFeatures.from_recipe("missing,normalised,moments,totals")
AG = APS_FEATURES.index("ag_000")


def test_recipe_is_canonical_and_checked():
    assert ALL.recipe == "totals,moments,normalised,missing"
    assert parse_recipe("") == () and DerivedFeatures().width == len(APS_FEATURES)
    assert len(ALL.names()) == 7 + 14 + 70 + 1 == ALL.width - len(APS_FEATURES)
    with pytest.raises(ValueError, match="unknown derived feature sums"):
        parse_recipe("totals,sums")


def _row(**bins: list[float]) -> np.ndarray:
    row = np.full((1, len(APS_FEATURES)), 5.0, dtype=np.float32)
    for group, values in bins.items():
        start = APS_FEATURES.index(f"{group}_000")
        row[0, start : start + 10] = values
    return row


def test_histogram_statistics_of_one_row():
    ag = [1, 0, 0, 0, 0, 0, 0, 0, 0, 3]  # mass at bins 0 (1) and 9 (3)
    ay = [0] * 10  # an empty histogram: shares and moments are missing
    az = [np.nan] + [1] * 9  # a missing bin: every statistic of the group is missing
    row = _row(ag=ag, ay=ay, az=az)
    row[0, 0] = np.nan
    out = ALL.transform(row)[0]
    named = dict(zip(APS_FEATURES + tuple(ALL.names()), out.tolist(), strict=True))
    assert named["ag_total"] == 4 and named["ay_total"] == 0 and np.isnan(named["az_total"])
    assert named["ag_bin_mean"] == pytest.approx(6.75)
    assert named["ag_bin_std"] == pytest.approx(np.sqrt((1 * 6.75**2 + 3 * 2.25**2) / 4))
    assert named["ag_009_share"] == pytest.approx(0.75) and named["ag_001_share"] == 0
    assert np.isnan(named["ay_bin_mean"]) and np.isnan(named["ay_003_share"])
    assert np.isnan(named["az_bin_std"]) and np.isnan(named["az_005_share"])
    assert named["missing_count"] == 2  # aa_000 and az_000
    assert named["ba_total"] == 50 and named["ba_bin_mean"] == 4.5
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[: len(APS_FEATURES)], row[0])


def test_each_row_gets_the_same_bits_in_any_batch():
    features, _ = synthetic_aps(257, seed=4)
    batch = ALL.transform(features)
    assert batch.flags.c_contiguous and batch.shape == (257, ALL.width)
    for index in (0, 1, 100, 256):
        single = ALL.transform(features[index : index + 1])
        np.testing.assert_array_equal(single, batch[index : index + 1])


def test_no_recipe_leaves_the_rows_untouched():
    features, _ = synthetic_aps(3, seed=1)
    assert DerivedFeatures().transform(features) is features


@pytest.fixture(scope="module")
def data():
    features, labels = synthetic_aps(500, seed=8)
    return features, labels.astype(np.float32)


FAST = TrainingParams(n_estimators=12, max_depth=3, nthread=1)


def margins(booster: xgb.Booster, rows: np.ndarray) -> np.ndarray:
    return booster.predict(xgb.DMatrix(rows, missing=np.nan), output_margin=True)


def test_merged_ensemble_margin_is_the_mean_of_its_members(data):
    features, labels = data
    matrix = xgb.DMatrix(features, label=labels, missing=np.nan)
    members = [
        xgb.train({**FAST.booster_params(), "seed": seed}, matrix, num_boost_round=12)
        for seed in (1, 2, 3)
    ]
    merged = merge_boosters(members)
    assert merged.num_boosted_rounds() == 36
    expected = np.mean([margins(member, features) for member in members], axis=0)
    np.testing.assert_allclose(margins(merged, features), expected, rtol=0, atol=2e-5)
    assert merge_boosters(members[:1]) is members[0]


def test_bagged_fit_is_one_model_of_all_bags(data):
    features, labels = data
    booster = fit(features, labels, replace(FAST, bags=3))
    assert booster.num_boosted_rounds() == 3 * FAST.n_estimators
    again = fit(features, labels, replace(FAST, bags=3))
    assert booster.save_raw("json") == again.save_raw("json")


@pytest.mark.parametrize("recipe", ["totals,moments,missing", "totals,normalised"])
def test_predictor_serves_exactly_what_training_evaluated(data, tmp_path: Path, recipe):
    features, labels = data
    booster = fit(features, labels, replace(FAST, bags=2, derived_features=recipe))
    model_path = tmp_path / "model.json"
    model_path.write_bytes(bytes(booster.save_raw(raw_format="json")))
    predictor = NativePredictor(model_path, nthread=1)
    assert predictor.n_features == len(APS_FEATURES)  # the serving contract: raw inputs
    served = predictor.predict_proba(features)
    np.testing.assert_array_equal(served, predict(booster, features).astype(np.float32))
    for index in (0, 7, 499):
        single = predictor.predict_proba(np.ascontiguousarray(features[index : index + 1]))
        assert single[0] == served[index]


def test_predictor_refuses_a_recipe_that_does_not_fit_the_model(data, tmp_path: Path):
    features, labels = data
    booster = fit(features, labels, replace(FAST, derived_features="totals"))
    model = json.loads(bytes(booster.save_raw(raw_format="json")))
    model["learner"]["attributes"]["linkedge_derived_features"] = "totals,missing"
    model_path = tmp_path / "model.json"
    model_path.write_text(json.dumps(model))
    with pytest.raises(PredictorError, match="makes 178"):
        NativePredictor(model_path)
    assert len(HISTOGRAM_GROUPS) == 7

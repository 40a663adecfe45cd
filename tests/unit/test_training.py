from dataclasses import replace

import numpy as np
import pytest

from inference_image.cost import best_threshold, smoothed_threshold
from inference_image.training import (
    TrainingParams,
    out_of_fold_evaluation,
    stratified_folds,
    train_final,
)

from .aps_files import synthetic_aps

FAST = TrainingParams(n_estimators=20, max_depth=3, nthread=2, outer_folds=3, inner_folds=2)


@pytest.fixture(scope="module")
def data():
    features, labels = synthetic_aps(600, seed=3)
    return features, labels.astype(np.float32)


def test_folds_are_stratified_and_seeded():
    labels = np.array([1] * 10 + [0] * 90)
    folds = stratified_folds(labels, 5, seed=1)
    assert [int(labels[folds == fold].sum()) for fold in range(5)] == [2] * 5
    np.testing.assert_array_equal(folds, stratified_folds(labels, 5, seed=1))
    assert not np.array_equal(folds, stratified_folds(labels, 5, seed=2))


def test_too_few_positives_for_the_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="only 2 rows of the rarer class"):
        stratified_folds(np.array([1, 1] + [0] * 20), 5, seed=0)


def test_training_is_deterministic(data):
    features, labels = data
    first = train_final(features, labels, FAST)
    second = train_final(features, labels, FAST)
    assert first.booster.save_raw("json") == second.booster.save_raw("json")
    assert first.threshold == second.threshold


def test_threshold_never_sees_the_fold_it_scores(data):
    """Record every label vector the chooser is given; none may contain a scored row."""
    features, labels = data
    row_ids = np.arange(labels.size)
    seen_by_chooser: list[int] = []

    def recording_chooser(chooser_labels, probabilities):
        seen_by_chooser.append(chooser_labels.size)
        return best_threshold(chooser_labels, probabilities)

    result = out_of_fold_evaluation(features, labels, FAST, recording_chooser)
    assert len(seen_by_chooser) == FAST.outer_folds
    for fold, seen in zip(result.folds, seen_by_chooser, strict=True):
        assert np.intersect1d(fold.threshold_rows, fold.scored_rows).size == 0
        assert seen == fold.threshold_rows.size  # the chooser saw the training part only
    scored = np.concatenate([fold.scored_rows for fold in result.folds])
    np.testing.assert_array_equal(np.sort(scored), row_ids)  # every row scored exactly once


def test_out_of_fold_report_matches_its_predictions(data):
    features, labels = data
    result = out_of_fold_evaluation(features, labels, FAST)
    fn = int(np.sum((labels == 1) & (result.predictions == 0)))
    fp = int(np.sum((labels == 0) & (result.predictions == 1)))
    assert result.report.cost == 10 * fp + 500 * fn
    assert result.report.cost_ratio < 0.5  # the synthetic rule is learnable


def test_model_card_carries_the_repeated_estimate(data, tmp_path):
    from inference_image.train_bundle import train_to_bundle

    from .aps_files import write_aps_file

    features, labels = data
    data_dir = tmp_path / "aps"
    data_dir.mkdir()
    write_aps_file(data_dir / "aps_failure_training_set.csv", features, labels)
    params = replace(FAST, repetitions=2, derived_features="totals", bags=2)
    card = train_to_bundle(data_dir, tmp_path / "bundle", params).bundle.card
    repeated = card["metrics"]["repeated_cv"]
    assert (repeated["repetitions"], repeated["outer_folds"]) == (2, FAST.outer_folds)
    assert len(repeated["per_repetition"]) == 2
    ratios = [rep["cost_ratio"] for rep in repeated["per_repetition"]]
    assert repeated["cost_ratio_mean"] == pytest.approx(np.mean(ratios), abs=1e-6)
    assert repeated["cost_ratio_std"] == pytest.approx(np.std(ratios, ddof=1), abs=1e-6)
    assert len(repeated["fold_plan_sha256"]) == 64 and repeated["seconds"] >= 0
    # The original fields keep their shape: out_of_fold is repetition 0.
    first = repeated["per_repetition"][0]
    out_of_fold = card["metrics"]["out_of_fold"]
    assert out_of_fold["cost_ratio"] == first["cost_ratio"]
    assert out_of_fold["fold_thresholds"] == first["fold_thresholds"]
    assert card["features"]["count"] == 170
    assert card["features"]["derived"]["names"] == [
        f"{group}_total" for group in ("ag", "ay", "az", "ba", "cn", "cs", "ee")
    ]
    assert card["framework"]["trees"] == 2 * FAST.n_estimators
    assert card["parameters"]["threshold_smoothing"] == FAST.threshold_smoothing


def test_threshold_smoothing_zero_is_the_exact_cheapest_cut():
    assert TrainingParams(threshold_smoothing=0).chooser() is best_threshold
    labels = np.array([1] * 5 + [0] * 200)
    scores = np.concatenate([np.linspace(0.6, 0.9, 5), np.linspace(0.0, 0.5, 200)])
    assert 0.5 < best_threshold(labels, scores) <= 0.6
    # Blurred at 0.8 log-odds, the positives just above the negatives are not sure to stay
    # there: the default cut leans towards catching them (a miss costs 50 false alarms).
    smoothed = TrainingParams().chooser()(labels, scores)
    assert smoothed == smoothed_threshold(labels, scores, 0.8) < best_threshold(labels, scores)

"""Repeated nested CV: seeded fold plans, no leakage into the threshold, the card's figures."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from inference_image import training
from inference_image.cost import best_threshold
from inference_image.evaluation import CVPlan, repeated_nested_cv, t_quantile_975
from inference_image.training import TrainingParams, out_of_fold_evaluation

from .aps_files import synthetic_aps

FAST = TrainingParams(
    n_estimators=15, max_depth=3, nthread=2, repetitions=3, outer_folds=3, inner_folds=2
)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    features, labels = synthetic_aps(450, seed=5)
    return features, labels.astype(np.float32)


@pytest.fixture(scope="module")
def estimate(data):
    features, labels = data
    return repeated_nested_cv(features, labels, FAST, "synthetic")


def test_fold_plan_is_seeded_and_differs_between_repetitions(data):
    _, labels = data
    plan = CVPlan(repetitions=3, outer_folds=4, seed=7)
    for rep in range(3):
        np.testing.assert_array_equal(plan.assignment(labels, rep), plan.assignment(labels, rep))
    assert not np.array_equal(plan.assignment(labels, 0), plan.assignment(labels, 1))
    # Repetition 0 is the single nested CV of the seed; each keeps the classes spread evenly.
    np.testing.assert_array_equal(
        plan.assignment(labels, 0), training.stratified_folds(labels, 4, seed=7)
    )
    positives = [int(labels[plan.assignment(labels, 2) == fold].sum()) for fold in range(4)]
    assert max(positives) - min(positives) <= 1


def test_fold_plan_digest_names_data_plan_and_assignments(data):
    _, labels = data
    plan = CVPlan(3, 4, 7)
    digest = plan.digest(labels, "data-a")
    assert digest == CVPlan(3, 4, 7).digest(labels, "data-a")
    assert digest != plan.digest(labels, "data-b")
    assert digest != CVPlan(3, 4, 8).digest(labels, "data-a")
    assert digest != CVPlan(2, 4, 7).digest(labels, "data-a")
    assert digest != plan.digest(labels[::-1].copy(), "data-a")


def test_repetition_zero_is_the_single_nested_cv_of_the_seed(data, estimate):
    features, labels = data
    single = out_of_fold_evaluation(features, labels, FAST)
    first = estimate.repetitions[0].result
    assert first.report == single.report
    assert [fold.threshold for fold in first.folds] == [fold.threshold for fold in single.folds]
    np.testing.assert_array_equal(first.probabilities, single.probabilities)


def test_estimate_is_deterministic_whatever_the_threads(data, estimate):
    features, labels = data
    again = repeated_nested_cv(features, labels, FAST, "synthetic", workers=1)
    assert again.digest == estimate.digest
    np.testing.assert_array_equal(again.ratios, estimate.ratios)
    for one, other in zip(again.repetitions, estimate.repetitions, strict=True):
        assert [f.threshold for f in one.result.folds] == [f.threshold for f in other.result.folds]


def test_threshold_is_chosen_from_training_rows_only(data, monkeypatch):
    """Every row the threshold's inner CV sees, for every (repetition, fold), carries an id;
    none may be a row that fold scores."""
    features, labels = data
    tagged = features.copy()
    tagged[:, 1] = np.arange(labels.size)  # a row id the model may also use: harmless
    seen: list[frozenset[int]] = []
    lock = threading.Lock()
    original = training.cross_val_probabilities

    def recording(rows, row_labels, params, n_folds, seed):
        with lock:
            seen.append(frozenset(rows[:, 1].astype(int).tolist()))
        return original(rows, row_labels, params, n_folds, seed)

    monkeypatch.setattr(training, "cross_val_probabilities", recording)
    result = repeated_nested_cv(tagged, labels, FAST, "tagged")
    folds = [fold for rep in result.repetitions for fold in rep.result.folds]
    assert len(seen) == len(folds) == FAST.repetitions * FAST.outer_folds
    training_parts = {frozenset(fold.threshold_rows.tolist()) for fold in folds}
    assert set(seen) == training_parts  # each threshold saw exactly one fold's training part
    for fold in folds:
        assert np.intersect1d(fold.threshold_rows, fold.scored_rows).size == 0
    for rep in result.repetitions:  # and every row is scored exactly once per repetition
        scored = np.concatenate([fold.scored_rows for fold in rep.result.folds])
        np.testing.assert_array_equal(np.sort(scored), np.arange(labels.size))


def test_pooled_threshold_sees_each_training_row_once_per_inner_split(data):
    features, labels = data
    sizes: list[int] = []

    def recording_chooser(chooser_labels, probabilities):
        sizes.append(chooser_labels.size)
        return best_threshold(chooser_labels, probabilities)

    params = replace(FAST, repetitions=1, threshold_repeats=3)
    result = repeated_nested_cv(features, labels, params, "x", chooser=recording_chooser)
    expected = sorted(3 * fold.threshold_rows.size for fold in result.repetitions[0].result.folds)
    assert sorted(sizes) == expected


def test_card_reports_every_repetition_with_mean_and_spread(estimate):
    card = estimate.card()
    ratios = [rep["cost_ratio"] for rep in card["per_repetition"]]
    assert len(ratios) == FAST.repetitions
    assert card["cost_ratio_mean"] == pytest.approx(np.mean(ratios), abs=1e-6)
    assert card["cost_ratio_std"] == pytest.approx(np.std(ratios, ddof=1), abs=1e-6)
    low, high = card["cost_ratio_ci95"]
    assert low <= card["cost_ratio_mean"] <= high
    assert (card["repetitions"], card["outer_folds"], card["seed"]) == (3, 3, FAST.seed)
    assert card["fold_plan_sha256"] == estimate.digest
    for rep in card["per_repetition"]:
        assert rep["cost"] == 10 * rep["false_positives"] + 500 * rep["false_negatives"]
        assert len(rep["fold_thresholds"]) == len(rep["fold_cost_ratios"]) == FAST.outer_folds
    assert [rep["seed"] for rep in card["per_repetition"]] == [42, 1042, 2042]


def test_t_quantile_matches_the_table():
    for df, table in ((4, 2.776), (9, 2.262), (24, 2.064), (1000, 1.962)):
        assert t_quantile_975(df) == pytest.approx(table, abs=0.01)

import numpy as np
import pytest

from inference_image.cost import best_threshold, cost_report


def test_official_cost_and_ratio():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    predicted = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    report = cost_report(labels, predicted)
    assert (report.true_positives, report.false_negatives) == (3, 1)
    assert (report.false_positives, report.true_negatives) == (2, 4)
    assert report.cost == 10 * 2 + 500 * 1
    assert report.cost_ratio == pytest.approx(520 / (500 * 4))


def test_all_negative_model_has_ratio_one():
    labels = np.array([1, 0, 0, 1, 0])
    assert cost_report(labels, np.zeros(5)).cost_ratio == 1.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        cost_report(np.zeros(3), np.zeros(4))


def test_threshold_minimises_cost_and_sits_between_scores():
    # One positive scores low (0.2): catching it costs 2 false positives (20) < a miss (500).
    labels = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05, 0.01])
    threshold = best_threshold(labels, scores)
    assert 0.1 < threshold < 0.2
    assert cost_report(labels, scores >= threshold).cost == 20


def test_threshold_with_ties_is_realisable():
    labels = np.array([1, 0, 0, 0])
    scores = np.array([0.5, 0.5, 0.5, 0.1])
    threshold = best_threshold(labels, scores)
    predicted = scores >= threshold
    assert predicted.tolist() == [True, True, True, False]


def test_threshold_when_nothing_should_be_positive():
    labels = np.zeros(5)
    scores = np.linspace(0.1, 0.9, 5)
    assert not np.any(scores >= best_threshold(labels, scores))

import numpy as np
import pytest

from inference_image.cost import best_threshold, cost_report, smoothed_threshold


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


def realised_cost(labels: np.ndarray, scores: np.ndarray, threshold: float) -> int:
    return cost_report(labels, scores >= threshold).cost


def cheapest_realisable_cost(labels: np.ndarray, scores: np.ndarray) -> int:
    """Brute force over every prediction `score >= t` can give: t at each distinct score, or
    above them all (nothing positive)."""
    candidates = [*np.unique(scores).tolist(), np.inf]
    return min(realised_cost(labels, scores, t) for t in candidates)


def test_threshold_never_cuts_between_tied_scores():
    # On paper the cheapest cut (cost 10) separates the positive from the 60 negatives tied with
    # it at 0.5; no threshold can: >= 0.5 also flags them all (610), above 0.5 misses the
    # positive. The best realisable choice is flagging nothing above 0.9: 500.
    labels = np.array([0, 1] + [0] * 60 + [0, 0, 0])
    scores = np.array([0.9] + [0.5] * 61 + [0.1, 0.1, 0.1])
    threshold = best_threshold(labels, scores)
    assert cheapest_realisable_cost(labels, scores) == 500
    assert realised_cost(labels, scores, threshold) == 500
    assert not np.any(scores >= threshold)


def test_threshold_between_adjacent_floats_is_realisable():
    # The midpoint of two neighbouring doubles rounds to one of them: here to the lower one,
    # which would flag the five negatives too.
    high = float(np.nextafter(0.5, 1.0))
    labels = np.array([1, 0, 0, 0, 0, 0])
    scores = np.array([high] + [0.5] * 5)
    threshold = best_threshold(labels, scores)
    assert (scores >= threshold).tolist() == [True] + [False] * 5
    assert realised_cost(labels, scores, threshold) == 0


def test_threshold_realises_the_cheapest_prediction_with_many_ties():
    # Rare positives among many tied negatives (a miss costs 50 false alarms), as in APS.
    rng = np.random.default_rng(2024)
    for _ in range(500):
        n = int(rng.integers(1, 300))
        scores = rng.integers(0, 6, n) / 5  # six distinct scores: ties everywhere
        labels = rng.random(n) < rng.uniform(0.001, 0.1)
        threshold = best_threshold(labels, scores)
        assert realised_cost(labels, scores, threshold) == cheapest_realisable_cost(
            labels, scores
        ), (scores.tolist(), labels.astype(int).tolist(), threshold)


def _log_odds_to_probability(values) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(values, dtype=np.float64)))


def test_smoothed_threshold_cuts_in_the_gap_between_separated_classes():
    rng = np.random.default_rng(3)
    positives = _log_odds_to_probability(rng.normal(3, 0.3, 40))
    negatives = _log_odds_to_probability(rng.normal(-6, 0.5, 2000))
    scores = np.concatenate([positives, negatives])
    labels = np.concatenate([np.ones(40), np.zeros(2000)])
    threshold = smoothed_threshold(labels, scores, 0.8)
    assert negatives.max() < threshold < positives.min()
    assert realised_cost(labels, scores, threshold) == 0
    assert threshold == smoothed_threshold(labels, scores, 0.8)  # deterministic


def test_smoothed_threshold_does_not_chase_one_low_positive():
    # 30 negatives score above the lowest positive: catching it costs 300 < 500, so the exact
    # cut flags them all. Blurred, that lone positive is as likely to sit among the 3,000
    # negatives below it: the smoothed cut stays above the crowd of negatives.
    rng = np.random.default_rng(5)
    negatives = rng.normal(-6, 1.0, 3000)
    crowd_top = np.sort(negatives)[-31]
    log_odds = np.concatenate([rng.normal(2, 0.5, 60), [crowd_top], negatives])
    labels = np.concatenate([np.ones(61), np.zeros(3000)])
    scores = _log_odds_to_probability(log_odds)
    assert best_threshold(labels, scores) <= scores[60]  # the exact cut catches it
    assert smoothed_threshold(labels, scores, 0.8) > scores[60]


def test_smoothed_threshold_flags_nothing_without_positives():
    scores = np.linspace(0.1, 0.9, 50)
    assert not np.any(scores >= smoothed_threshold(np.zeros(50), scores, 0.8))


def test_smoothed_threshold_refuses_no_rows_and_a_bad_scale():
    with pytest.raises(ValueError, match="no rows"):
        smoothed_threshold(np.array([]), np.array([]), 0.8)
    with pytest.raises(ValueError, match="must be positive"):
        smoothed_threshold(np.array([1, 0]), np.array([0.9, 0.1]), 0.0)

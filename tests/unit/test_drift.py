"""Drift on the truck: the bundle's training reference, the sliding window, the comparison.

On the real APS training sample: half of it is the reference, the other half what a truck
sees; one feature is then shifted, or made missing, as a failing sensor would.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from inference_image.data import find_training_file, load_aps_csv
from inference_image.drift import (
    DriftReference,
    DriftReferenceError,
    bin_rows,
    build_reference,
    compare,
)
from inference_image.schema import APS_FEATURES
from inference_image.serving.drift_window import SLOTS, DriftWindow

APS_DIR = Path(__file__).resolve().parents[3] / "shared" / "aps"
SHIFTED = "ag_005"
NO_PROBABILITIES = np.zeros(
    0
)  # drift counts rows and labels, not probabilities  # a histogram bin of a well-populated feature


@pytest.fixture(scope="module")
def halves() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not APS_DIR.is_dir():
        pytest.skip(f"the APS sample is not at {APS_DIR}")
    data = load_aps_csv(find_training_file(APS_DIR), require_labels=True)
    rows = data.features.astype(np.float64)
    order = np.random.default_rng(3).permutation(len(rows))
    half = len(rows) // 2
    return rows[order[:half]], rows[order[half:]], data.labels[order[:half]]


@pytest.fixture(scope="module")
def reference(halves) -> DriftReference:
    train, _, labels = halves
    return build_reference(train, APS_FEATURES, labels == 1, labels)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_reference_round_trips_through_its_json(reference: DriftReference) -> None:
    again = DriftReference.from_dict(reference.as_dict(), APS_FEATURES)
    assert again == reference
    assert 0 < reference.positive_rate < 0.1 and reference.rows > 3000
    for edges, shares in zip(reference.edges, reference.shares, strict=True):
        assert len(shares) == len(edges) + 1
        assert abs(sum(shares) - 1) < 1e-3 or sum(shares) == 0  # 0: never present


def test_a_reference_for_other_features_or_with_bad_bins_is_refused(reference) -> None:
    payload = reference.as_dict()
    with pytest.raises(DriftReferenceError, match="schema"):
        DriftReference.from_dict(payload, list(reversed(APS_FEATURES)))
    payload["features"][0]["shares"] = payload["features"][0]["shares"][:-1]
    with pytest.raises(DriftReferenceError, match="shares"):
        DriftReference.from_dict(payload, APS_FEATURES)
    with pytest.raises(DriftReferenceError, match="malformed"):
        DriftReference.from_dict({"format": 1}, APS_FEATURES)


def window_of(reference: DriftReference, rows: np.ndarray, **kwargs) -> DriftWindow:
    window = DriftWindow(reference, 3600, clock=Clock(), **kwargs)
    for start in range(0, len(rows), 7):  # requests of a few rows, as trucks send them
        batch = rows[start : start + 7]
        window.observe(batch, NO_PROBABILITIES, np.zeros(len(batch), dtype=bool))
    return window


def test_the_same_distribution_shows_no_drift(reference, halves) -> None:
    _, seen, _ = halves
    summary = window_of(reference, seen).summary()
    assert summary.rows == len(seen)
    assert summary.psi_max is not None and summary.psi_max < 0.1, summary.features_over(0.1)
    assert max(abs(v) for v in summary.missing_rate_change.values()) < 0.05


def test_a_shifted_feature_is_the_one_over_the_threshold(reference, halves) -> None:
    _, seen, _ = halves
    shifted = seen.copy()
    column = APS_FEATURES.index(SHIFTED)
    shifted[:, column] = shifted[:, column] * 3 + 1000
    summary = window_of(reference, shifted).summary()
    assert summary.features_over(0.25) == [SHIFTED], summary.features_over(0.25)
    assert summary.psi[SHIFTED] > 0.25 > max(v for k, v in summary.psi.items() if k != SHIFTED)


def test_a_silent_sensor_shows_as_a_missing_rate_change(reference, halves) -> None:
    _, seen, _ = halves
    silent = seen.copy()
    column = APS_FEATURES.index(SHIFTED)
    silent[:, column] = np.nan
    summary = window_of(reference, silent).summary()
    expected = 1 - reference.missing_rates[column]
    assert summary.missing_rate_change[SHIFTED] == pytest.approx(expected, abs=1e-6)
    assert SHIFTED not in summary.psi  # no values left to compare


def test_the_positive_rate_change_is_measured(reference, halves) -> None:
    _, seen, _ = halves
    window = DriftWindow(reference, 3600, clock=Clock())
    window.observe(seen[:1000], NO_PROBABILITIES, np.arange(1000) < 200)
    summary = window.summary()
    assert summary.positive_rate == 0.2
    assert summary.positive_rate_change == pytest.approx(0.2 - reference.positive_rate)


def test_rows_leave_the_window_when_their_slot_is_older_than_it(reference, halves) -> None:
    _, seen, _ = halves
    clock = Clock()
    window = DriftWindow(reference, 3600, clock=clock)
    window.observe(seen[:100], NO_PROBABILITIES, np.zeros(100, dtype=bool))
    clock.now += 3600 / SLOTS * (SLOTS - 1)
    window.observe(seen[100:150], NO_PROBABILITIES, np.zeros(50, dtype=bool))
    assert window.summary().rows == 150
    clock.now += 3600 / SLOTS
    assert window.summary().rows == 50  # the first slot left the window
    clock.now += 3600
    empty = window.summary()
    assert empty.rows == 0 and empty.psi == {} and empty.positive_rate is None


def _observe_in_a_child(window: DriftWindow, rows: np.ndarray) -> None:
    window.observe(rows, NO_PROBABILITIES, np.ones(len(rows), dtype=bool))


def test_every_worker_s_rows_are_summed_from_the_metrics_directory(
    reference, halves, tmp_path
) -> None:
    """Gunicorn workers are processes: each counts into its own file, any one reads all."""
    _, seen, _ = halves
    window = DriftWindow(reference, 3600, directory=tmp_path)
    window.observe(seen[:300], NO_PROBABILITIES, np.zeros(300, dtype=bool))
    context = multiprocessing.get_context("fork")
    for part in (seen[300:500], seen[500:600]):
        child = context.Process(target=_observe_in_a_child, args=(window, part))
        child.start()
        child.join(30)
        assert child.exitcode == 0
    files = sorted(path.name for path in tmp_path.iterdir())
    assert len(files) == 3 and f"drift-{os.getpid()}.counts" in files, files
    summary = window.summary()
    assert summary.rows == 600 and summary.positive_rate == pytest.approx(300 / 600)


def test_compare_of_an_empty_window_reports_nothing(reference) -> None:
    counts = np.zeros((len(APS_FEATURES), reference.max_bins + 1), dtype=np.int64)
    summary = compare(reference, counts, 0, 0)
    assert summary.rows == 0 and summary.psi_max is None and summary.missing_rate_change == {}


def test_small_and_large_batches_are_binned_alike(reference, halves) -> None:
    _, seen, _ = halves
    edges = reference.padded_edges()
    batch = bin_rows(seen[:50], edges)
    one_by_one = np.concatenate([bin_rows(seen[index : index + 1], edges) for index in range(50)])
    assert (batch == one_by_one).all()
    assert (batch[np.isnan(seen[:50])] == edges.shape[1] + 1).all()

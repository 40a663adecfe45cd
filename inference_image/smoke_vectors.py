"""Pick smoke vectors: real rows (both classes, with missing values) plus edge cases,
with the outputs the trained model gives them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def select_rows(labels: np.ndarray, features: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Up to `count` row indices: a third positives, the rest negatives, missing values included."""
    rng = np.random.default_rng(seed)
    positives = np.flatnonzero(labels == 1)
    negatives = np.flatnonzero(labels == 0)
    with_missing = np.isnan(features).any(axis=1)
    n_pos = min(positives.size, count // 3)
    chosen_pos = rng.choice(positives, n_pos, replace=False) if n_pos else np.empty(0, int)
    # Prefer negatives with missing values for half of them: the path most likely to break.
    neg_missing = negatives[with_missing[negatives]]
    n_neg = count - n_pos
    n_neg_missing = min(neg_missing.size, n_neg // 2)
    chosen_missing = rng.choice(neg_missing, n_neg_missing, replace=False)
    rest = np.setdiff1d(negatives, chosen_missing)
    chosen_rest = rng.choice(rest, min(rest.size, n_neg - n_neg_missing), replace=False)
    return np.sort(np.concatenate([chosen_pos, chosen_missing, chosen_rest]).astype(int))


def edge_rows(n_features: int) -> np.ndarray:
    """All missing, all zero, and very large values."""
    return np.stack(
        [
            np.full(n_features, np.nan, dtype=np.float32),
            np.zeros(n_features, dtype=np.float32),
            np.full(n_features, 3.0e9, dtype=np.float32),
        ]
    )


def to_json_inputs(row: np.ndarray) -> list[float | None]:
    return [None if math.isnan(value) else float(value) for value in row.tolist()]


def build_smoke_vectors(
    rows: np.ndarray, probabilities: np.ndarray, threshold: float
) -> list[dict[str, Any]]:
    return [
        {
            "inputs": to_json_inputs(row),
            "probability": float(probability),
            "label": "pos" if probability >= threshold else "neg",
        }
        for row, probability in zip(rows, probabilities.astype(np.float32), strict=True)
    ]

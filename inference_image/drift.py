"""Drift: the training reference a bundle carries and the comparison a truck makes with it.

The reference (``reference.json`` in the bundle) holds, per feature, quantile bin edges of
the training rows and the share of non-missing training values in each bin, the feature's
missing rate, and the model's predicted-positive rate on those rows. A truck counts the rows it is
asked about into the same bins over a sliding window and compares:

- PSI per feature, ``sum((q - p) * ln(q / p))`` over the bins (p: reference shares, q: the
  window's, both floored at ``PSI_FLOOR``), from non-missing values only: 0 for the same
  distribution; above 0.25 is the usual "significant shift";
- the change of each feature's missing rate (window minus reference);
- the change of the predicted-positive rate.

Only these summaries leave the truck (as Prometheus metrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

REFERENCE_FORMAT = 1
DEFAULT_BINS = 10
PSI_FLOOR = 1e-4  # a bin share of 0 would make PSI infinite
# Fewer non-missing values than this in the window: no PSI for the feature (too noisy).
MIN_VALUES_FOR_PSI = 100
SMALL_BATCH = 2  # bin_rows: up to this many rows, one 3-D comparison is the faster way


class DriftReferenceError(ValueError):
    """A bundle's drift reference is malformed."""


@dataclass(frozen=True)
class DriftReference:
    """What the training rows looked like, binned as a truck will bin what it sees."""

    features: tuple[str, ...]
    edges: tuple[tuple[float, ...], ...]  # per feature, ascending; len(edges) + 1 bins
    shares: tuple[tuple[float, ...], ...]  # per feature, share of non-missing values per bin
    missing_rates: tuple[float, ...]
    positive_rate: float  # the model's predicted-positive rate on the reference rows
    label_positive_rate: float | None
    rows: int

    @property
    def max_bins(self) -> int:
        return max((len(edges) + 1 for edges in self.edges), default=1)

    def padded_edges(self) -> np.ndarray:
        """(features, max_bins - 1) float64, +inf where a feature has fewer edges."""
        padded = np.full((len(self.features), self.max_bins - 1), np.inf)
        for index, edges in enumerate(self.edges):
            padded[index, : len(edges)] = edges
        return padded

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT,
            "rows": self.rows,
            "positive_rate": self.positive_rate,
            "label_positive_rate": self.label_positive_rate,
            "binning": "quantiles of the non-missing training values; bin i holds values with "
            "exactly i edges below them",
            "features": [
                {"name": name, "edges": list(edges), "shares": list(shares), "missing_rate": rate}
                for name, edges, shares, rate in zip(
                    self.features, self.edges, self.shares, self.missing_rates, strict=True
                )
            ],
        }

    @classmethod
    def from_dict(cls, payload: Any, feature_names: Sequence[str]) -> DriftReference:
        """The reference of a bundle whose schema lists FEATURE_NAMES, or DriftReferenceError."""
        try:
            if payload["format"] != REFERENCE_FORMAT:
                raise DriftReferenceError(f"format {payload['format']!r} is not {REFERENCE_FORMAT}")
            features = payload["features"]
            names = tuple(str(feature["name"]) for feature in features)
            if names != tuple(feature_names):
                raise DriftReferenceError(
                    "its features are not the schema's, in the schema's order"
                )
            edges = tuple(tuple(float(edge) for edge in feature["edges"]) for feature in features)
            shares = tuple(tuple(float(s) for s in feature["shares"]) for feature in features)
            for name, feature_edges, feature_shares in zip(names, edges, shares, strict=True):
                if len(feature_shares) != len(feature_edges) + 1:
                    raise DriftReferenceError(
                        f"{name}: {len(feature_edges)} edges need {len(feature_edges) + 1} shares"
                    )
                if list(feature_edges) != sorted(set(feature_edges)):
                    raise DriftReferenceError(f"{name}: the edges are not strictly ascending")
            return cls(
                features=names,
                edges=edges,
                shares=shares,
                missing_rates=tuple(float(feature["missing_rate"]) for feature in features),
                positive_rate=float(payload["positive_rate"]),
                label_positive_rate=(
                    None
                    if payload.get("label_positive_rate") is None
                    else float(payload["label_positive_rate"])
                ),
                rows=int(payload["rows"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DriftReferenceError):
                raise
            raise DriftReferenceError(f"malformed drift reference: {exc!r}") from exc


def bin_rows(rows: np.ndarray, padded_edges: np.ndarray) -> np.ndarray:
    """(rows, features) bin indices: the number of a feature's edges below the value, or
    ``padded_edges.shape[1] + 1`` (the missing slot) for NaN."""
    values = np.asarray(rows)
    if len(values) <= SMALL_BATCH:  # one comparison of every value with every edge
        bins = (values[:, :, None] > padded_edges[None, :, :]).sum(axis=2)
    else:  # one comparison per edge column: far fewer passes over a large batch
        bins = np.zeros(values.shape, dtype=np.int64)
        for column in padded_edges.T:
            bins += values > column
    bins[np.isnan(values)] = padded_edges.shape[1] + 1
    return bins


def build_reference(
    rows: np.ndarray,
    feature_names: Sequence[str],
    predicted_positive: np.ndarray,
    labels: np.ndarray | None = None,
    bins: int = DEFAULT_BINS,
) -> DriftReference:
    """The reference of ROWS (NaN = missing) as the model (PREDICTED_POSITIVE) saw them."""
    values = np.asarray(rows, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(feature_names) or not len(values):
        raise DriftReferenceError(f"rows of shape {values.shape} for {len(feature_names)} features")
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    all_edges: list[tuple[float, ...]] = []
    all_shares: list[tuple[float, ...]] = []
    for column in values.T:
        present = column[~np.isnan(column)]
        if not len(present):
            all_edges.append(())
            all_shares.append((0.0,))
            continue
        edges = np.unique(np.quantile(present, quantiles, method="lower"))
        counts = np.bincount(
            (present[:, None] > edges[None, :]).sum(axis=1), minlength=len(edges) + 1
        )
        all_edges.append(tuple(float(edge) for edge in edges))
        all_shares.append(tuple(round(float(c) / len(present), 6) for c in counts))
    return DriftReference(
        features=tuple(feature_names),
        edges=tuple(all_edges),
        shares=tuple(all_shares),
        missing_rates=tuple(round(float(r), 6) for r in np.isnan(values).mean(axis=0)),
        positive_rate=round(float(np.mean(predicted_positive)), 6),
        label_positive_rate=None if labels is None else round(float(np.mean(labels)), 6),
        rows=len(values),
    )


@dataclass(frozen=True)
class DriftSummary:
    """A window compared with the reference."""

    rows: int
    positive_rate: float | None  # None: an empty window
    positive_rate_change: float | None
    psi: dict[str, float]  # only features with MIN_VALUES_FOR_PSI values in the window
    missing_rate_change: dict[str, float]  # empty for an empty window

    @property
    def psi_max(self) -> float | None:
        return max(self.psi.values()) if self.psi else None

    def features_over(self, threshold: float) -> list[str]:
        return sorted(name for name, value in self.psi.items() if value > threshold)


def psi(reference_shares: Sequence[float], counts: np.ndarray) -> float:
    """Population stability index of COUNTS (per bin) against REFERENCE_SHARES."""
    expected = np.maximum(np.asarray(reference_shares, dtype=np.float64), PSI_FLOOR)
    actual = np.maximum(counts / max(int(counts.sum()), 1), PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def compare(
    reference: DriftReference, bin_counts: np.ndarray, rows: int, positives: int
) -> DriftSummary:
    """BIN_COUNTS (features, max_bins + 1: the value bins, then the missing slot) of ROWS rows,
    POSITIVES of them predicted positive, against the reference."""
    if rows <= 0:
        return DriftSummary(0, None, None, {}, {})
    psi_values: dict[str, float] = {}
    missing_changes: dict[str, float] = {}
    for index, name in enumerate(reference.features):
        width = len(reference.edges[index]) + 1
        values = bin_counts[index, :width]
        missing = int(bin_counts[index, -1])
        missing_changes[name] = round(missing / rows - reference.missing_rates[index], 6)
        if int(values.sum()) >= MIN_VALUES_FOR_PSI and width > 1:
            value = psi(reference.shares[index], values)
            psi_values[name] = round(value, 6) if math.isfinite(value) else value
    rate = positives / rows
    return DriftSummary(
        rows=rows,
        positive_rate=round(rate, 6),
        positive_rate_change=round(rate - reference.positive_rate, 6),
        psi=psi_values,
        missing_rate_change=missing_changes,
    )

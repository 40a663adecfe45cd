"""Features derived from the 170 raw APS inputs, computed identically in training and serving.

Seven APS sensors are histograms of ten bins each (``ag_000`` ... ``ag_009`` and the groups
``ay``, ``az``, ``ba``, ``cn``, ``cs``, ``ee``). A recipe names the statistics to append to the
raw row, in this fixed order:

``totals``      per group, the sum of its ten bins
``moments``     per group, the mean and standard deviation of the bin index weighted by the
                bin counts (where in the histogram the mass sits)
``normalised``  per group, each bin divided by the group's total
``missing``     per row, how many of the 170 raw values are missing

A statistic is missing (NaN) when a bin it needs is missing or its total is zero. The sums are
exact (float64 over integer-valued float32 inputs), so the result does not depend on how many
rows are transformed at once: training and the served model see the same bits.

Only NumPy is needed: the serving image imports this module through the predictor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .schema import APS_FEATURES

HISTOGRAM_GROUPS: tuple[str, ...] = ("ag", "ay", "az", "ba", "cn", "cs", "ee")
BINS = 10
STATISTICS: tuple[str, ...] = ("totals", "moments", "normalised", "missing")
RAW_WIDTH = len(APS_FEATURES)
# The model attribute (in model.json) naming the recipe a booster was trained with.
MODEL_ATTRIBUTE = "linkedge_derived_features"


def _group_columns() -> np.ndarray:
    columns = []
    for group in HISTOGRAM_GROUPS:
        start = APS_FEATURES.index(f"{group}_000")
        names = APS_FEATURES[start : start + BINS]
        if names != tuple(f"{group}_{index:03d}" for index in range(BINS)):
            raise AssertionError(f"histogram group {group} is not {BINS} adjacent columns")
        columns.extend(range(start, start + BINS))
    return np.array(columns, dtype=np.intp)


HISTOGRAM_COLUMNS = _group_columns()
_BIN_INDEX = np.arange(BINS, dtype=np.float64)


def _moments(bins: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Mean and standard deviation of the bin index, per group: (n, 2 x groups).

    Both sums are exact before the one division, so every row gets the same bits whatever
    the batch it is in."""
    first = (bins * _BIN_INDEX).sum(axis=2)
    second = (bins * _BIN_INDEX**2).sum(axis=2)
    mean = first / totals
    spread = np.sqrt(np.maximum(second / totals - mean**2, 0.0))
    moments = np.stack([mean, spread], axis=2).reshape(len(bins), -1)
    return np.where(np.isfinite(moments), moments, np.nan)


def parse_recipe(text: str) -> tuple[str, ...]:
    """``"totals,moments"`` -> the statistics in canonical order; ``""`` -> none."""
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(STATISTICS))
    if unknown:
        raise ValueError(
            f"unknown derived feature {', '.join(unknown)}: choose from {', '.join(STATISTICS)}"
        )
    return tuple(name for name in STATISTICS if name in wanted)


@dataclass(frozen=True)
class DerivedFeatures:
    """A recipe of statistics appended to each raw row (empty: the raw row unchanged)."""

    statistics: tuple[str, ...] = ()

    @classmethod
    def from_recipe(cls, text: str) -> DerivedFeatures:
        return cls(parse_recipe(text))

    @property
    def recipe(self) -> str:
        return ",".join(self.statistics)

    def names(self) -> list[str]:
        groups = HISTOGRAM_GROUPS
        named: dict[str, Iterable[str]] = {
            "totals": (f"{g}_total" for g in groups),
            "moments": (f"{g}_{stat}" for g in groups for stat in ("bin_mean", "bin_std")),
            "normalised": (f"{g}_{i:03d}_share" for g in groups for i in range(BINS)),
            "missing": ("missing_count",),
        }
        return [name for statistic in self.statistics for name in named[statistic]]

    @property
    def width(self) -> int:
        return RAW_WIDTH + len(self.names())

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """(n, 170) float32 -> (n, width) float32, C-contiguous (the raw row first)."""
        if not self.statistics:
            return rows
        bins = (
            rows[:, HISTOGRAM_COLUMNS].astype(np.float64).reshape(-1, len(HISTOGRAM_GROUPS), BINS)
        )
        totals = bins.sum(axis=2)  # exact: integer counts far below 2**53
        parts: list[np.ndarray] = [rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            for statistic in self.statistics:
                if statistic == "totals":
                    parts.append(totals)
                elif statistic == "moments":
                    parts.append(_moments(bins, totals))
                elif statistic == "normalised":
                    shares = bins / totals[:, :, None]
                    parts.append(
                        np.where(np.isfinite(shares), shares, np.nan).reshape(len(rows), -1)
                    )
                else:  # missing
                    parts.append(np.isnan(rows).sum(axis=1, dtype=np.float64)[:, None])
        return np.concatenate([part.astype(np.float32, copy=False) for part in parts], axis=1)

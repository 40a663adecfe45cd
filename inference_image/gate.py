"""The paired quality gate: a challenger against the champion on the same folds and seeds.

Both models' repeated nested CV (evaluation.py) scored the same rows in the same folds with
the same seeds, so repetition r of one is paired with repetition r of the other and the
split-to-split noise they share cancels. With d_r = challenger - champion cost ratio:

    refuse when mean(d) > k x SE,   SE = std(d) / sqrt(R)   (sample std, R repetitions)

i.e. when the challenger is worse by more than k standard errors of the paired differences
(k = 2 by default: an equally good challenger is refused about 6 % of the time with R = 5,
from Student's t with R - 1 degrees of freedom).
A challenger within the noise, or better, is accepted. The absolute ceiling on the mean is a
separate check (the role's ``image_builder_max_cost_ratio``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

NOISE_MULTIPLIER = 2.0


class GateError(ValueError):
    """The two models' figures cannot be paired."""


@dataclass(frozen=True)
class Figures:
    """One model's cost ratio per repetition of a fold plan."""

    model: str
    ratios: tuple[float, ...]
    fold_plan_sha256: str
    source: str  # "recorded in the model card" or "evaluated now (N s)"

    @property
    def mean(self) -> float:
        return float(np.mean(self.ratios))

    @property
    def std(self) -> float:
        return float(np.std(self.ratios, ddof=1)) if len(self.ratios) > 1 else 0.0

    def text(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cost_ratio_mean": round(self.mean, 6),
            "cost_ratio_std": round(self.std, 6),
            "per_repetition": list(self.ratios),
            "source": self.source,
        }


@dataclass(frozen=True)
class PairedComparison:
    champion: Figures
    challenger: Figures
    noise_multiplier: float

    @property
    def differences(self) -> np.ndarray:
        return np.subtract(self.challenger.ratios, self.champion.ratios)

    @property
    def mean_difference(self) -> float:
        return float(self.differences.mean())

    @property
    def std_error(self) -> float:
        return float(self.differences.std(ddof=1) / math.sqrt(self.differences.size))

    @property
    def limit(self) -> float:
        return self.noise_multiplier * self.std_error

    @property
    def refused(self) -> bool:
        return self.mean_difference > self.limit

    def verdict(self) -> str:
        if self.refused:
            return "refused: worse beyond the noise"
        if self.mean_difference < -self.limit:
            return "accepted: better beyond the noise"
        return "accepted: within the noise"

    def reason(self) -> str:
        """One line: both figures with their spread, the paired difference and the rule."""
        return (
            f"challenger {self.challenger.model} {self.challenger.text()} vs champion "
            f"{self.champion.model} {self.champion.text()} (cost ratio, mean ± std over "
            f"{self.differences.size} paired repetitions): difference "
            f"{self.mean_difference:+.4f}, limit {self.noise_multiplier:g} x SE "
            f"{self.std_error:.4f} = {self.limit:.4f}: {self.verdict()}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion.as_dict(),
            "challenger": self.challenger.as_dict(),
            "paired": {
                "fold_plan_sha256": self.challenger.fold_plan_sha256,
                "differences": [round(float(d), 6) for d in self.differences],
                "mean_difference": round(self.mean_difference, 6),
                "std_error": round(self.std_error, 6),
                "noise_multiplier": self.noise_multiplier,
                "limit": round(self.limit, 6),
                "rule": "refuse when mean(challenger - champion) > noise_multiplier x "
                "std(differences) / sqrt(repetitions)",
            },
            "verdict": self.verdict(),
            "refused": self.refused,
            "reason": self.reason(),
        }


def paired_comparison(
    champion: Figures, challenger: Figures, noise_multiplier: float = NOISE_MULTIPLIER
) -> PairedComparison:
    """Pair the two models' repetitions; GateError unless they share the fold plan."""
    if champion.fold_plan_sha256 != challenger.fold_plan_sha256:
        raise GateError(
            "the champion and the challenger were evaluated on different fold plans "
            f"({champion.fold_plan_sha256[:12]} vs {challenger.fold_plan_sha256[:12]}): "
            "evaluate both on the same data, repetitions, folds and seed"
        )
    if len(challenger.ratios) < 2:
        raise GateError("the noise needs at least 2 paired repetitions: raise --repetitions")
    if not noise_multiplier >= 0:
        raise GateError(f"the noise multiplier must be 0 or more, got {noise_multiplier}")
    return PairedComparison(champion, challenger, noise_multiplier)

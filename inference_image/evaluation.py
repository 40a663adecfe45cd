"""Repeated nested cross-validation: the official cost ratio with its spread.

One repetition is the nested CV of training.py: K stratified outer folds; for each, the
shipped procedure (``train_final``: threshold from inner CV on the training part, then a
fit on it) scores the held-out fold. Repetition ``r`` draws its folds and its model seeds
from ``seed + 1000 r``; repetition 0 is exactly the single nested CV of ``seed``.

Reported: the cost ratio of every repetition (all rows scored once), their mean and sample
standard deviation (the spread from fold splits and seeds), and a 95 % interval for the mean
from the corrected resampled t-test (Nadeau and Bengio 2003), whose variance also counts the
overlap of the training parts, i.e. the uncertainty of having only this data.

The fold plan's digest covers the data, the plan and every fold assignment: two estimates
with the same digest scored the same rows in the same folds with the same seeds, so their
repetitions can be compared pair by pair (gate.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .cost import CostReport, cost_report
from .training import (
    FoldRecord,
    OutOfFoldResult,
    ThresholdChooser,
    TrainingParams,
    assemble,
    nested_fold,
    stratified_folds,
)

SEED_STRIDE = 1000
FOLD_SCHEME = "stratified-v1"  # training.stratified_folds; the digest covers its output too


@dataclass(frozen=True)
class CVPlan:
    """Which rows each repetition holds out, and the seeds its models use."""

    repetitions: int = 5
    outer_folds: int = 5
    seed: int = 42

    @classmethod
    def of(cls, params: TrainingParams) -> CVPlan:
        return cls(params.repetitions, params.outer_folds, params.seed)

    def seed_for(self, repetition: int) -> int:
        return self.seed + SEED_STRIDE * repetition

    def assignment(self, labels: np.ndarray, repetition: int) -> np.ndarray:
        return stratified_folds(labels, self.outer_folds, self.seed_for(repetition))

    def digest(self, labels: np.ndarray, data_id: str) -> str:
        """sha256 over the data's identity, the plan and every fold assignment."""
        digest = hashlib.sha256()
        header = {
            "data": data_id,
            "rows": int(labels.size),
            "repetitions": self.repetitions,
            "outer_folds": self.outer_folds,
            "seed": self.seed,
            "scheme": FOLD_SCHEME,
        }
        digest.update(json.dumps(header, sort_keys=True).encode())
        for repetition in range(self.repetitions):
            digest.update(self.assignment(labels, repetition).astype("<i2").tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class Repetition:
    seed: int
    result: OutOfFoldResult
    fold_reports: list[CostReport]

    @property
    def cost_ratio(self) -> float:
        return self.result.report.cost_ratio


@dataclass(frozen=True)
class RepeatedEstimate:
    plan: CVPlan
    params: TrainingParams
    digest: str
    repetitions: list[Repetition]
    seconds: float

    @property
    def ratios(self) -> np.ndarray:
        return np.array([repetition.cost_ratio for repetition in self.repetitions])

    @property
    def mean(self) -> float:
        return float(self.ratios.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation over repetitions (0 for a single one)."""
        return float(self.ratios.std(ddof=1)) if len(self.repetitions) > 1 else 0.0

    def ci95(self) -> tuple[float, float]:
        """95 % interval of the mean, corrected resampled t (fold ratios, K x R - 1 df)."""
        folds = np.array(
            [report.cost_ratio for rep in self.repetitions for report in rep.fold_reports]
        )
        k = self.plan.outer_folds
        variance = (1 / folds.size + 1 / (k - 1)) * folds.var(ddof=1)
        half = t_quantile_975(folds.size - 1) * math.sqrt(variance)
        return (round(self.mean - half, 6), round(self.mean + half, 6))

    def summary(self) -> str:
        return (
            f"{self.mean:.4f} ± {self.std:.4f} (mean ± std over {len(self.repetitions)} "
            f"repetitions of {self.plan.outer_folds}-fold nested CV)"
        )

    def card(self) -> dict[str, Any]:
        """The model card's ``metrics.repeated_cv``."""
        params = self.params
        return {
            "method": (
                f"repeated nested CV: {self.plan.repetitions} repetitions x "
                f"{self.plan.outer_folds} stratified outer folds, threshold from "
                f"{params.inner_folds}-fold CV inside each training part"
                + (
                    f" ({params.threshold_repeats} splits pooled)"
                    if params.threshold_repeats > 1
                    else ""
                )
                + (
                    f", cost smoothed at log-odds scale {params.threshold_smoothing:g}"
                    if params.threshold_smoothing > 0
                    else ""
                )
                + f"; repetition r uses seed {self.plan.seed} + {SEED_STRIDE} r"
            ),
            "repetitions": self.plan.repetitions,
            "outer_folds": self.plan.outer_folds,
            "inner_folds": params.inner_folds,
            "seed": self.plan.seed,
            "fold_plan_sha256": self.digest,
            "cost_ratio_mean": round(self.mean, 6),
            "cost_ratio_std": round(self.std, 6),
            "cost_ratio_ci95": list(self.ci95()),
            "per_repetition": [
                {
                    "seed": rep.seed,
                    **rep.result.report.as_dict(),
                    "fold_thresholds": [round(fold.threshold, 6) for fold in rep.result.folds],
                    "fold_cost_ratios": [report.cost_ratio for report in rep.fold_reports],
                }
                for rep in self.repetitions
            ],
            "seconds": self.seconds,
        }


def t_quantile_975(df: int) -> float:
    """Student's t 97.5 % quantile (Cornish-Fisher expansion; within 1e-3 for df >= 3)."""
    z = 1.959964
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def _fold_report(labels: np.ndarray, result: OutOfFoldResult, fold: int) -> CostReport:
    rows = result.folds[fold].scored_rows
    return cost_report(labels[rows], result.predictions[rows])


def repeated_nested_cv(
    features: np.ndarray,
    labels: np.ndarray,
    params: TrainingParams,
    data_id: str,
    plan: CVPlan | None = None,
    chooser: ThresholdChooser | None = None,
    workers: int | None = None,
) -> RepeatedEstimate:
    """Every (repetition, outer fold) in a pool of ``workers`` threads (default: nthread).

    Each fold's XGBoost runs single-threaded then; results do not depend on the number of
    threads or the order the folds finish in."""
    plan = plan or CVPlan.of(params)
    if plan.repetitions < 1:
        raise ValueError("repeated CV needs at least 1 repetition")
    started = time.monotonic()
    workers = max(1, workers or params.nthread)
    fold_threads = 1 if workers > 1 else params.nthread
    assignments = [plan.assignment(labels, rep) for rep in range(plan.repetitions)]
    tasks = [(rep, fold) for rep in range(plan.repetitions) for fold in range(plan.outer_folds)]

    def run(task: tuple[int, int]) -> tuple[FoldRecord, np.ndarray]:
        rep, fold = task
        fold_params = replace(params, seed=plan.seed_for(rep), nthread=fold_threads)
        return nested_fold(features, labels, assignments[rep], fold, fold_params, chooser)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(run, tasks))
    repetitions = []
    for rep in range(plan.repetitions):
        first = rep * plan.outer_folds
        result = assemble(labels, outcomes[first : first + plan.outer_folds])
        folds = [_fold_report(labels, result, fold) for fold in range(plan.outer_folds)]
        repetitions.append(Repetition(plan.seed_for(rep), result, folds))
    return RepeatedEstimate(
        plan=plan,
        params=params,
        digest=plan.digest(labels, data_id),
        repetitions=repetitions,
        seconds=round(time.monotonic() - started, 1),
    )

"""Train the APS classifier for the official cost, and estimate that cost without leakage.

The decision threshold is part of the model: it is always chosen from out-of-fold
predictions on training rows only. The reported out-of-fold cost uses nested
cross-validation, so no scored row ever influences the threshold applied to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

# Idle OpenMP threads spin by default; on a 2-core edge or CI machine that starves everything
# else (seen: a 0.1 s fit took 5 s beside another process). Must be set before libgomp loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import xgboost as xgb

from .cost import CostReport, best_threshold, cost_report

ThresholdChooser = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class TrainingParams:
    n_estimators: int = 300
    max_depth: int = 4
    learning_rate: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.5
    min_child_weight: float = 1.0
    scale_pos_weight: float = 5.0  # class weighting towards positives (the threshold does the rest)
    seed: int = 42
    nthread: int = 2
    outer_folds: int = 5  # out-of-fold cost estimate
    inner_folds: int = 3  # threshold choice inside each training part

    def booster_params(self) -> dict[str, object]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "scale_pos_weight": self.scale_pos_weight,
            "seed": self.seed,
            "nthread": self.nthread,
        }

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class FoldRecord:
    threshold: float
    threshold_rows: np.ndarray  # rows whose labels chose the threshold
    scored_rows: np.ndarray  # rows scored with it


@dataclass
class OutOfFoldResult:
    probabilities: np.ndarray
    predictions: np.ndarray
    report: CostReport
    folds: list[FoldRecord] = field(default_factory=list)


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """A fold number per row, each class spread evenly over the folds (seeded)."""
    labels = np.asarray(labels)
    if n_folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    minority = int(min(np.sum(labels == 0), np.sum(labels == 1)))
    if minority < n_folds:
        raise ValueError(f"only {minority} rows of the rarer class: too few for {n_folds} folds")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(labels.size, dtype=np.int64)
    for cls in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == cls))
        fold_of[members] = np.arange(members.size) % n_folds
    return fold_of


def fit(features: np.ndarray, labels: np.ndarray, params: TrainingParams) -> xgb.Booster:
    matrix = xgb.DMatrix(features, label=labels, missing=np.nan)
    return xgb.train(params.booster_params(), matrix, num_boost_round=params.n_estimators)


def predict(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    return booster.inplace_predict(features, missing=np.nan).astype(np.float64)


def cross_val_probabilities(
    features: np.ndarray, labels: np.ndarray, params: TrainingParams, n_folds: int, seed: int
) -> np.ndarray:
    """Out-of-fold probabilities: each row predicted by a model that never saw it."""
    fold_of = stratified_folds(labels, n_folds, seed)
    probabilities = np.empty(labels.size, dtype=np.float64)
    for fold in range(n_folds):
        held_out = fold_of == fold
        booster = fit(features[~held_out], labels[~held_out], params)
        probabilities[held_out] = predict(booster, features[held_out])
    return probabilities


def choose_threshold(
    features: np.ndarray,
    labels: np.ndarray,
    params: TrainingParams,
    chooser: ThresholdChooser = best_threshold,
) -> float:
    """Threshold from inner cross-validation on these (training) rows only."""
    inner = cross_val_probabilities(features, labels, params, params.inner_folds, params.seed + 1)
    return chooser(labels, inner)


def out_of_fold_evaluation(
    features: np.ndarray,
    labels: np.ndarray,
    params: TrainingParams,
    chooser: ThresholdChooser = best_threshold,
) -> OutOfFoldResult:
    """Nested CV: per outer fold, pick the threshold inside its training part, fit, score."""
    fold_of = stratified_folds(labels, params.outer_folds, params.seed)
    probabilities = np.empty(labels.size, dtype=np.float64)
    predictions = np.empty(labels.size, dtype=np.int8)
    folds: list[FoldRecord] = []
    for fold in range(params.outer_folds):
        scored = np.flatnonzero(fold_of == fold)
        training = np.flatnonzero(fold_of != fold)
        threshold = choose_threshold(features[training], labels[training], params, chooser)
        booster = fit(features[training], labels[training], params)
        probabilities[scored] = predict(booster, features[scored])
        predictions[scored] = probabilities[scored] >= threshold
        folds.append(FoldRecord(threshold, training, scored))
    return OutOfFoldResult(probabilities, predictions, cost_report(labels, predictions), folds)


@dataclass
class TrainedModel:
    booster: xgb.Booster
    threshold: float
    params: TrainingParams

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return predict(self.booster, features)

    def evaluate(self, features: np.ndarray, labels: np.ndarray) -> CostReport:
        return cost_report(labels, self.probabilities(features) >= self.threshold)


def train_final(
    features: np.ndarray,
    labels: np.ndarray,
    params: TrainingParams,
    chooser: ThresholdChooser = best_threshold,
) -> TrainedModel:
    """The model that ships: threshold from CV on all training rows, then a fit on all of them."""
    threshold = choose_threshold(features, labels, params, chooser)
    return TrainedModel(fit(features, labels, params), threshold, params)

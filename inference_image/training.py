"""Train the APS classifier for the official cost, and estimate that cost without leakage.

The decision threshold is part of the model: it is always chosen from out-of-fold
predictions on training rows only. The reported out-of-fold cost uses nested
cross-validation, so no scored row ever influences the threshold applied to it
(evaluation.py repeats it over several fold splits and seeds).

A model is one XGBoost booster on the raw features plus the derived ones its recipe names
(features.py, recorded in the booster's attribute ``linkedge_derived_features``); a
seed-bagged ensemble is merged into one booster (ensemble.py). ``predict`` applies the
recipe, as the served predictor does.
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

from .cost import CostReport, best_threshold, cost_report, smoothed_threshold
from .ensemble import merge_boosters
from .features import MODEL_ATTRIBUTE, DerivedFeatures

ThresholdChooser = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class TrainingParams:
    n_estimators: int = 300
    max_depth: int = 4
    learning_rate: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.3
    min_child_weight: float = 1.0
    scale_pos_weight: float = 1.0  # class weighting towards positives (1: the threshold alone)
    max_bin: int = 64  # histogram bins per feature
    bags: int = 1  # boosters with seeds seed, seed+1, ... merged into one model (mean margin)
    derived_features: str = ""  # features.py recipe, e.g. "totals,moments,missing"
    seed: int = 42
    nthread: int = 2
    repetitions: int = 5  # repeated nested CV: fold splits (and model seeds) of the estimate
    outer_folds: int = 5  # out-of-fold cost estimate
    inner_folds: int = 3  # threshold choice inside each training part
    threshold_repeats: int = 1  # inner CV splits whose pooled predictions choose the threshold
    threshold_smoothing: float = 0.8  # log-odds scale of cost.smoothed_threshold; 0: exact cut

    def chooser(self) -> ThresholdChooser:
        """How the threshold is chosen from out-of-fold predictions (cost.py)."""
        if self.threshold_smoothing > 0:
            scale = self.threshold_smoothing
            return lambda labels, probabilities: smoothed_threshold(labels, probabilities, scale)
        return best_threshold

    @property
    def derived(self) -> DerivedFeatures:
        return DerivedFeatures.from_recipe(self.derived_features)

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
            "max_bin": self.max_bin,
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
    """One booster on the raw features (plus the derived ones): bagged boosters merged."""
    derived = params.derived
    matrix = xgb.DMatrix(derived.transform(features), label=labels, missing=np.nan)
    members = [
        xgb.train(
            {**params.booster_params(), "seed": params.seed + bag},
            matrix,
            num_boost_round=params.n_estimators,
        )
        for bag in range(params.bags)
    ]
    booster = merge_boosters(members)
    if derived.statistics:
        booster.set_attr(**{MODEL_ATTRIBUTE: derived.recipe})
    return booster


def booster_features(booster: xgb.Booster) -> DerivedFeatures:
    """The derived-feature recipe a booster was trained with (none: raw features only)."""
    return DerivedFeatures.from_recipe(booster.attr(MODEL_ATTRIBUTE) or "")


def predict(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    """Probabilities for raw feature rows, the booster's derived features added as served."""
    rows = booster_features(booster).transform(features)
    return booster.inplace_predict(rows, missing=np.nan).astype(np.float64)


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
    chooser: ThresholdChooser | None = None,
) -> float:
    """Threshold from inner cross-validation on these (training) rows only.

    With ``threshold_repeats`` > 1 the out-of-fold predictions of that many inner splits are
    pooled (each row counted once per split) before the cheapest cut is chosen."""
    seeds = [params.seed + 1 + repeat for repeat in range(params.threshold_repeats)]
    inner = [
        cross_val_probabilities(features, labels, params, params.inner_folds, seed)
        for seed in seeds
    ]
    choose = chooser or params.chooser()
    return choose(np.tile(labels, len(seeds)), np.concatenate(inner))


def nested_fold(
    features: np.ndarray,
    labels: np.ndarray,
    fold_of: np.ndarray,
    fold: int,
    params: TrainingParams,
    chooser: ThresholdChooser | None = None,
) -> tuple[FoldRecord, np.ndarray]:
    """One outer fold: the shipped procedure (train_final) on its training part, then its
    scored rows' probabilities. The threshold never sees a scored row."""
    scored = np.flatnonzero(fold_of == fold)
    training = np.flatnonzero(fold_of != fold)
    model = train_final(features[training], labels[training], params, chooser)
    return FoldRecord(model.threshold, training, scored), model.probabilities(features[scored])


def out_of_fold_evaluation(
    features: np.ndarray,
    labels: np.ndarray,
    params: TrainingParams,
    chooser: ThresholdChooser | None = None,
) -> OutOfFoldResult:
    """Nested CV: per outer fold, pick the threshold inside its training part, fit, score."""
    fold_of = stratified_folds(labels, params.outer_folds, params.seed)
    outcomes = [
        nested_fold(features, labels, fold_of, fold, params, chooser)
        for fold in range(params.outer_folds)
    ]
    return assemble(labels, outcomes)


def assemble(labels: np.ndarray, outcomes: list[tuple[FoldRecord, np.ndarray]]) -> OutOfFoldResult:
    """The out-of-fold result of one split from its folds' records and probabilities."""
    probabilities = np.empty(labels.size, dtype=np.float64)
    predictions = np.empty(labels.size, dtype=np.int8)
    for record, scored_probabilities in outcomes:
        probabilities[record.scored_rows] = scored_probabilities
        predictions[record.scored_rows] = scored_probabilities >= record.threshold
    folds = [record for record, _ in outcomes]
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
    chooser: ThresholdChooser | None = None,
) -> TrainedModel:
    """The model that ships: threshold from CV on all training rows, then a fit on all of them."""
    threshold = choose_threshold(features, labels, params, chooser)
    return TrainedModel(fit(features, labels, params), threshold, params)

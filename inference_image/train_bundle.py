"""From APS files to a model bundle: evaluate, train, score, pick smoke vectors, write."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from .bundle import REFERENCE_FILE, ModelBundle, load_bundle, write_bundle
from .captured import training_data
from .contract import MODEL_NAME
from .cost import FALSE_NEGATIVE_COST, FALSE_POSITIVE_COST
from .data import ApsDataset, find_test_file, load_aps_csv
from .drift import build_reference
from .evaluation import RepeatedEstimate, repeated_nested_cv
from .schema import APS_FEATURES
from .smoke_vectors import build_smoke_vectors, edge_rows, select_rows
from .training import TrainingParams, train_final

SMOKE_VECTOR_COUNT = 30
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSummary:
    bundle: ModelBundle
    seconds: float


def _data_record(dataset: ApsDataset) -> dict[str, Any]:
    return {
        "file": dataset.source.name,
        "sha256": dataset.sha256,
        "rows": dataset.rows,
        "positives": dataset.positives,
    }


def _out_of_fold(estimate: RepeatedEstimate) -> dict[str, Any]:
    """The single nested CV of the seed (repetition 0): the card's original ``out_of_fold``."""
    params = estimate.params
    first = estimate.repetitions[0].result
    return {
        "method": f"nested {params.outer_folds}-fold CV, threshold from "
        f"{params.inner_folds}-fold CV inside each training part "
        "(repetition 0 of repeated_cv)",
        "fold_thresholds": [round(fold.threshold, 6) for fold in first.folds],
        **first.report.as_dict(),
    }


def _features_record(params: TrainingParams) -> dict[str, Any]:
    derived = params.derived
    return {
        "count": len(APS_FEATURES),
        "missing": "NaN / 'na' / null",
        "derived": {
            "recipe": derived.recipe,
            "names": derived.names(),
            "computed_by": "the predictor, from the raw inputs (features.py)",
        },
    }


def default_version(model_json: bytes, threshold: float) -> str:
    """Content-derived, so the same data, parameters and code give the same version."""
    digest = hashlib.sha256(model_json + repr(threshold).encode()).hexdigest()
    return f"aps-xgb-{digest[:12]}"


def train_to_bundle(
    data_dir: Path,
    out_dir: Path,
    params: TrainingParams | None = None,
    version: str | None = None,
    evaluate: bool = True,
) -> TrainingSummary:
    params = params or TrainingParams()
    started = time.monotonic()
    # The official rows, plus the rows the trucks saw, labelled by maintenance records.
    train, captured = training_data(data_dir, len(APS_FEATURES))
    log.info("training data: %s (%d rows, %d positives)", train.source, train.rows, train.positives)
    labels = train.labels.astype(np.float32)  # type: ignore[union-attr]

    out_of_fold = repeated = None
    if evaluate:
        estimate = repeated_nested_cv(train.features, labels, params, train.sha256)
        out_of_fold, repeated = _out_of_fold(estimate), estimate.card()
        log.info("repeated nested CV: %s in %s s", estimate.summary(), estimate.seconds)

    model = train_final(train.features, labels, params)
    test_record = test_metrics = None
    test_file = find_test_file(data_dir)
    if test_file is not None:
        test = load_aps_csv(test_file, require_labels=True)
        test_record = _data_record(test)
        test_metrics = model.evaluate(test.features, test.labels).as_dict()  # type: ignore[arg-type]
        log.info("official test set: %s", test_metrics)

    model_json = bytes(model.booster.save_raw(raw_format="json"))
    smoke_rows = np.concatenate(
        [
            train.features[
                select_rows(train.labels, train.features, SMOKE_VECTOR_COUNT, params.seed)
            ],
            edge_rows(len(APS_FEATURES)),
        ]
    )
    smoke = build_smoke_vectors(smoke_rows, model.probabilities(smoke_rows), model.threshold)
    version = version or default_version(model_json, model.threshold)
    card = {
        "name": MODEL_NAME,
        "version": version,
        "task": "binary classification of APS failures (pos) vs other failures (neg)",
        "framework": {
            "xgboost": xgb.__version__,
            "format": "xgboost-json",
            "trees": model.booster.num_boosted_rounds(),
        },
        "features": _features_record(params),
        "threshold": model.threshold,
        "decision": "pos when probability >= threshold",
        "cost": {"false_positive": FALSE_POSITIVE_COST, "false_negative": FALSE_NEGATIVE_COST},
        "parameters": params.as_dict(),
        "data": {
            "train": _data_record(train),
            "test": test_record,
            "captured": captured,
        },
        "metrics": {"out_of_fold": out_of_fold, "repeated_cv": repeated, "test": test_metrics},
    }
    # What the truck compares its requests with (drift): the official training rows, as this
    # model sees them. Not the captured rows: capture keeps every pos answer and a sample of
    # the rest, so they would skew the reference towards positives.
    official = train.rows - captured["rows"]  # training_data puts them first
    reference_rows, reference_labels = train.features[:official], train.labels[:official]
    reference = build_reference(
        reference_rows,
        APS_FEATURES,
        model.probabilities(reference_rows) >= model.threshold,
        reference_labels,
    )
    card["drift_reference"] = {
        "file": REFERENCE_FILE,
        "rows": "the official training rows (not the captured ones)",
        "positive_rate": "the final model's predicted-positive rate on them (in-sample)",
    }
    bundle_dir = write_bundle(
        Path(out_dir), model_json, list(APS_FEATURES), card, smoke, reference.as_dict()
    )
    return TrainingSummary(load_bundle(bundle_dir), round(time.monotonic() - started, 1))

"""The served model: loaded once, checked against its smoke vectors, predicting in batches."""

from __future__ import annotations

import logging

import numpy as np

from inference_image.bundle import ModelBundle
from inference_image.contract import SMOKE_TOLERANCE, smoke_mismatch
from inference_image.predictor import NativePredictor

from .config import ServingConfig

log = logging.getLogger("linkedge.serving")

__all__ = ["SMOKE_TOLERANCE", "ServedModel", "check_smoke_vectors"]


def check_smoke_vectors(bundle: ModelBundle, predictor: NativePredictor) -> str | None:
    """Why the predictor does not reproduce the bundle's smoke vectors, or None if it does."""
    vectors = bundle.smoke_vectors
    if not isinstance(vectors, list) or not vectors:
        return "the bundle has no smoke vectors to verify the model with"
    width = len(bundle.feature_names)
    for index, vector in enumerate(vectors):
        try:
            inputs = vector["inputs"]
            float(vector["probability"])  # the expected answer must be a number and a label
            str(vector["label"])
            if len(inputs) != width:
                return f"smoke vector {index} has {len(inputs)} inputs, expected {width}"
            row = np.array([inputs], dtype=np.float64).astype(np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            return f"smoke vector {index} is malformed: {exc!r}"
        probability = float(predictor.predict_proba(row)[0])
        problem = smoke_mismatch("smoke", index, vector, probability, bundle.label_for(probability))
        if problem:
            return problem
    return None


class ServedModel:
    """The loaded model, its readiness verdict and a vectorised predict."""

    def __init__(self, bundle: ModelBundle, config: ServingConfig) -> None:
        self.bundle = bundle
        self.predictor = NativePredictor(bundle.model_path, nthread=config.xgboost_nthread)
        if self.predictor.n_features != len(bundle.feature_names):
            raise ValueError(
                f"bundle {bundle.path}: the model takes {self.predictor.n_features} features "
                f"but the schema lists {len(bundle.feature_names)}"
            )
        self.not_ready_reason = check_smoke_vectors(bundle, self.predictor)
        if self.not_ready_reason:
            log.error("model %s is not ready: %s", bundle.version, self.not_ready_reason)

    @property
    def ready(self) -> bool:
        return self.not_ready_reason is None

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 probabilities and the boolean "pos" decision (as ``bundle.label_for``)."""
        probabilities = self.predictor.predict_proba(rows)
        return probabilities, probabilities.astype(np.float64) >= self.bundle.threshold

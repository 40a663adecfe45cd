"""A shadow model: a candidate release's bundle served beside the model, on the same rows.

Every observed request (traffic, not a check) is also answered by the shadow; its answers are
never returned, only compared: agreement of the labels, the difference of the probabilities,
and the shadow's own latency go to /metrics (``linkedge_shadow_*``). The shadow runs after the
model in the same worker, so a request waits for both: its latency is the price of the figures,
and it is measured. A shadow bundle that is missing, tampered with or that does not reproduce
its smoke vectors is reported (``linkedge_shadow_ready`` 0, the reason in the log) and never
stops the model from serving.
"""

from __future__ import annotations

import logging
from pathlib import Path
from time import perf_counter

import numpy as np

from inference_image.bundle import BundleError, load_bundle

from .config import ServingConfig
from .metrics import ServingMetrics, ShadowMetrics
from .model import ServedModel

log = logging.getLogger("linkedge.serving")


class ShadowModel:
    def __init__(self, path: Path, config: ServingConfig, metrics: ServingMetrics) -> None:
        self.model: ServedModel | None = None
        self.version = "unknown"
        self.reason: str | None = None
        try:
            bundle = load_bundle(path)
            self.version = bundle.version
            model = ServedModel(bundle, config)
            self.reason = model.not_ready_reason
            if self.reason is None:
                self.model = model
        except (BundleError, OSError, ValueError) as exc:
            self.reason = str(exc)
        if self.reason is not None:
            log.error("shadow model at %s is not used: %s", path, self.reason)
        self.metrics: ShadowMetrics = metrics.shadow(self.version, self.model is not None)

    def observe(self, rows: np.ndarray, probabilities: np.ndarray, positive: np.ndarray) -> None:
        if self.model is None:
            return
        started = perf_counter()
        shadow_probabilities, shadow_positive = self.model.predict(rows)
        seconds = perf_counter() - started
        differences = np.abs(shadow_probabilities.astype(np.float64) - probabilities)
        self.metrics.observe(positive, shadow_positive, differences, seconds)

"""POST /predict and V2 infer as plain functions of the WSGI environ.

Each returns the response body and its headers, or raises PayloadError (4xx, 503) for the
caller to turn into a JSON error. Both the fast path and the Flask views call these, so
there is one implementation of each endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import binary
from .auth import BearerAuth
from .config import ServingConfig
from .metrics import ServingMetrics
from .model import ServedModel
from .payloads import InferParser, PayloadError, RecordParser, read_infer_body, read_json_body
from .responses import ResponseEncoder

Headers = list[tuple[str, str]]
JSON_HEADERS: Headers = [("Content-Type", "application/json")]


class PredictionEndpoints:
    def __init__(
        self,
        model: ServedModel,
        metrics: ServingMetrics,
        config: ServingConfig,
        model_version: str,
    ) -> None:
        features = model.bundle.feature_names
        self.model = model
        self.metrics = metrics
        self.max_body_bytes = config.max_body_bytes
        self.records = RecordParser(features, config.max_rows)
        self.tensors = InferParser(features, config.max_rows)
        self.encoder = ResponseEncoder(config.model_name, model_version)
        self.auth = None if config.api_token is None else BearerAuth(config.api_token)

    def authorize(self, environ: Mapping[str, Any]) -> None:
        """PayloadError 401 unless the API is open or the request has the bearer token."""
        if self.auth is not None:
            self.auth.check(environ)

    def require_ready(self) -> None:
        if not self.model.ready:
            raise PayloadError(f"model not ready: {self.model.not_ready_reason}", status=503)

    def _predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, positive = self.model.predict(rows)
        n_positive = int(np.count_nonzero(positive))
        self.metrics.count_predictions(n_positive, len(positive) - n_positive)
        return probabilities, positive

    def predict(self, environ: Mapping[str, Any]) -> tuple[bytes, Headers]:
        self.authorize(environ)
        self.require_ready()
        rows = self.records.parse(read_json_body(environ, self.max_body_bytes))
        return self.encoder.predictions(*self._predict(rows)), JSON_HEADERS

    def infer(self, environ: Mapping[str, Any]) -> tuple[bytes, Headers]:
        self.authorize(environ)
        self.require_ready()
        # JSON (Content-Type application/json or none), or the binary tensor extension
        # when Inference-Header-Content-Length is present.
        parsed = self.tensors.parse(*read_infer_body(environ, self.max_body_bytes))
        probabilities, positive = self._predict(parsed.rows)
        body, json_length = self.encoder.inference(parsed, probabilities, positive)
        if json_length is None:
            return body, JSON_HEADERS
        return body, [("Content-Type", binary.MEDIA_TYPE), (binary.HEADER, str(json_length))]

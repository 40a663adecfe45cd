"""POST /predict and V2 infer as plain functions of the WSGI environ.

Each returns the response body and its headers, or raises PayloadError (4xx, 503) for the
caller to turn into a JSON error. Both the fast path and the Flask views call these, so
there is one implementation of each endpoint.

:meth:`PredictionEndpoints.predict_documents` is ``/predict`` after the body is read and
decoded: records parsed, predicted and encoded. ``/predict`` calls it with one document, the
MQTT adapter with every message of a micro-batch (one model call for all of them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from . import binary
from .auth import BearerAuth
from .config import ServingConfig
from .log_once import OncePerKind
from .metrics import ServingMetrics
from .model import ServedModel
from .payloads import InferParser, PayloadError, RecordParser, read_infer_body, read_json_body
from .responses import ResponseEncoder

log = logging.getLogger("linkedge.serving")

Headers = list[tuple[str, str]]
JSON_HEADERS: Headers = [("Content-Type", "application/json")]


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer to one ``/predict`` document: its response body and the values in it."""

    body: bytes
    probabilities: np.ndarray  # float32, one per row
    positive: np.ndarray  # bool: the row is "pos"


class RowObserver(Protocol):
    """Takes the rows of every observed request and the model's answers (drift, capture, a
    shadow model). An exception is counted and logged; the request is answered all the same."""

    def observe(
        self, rows: np.ndarray, probabilities: np.ndarray, positive: np.ndarray
    ) -> object: ...


class PredictionEndpoints:
    def __init__(
        self,
        model: ServedModel,
        metrics: ServingMetrics,
        config: ServingConfig,
        model_version: str,
        observers: Mapping[str, RowObserver] | None = None,
    ) -> None:
        features = model.bundle.feature_names
        self.model = model
        self.metrics = metrics
        self.observers = dict(observers or {})  # drift, capture, shadow: see RowObserver
        self._observer_errors = OncePerKind(log)
        self.check_port = None if config.check_port is None else str(config.check_port)
        self.max_body_bytes = config.max_body_bytes
        self.max_rows = config.max_rows
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

    def predict_rows(
        self, rows: np.ndarray, observed: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and "pos" flags for validated rows, counted in the metrics; OBSERVED
        rows (traffic, not a check) also go into drift and capture."""
        probabilities, positive = self.model.predict(rows)
        n_positive = int(np.count_nonzero(positive))
        self.metrics.count_predictions(n_positive, len(positive) - n_positive)
        if observed:
            for name, observer in self.observers.items():
                try:
                    observer.observe(rows, probabilities, positive)
                except Exception as exc:
                    self.metrics.count_observer_error(name)
                    self._log_observer_error(name, exc)
        return probabilities, positive

    def _log_observer_error(self, name: str, exc: Exception) -> None:
        """The traceback of an observer's first error of each exception type; the same type
        again is only counted (linkedge_observer_errors_total)."""
        self._observer_errors.error(
            name,
            exc,
            "%s could not take the rows of a request (logged once; every one is counted in "
            "linkedge_observer_errors_total)",
            name,
        )

    def observed(self, environ: Mapping[str, Any]) -> bool:
        """False for a request on the check port (inference_container's smoke checks of a
        new container): its rows are not what the truck sees."""
        return self.check_port is None or environ.get("SERVER_PORT") != self.check_port

    def predict(self, environ: Mapping[str, Any]) -> tuple[bytes, Headers]:
        self.authorize(environ)
        self.require_ready()
        document = read_json_body(environ, self.max_body_bytes)
        (result,) = self.predict_documents([document], self.observed(environ))
        if type(result) is Prediction:
            return result.body, JSON_HEADERS
        try:
            raise result
        finally:
            del result  # the traceback holds this frame: no reference cycle through it

    def predict_documents(
        self, documents: Sequence[Any], observed: bool = True
    ) -> list[Prediction | PayloadError]:
        """Each document (a decoded ``/predict`` body: one record or ``{"instances": [...]}``)
        answered as ``/predict`` answers it: a :class:`Prediction`, or the PayloadError that
        names what is wrong with it. The rows of all valid documents are predicted together,
        in model calls of at most LINKEDGE_MAX_ROWS rows. The caller checks readiness."""
        results: list[Any] = [None] * len(documents)
        group: list[tuple[int, np.ndarray]] = []
        group_rows = 0
        for index, document in enumerate(documents):
            try:
                rows = self.records.parse(document)
            except PayloadError as exc:
                results[index] = exc.with_traceback(None)  # kept: no frames with it
                continue
            if group and group_rows + len(rows) > self.max_rows:
                self._predict_group(group, results, observed)
                group, group_rows = [], 0
            group.append((index, rows))
            group_rows += len(rows)
        if group:
            self._predict_group(group, results, observed)
        return results

    def _predict_group(
        self, group: list[tuple[int, np.ndarray]], results: list[Any], observed: bool
    ) -> None:
        if len(group) == 1:
            index, rows = group[0]
            probabilities, positive = self.predict_rows(rows, observed)
            results[index] = Prediction(
                self.encoder.predictions(probabilities, positive), probabilities, positive
            )
            return
        all_rows = np.concatenate([rows for _, rows in group])
        probabilities, positive = self.predict_rows(all_rows, observed)
        start = 0
        for index, rows in group:
            end = start + len(rows)
            document_probabilities = probabilities[start:end]
            document_positive = positive[start:end]
            results[index] = Prediction(
                self.encoder.predictions(document_probabilities, document_positive),
                document_probabilities,
                document_positive,
            )
            start = end

    def infer(self, environ: Mapping[str, Any]) -> tuple[bytes, Headers]:
        self.authorize(environ)
        self.require_ready()
        # JSON (Content-Type application/json or none), or the binary tensor extension
        # when Inference-Header-Content-Length is present.
        parsed = self.tensors.parse(*read_infer_body(environ, self.max_body_bytes))
        probabilities, positive = self.predict_rows(parsed.rows, self.observed(environ))
        body, json_length = self.encoder.inference(parsed, probabilities, positive)
        if json_length is None:
            return body, JSON_HEADERS
        return body, [("Content-Type", binary.MEDIA_TYPE), (binary.HEADER, str(json_length))]

"""The Flask app: Open Inference Protocol V2 endpoints, /predict, /metrics and /openapi.json.

The two prediction routes are answered by :mod:`.fastpath` in front of Flask (same answers,
errors and metrics); Flask serves everything else and keeps their rules for 404/405.
"""

from __future__ import annotations

import logging
from pathlib import Path
from time import perf_counter
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, NotFound

from inference_image.bundle import ModelBundle, load_bundle
from inference_image.drift import DriftReference, DriftReferenceError

from . import metadata
from .capture import RequestCapture
from .config import ServingConfig
from .drift_window import DriftWindow
from .endpoints import PredictionEndpoints, RowObserver
from .fastpath import HotRoutes
from .metrics import UNMATCHED_ENDPOINT, ServingMetrics, multiprocess_dir
from .model import SMOKE_TOLERANCE, ServedModel, check_smoke_vectors
from .openapi import build_openapi
from .payloads import PayloadError
from .shadow import ShadowModel

log = logging.getLogger("linkedge.serving")

__all__ = ["SMOKE_TOLERANCE", "ServedModel", "check_smoke_vectors", "create_app"]

_JSON = "application/json"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _json_response(body: Any, status: int = 200) -> Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body, option=_NUMPY)
    return Response(data, status=status, content_type=_JSON)


def _error(status: int, message: str) -> Response:
    return _json_response({"error": message}, status)


def _http_error_message(exc: HTTPException, max_body_bytes: int) -> str:
    if exc.description != type(exc).description:  # raised by us with a specific message
        return str(exc.description)
    if exc.code == 404:
        return f"no such path: {request.path[:200]}"
    if exc.code == 405:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or ()))
        return f"method {request.method[:20]} is not allowed on {request.path[:200]}; use {allowed}"
    if exc.code == 413:
        return f"request body exceeds the limit of {max_body_bytes} bytes"
    return exc.name


def _install_error_handlers(app: Flask, config: ServingConfig) -> None:
    @app.errorhandler(PayloadError)
    def payload_error(exc: PayloadError) -> Response:
        response = _error(exc.status, exc.message)
        for name, value in exc.headers:
            response.headers[name] = value
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = _error(exc.code or 500, _http_error_message(exc, config.max_body_bytes))
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path[:200])
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")


def _install_metrics_hooks(app: Flask, metrics: ServingMetrics) -> None:
    @app.before_request
    def start_timer() -> None:
        request.environ["linkedge.start"] = perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        started = request.environ.get("linkedge.start")
        elapsed = perf_counter() - started if started is not None else 0.0
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else UNMATCHED_ENDPOINT
        metrics.observe_request(endpoint, request.method, response.status_code, elapsed)
        return response


def drift_window(bundle: ModelBundle, config: ServingConfig) -> DriftWindow | None:
    """The sliding window of what this container is asked about, when the bundle has a
    training reference (counted per worker in the metrics directory, if there is one)."""
    if bundle.reference is None:
        return None
    try:
        reference = DriftReference.from_dict(bundle.reference, bundle.feature_names)
    except DriftReferenceError as exc:  # monitoring must not stop the model from serving
        log.error("bundle %s: no drift metrics: %s", bundle.version, exc)
        return None
    directory = multiprocess_dir()
    return DriftWindow(
        reference, config.drift_window_seconds, Path(directory) if directory else None
    )


def create_app(bundle: ModelBundle | Path, config: ServingConfig | None = None) -> Flask:
    """Load the bundle's model once, verify its smoke vectors, and return the WSGI app."""
    config = config or ServingConfig()
    if not isinstance(bundle, ModelBundle):
        bundle = load_bundle(Path(bundle))
    model = ServedModel(bundle, config)
    metrics = ServingMetrics(bundle.version, bundle.sha256)
    observers: dict[str, RowObserver] = {}  # what sees every observed request's rows
    drift = drift_window(bundle, config)
    if drift is not None:
        metrics.watch_drift(drift)
        observers["drift"] = drift
    if config.capture is not None:
        capture = RequestCapture(
            config.capture, bundle.version, metrics.count_captured, metrics.count_capture_lost
        )
        metrics.watch_capture(capture.spool)
        observers["capture"] = capture
    if config.shadow_bundle is not None:
        observers["shadow"] = ShadowModel(config.shadow_bundle, config, metrics)
    endpoints = PredictionEndpoints(model, metrics, config, bundle.version, observers)
    name, version = config.model_name, bundle.version

    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    # The MQTT adapter and the gRPC server serve with these same objects in each worker.
    app.extensions["linkedge"] = {
        "bundle": bundle,
        "model": model,
        "metrics": metrics,
        "config": config,
        "endpoints": endpoints,
    }
    _install_error_handlers(app, config)
    _install_metrics_hooks(app, metrics)

    live_body = orjson.dumps({"live": True})
    ready_body = orjson.dumps({"ready": True})
    server_body = orjson.dumps(metadata.server_metadata())
    model_body = orjson.dumps(metadata.model_metadata(bundle, config))
    openapi_body = orjson.dumps(
        build_openapi(
            bundle.feature_names,
            name,
            version,
            metadata.server_version(),
            config.max_rows,
            requires_token=config.api_token is not None,
        )
    )

    def check_model(model_name: str, model_version: str | None = None) -> None:
        if model_name != name:
            raise NotFound(f"unknown model {model_name[:100]!r}; this server serves {name!r}")
        if model_version is not None and model_version != version:
            raise NotFound(
                f"unknown version {model_version[:100]!r} of model {name!r}; available: {version!r}"
            )

    def readiness() -> Response:
        if model.ready:
            return _json_response(ready_body)
        return _json_response({"ready": False, "reason": model.not_ready_reason}, 503)

    def reply(body: bytes, headers: list[tuple[str, str]]) -> Response:
        response = Response(body, status=200)
        for header, value in headers:
            response.headers[header] = value
        return response

    @app.route("/v2", methods=["GET"])
    def server_metadata() -> Response:
        return _json_response(server_body)

    @app.route("/v2/health/live", methods=["GET"])
    def live() -> Response:
        return _json_response(live_body)

    @app.route("/v2/health/ready", methods=["GET"])
    def ready() -> Response:
        return readiness()

    @app.route("/v2/models/<model_name>", methods=["GET"])
    @app.route("/v2/models/<model_name>/versions/<model_version>", methods=["GET"])
    def model_metadata(model_name: str, model_version: str | None = None) -> Response:
        check_model(model_name, model_version)
        return _json_response(model_body)

    @app.route("/v2/models/<model_name>/ready", methods=["GET"])
    @app.route("/v2/models/<model_name>/versions/<model_version>/ready", methods=["GET"])
    def model_ready(model_name: str, model_version: str | None = None) -> Response:
        check_model(model_name, model_version)
        return readiness()

    @app.route("/v2/models/<model_name>/infer", methods=["POST"])
    @app.route("/v2/models/<model_name>/versions/<model_version>/infer", methods=["POST"])
    def infer(model_name: str, model_version: str | None = None) -> Response:
        check_model(model_name, model_version)
        return reply(*endpoints.infer(request.environ))

    @app.route("/predict", methods=["POST"])
    def predict_records() -> Response:
        return reply(*endpoints.predict(request.environ))

    @app.route("/metrics", methods=["GET"])
    def prometheus_metrics() -> Response:
        text, content_type = metrics.render()
        return Response(text, status=200, content_type=content_type)

    @app.route("/openapi.json", methods=["GET"])
    def openapi() -> Response:
        return _json_response(openapi_body)

    app.wsgi_app = HotRoutes(app.wsgi_app, endpoints, metrics, name, version)  # type: ignore[method-assign]
    return app

"""A thin WSGI dispatcher in front of Flask for the two hot routes.

``POST /predict`` and ``POST /v2/models/<served model>[/versions/<its version>]/infer`` go
straight to :mod:`.endpoints`; every other request (other methods, other models, every GET)
goes to Flask unchanged. Flask's per-request machinery (request context, URL matching,
hooks, Response object) cost more than parsing and predicting one record. The answers,
error messages and metrics are the same as through Flask: the metric ``endpoint`` label is
the Flask rule the request would have matched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from time import perf_counter
from typing import Any

import orjson

from .endpoints import JSON_HEADERS, Headers, PredictionEndpoints
from .metrics import ServingMetrics
from .payloads import PayloadError

log = logging.getLogger("linkedge.serving")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Handler = Callable[[Mapping[str, Any]], tuple[bytes, Headers]]
PREDICT_RULE = "/predict"
INFER_RULE = "/v2/models/<model_name>/infer"
VERSIONED_INFER_RULE = "/v2/models/<model_name>/versions/<model_version>/infer"


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase.upper()}"
    except ValueError:
        return f"{status} UNKNOWN"


class HotRoutes:
    """WSGI middleware: ``app.wsgi_app = HotRoutes(app.wsgi_app, ...)``."""

    def __init__(
        self,
        app: WSGIApp,
        endpoints: PredictionEndpoints,
        metrics: ServingMetrics,
        model_name: str,
        model_version: str,
    ) -> None:
        self.app = app
        self.metrics = metrics
        model = f"/v2/models/{model_name}"
        self.routes: dict[str, tuple[str, Handler]] = {
            "/predict": (PREDICT_RULE, endpoints.predict),
            f"{model}/infer": (INFER_RULE, endpoints.infer),
            f"{model}/versions/{model_version}/infer": (VERSIONED_INFER_RULE, endpoints.infer),
        }
        self._status_lines = {
            code: status_line(code) for code in (200, 400, 401, 408, 413, 415, 500, 503)
        }

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            route = self.routes.get(environ.get("PATH_INFO", ""))
            if route is not None:
                return self.serve(environ, start_response, *route)
        return self.app(environ, start_response)

    def serve(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        rule: str,
        handler: Handler,
    ) -> list[bytes]:
        started = perf_counter()
        status = 200
        try:
            body, headers = handler(environ)
        except PayloadError as exc:
            status, body = exc.status, orjson.dumps({"error": exc.message})
            headers = [*JSON_HEADERS, *exc.headers] if exc.headers else JSON_HEADERS
        except Exception as exc:
            log.exception("unexpected error on POST %s", environ.get("PATH_INFO", "")[:200])
            message = f"internal error ({type(exc).__name__}); see the server log"
            status, body, headers = 500, orjson.dumps({"error": message}), JSON_HEADERS
        line = self._status_lines.get(status) or status_line(status)
        start_response(line, [*headers, ("Content-Length", str(len(body)))])
        self.metrics.observe_request(rule, "POST", status, perf_counter() - started)
        return [body]

"""hypothesis fuzz of /predict and V2 infer (JSON and binary), in process.

Every request goes through the WSGI fast path (what gunicorn serves) and, separately,
through Flask's own views (what the fast path stands in front of). Both must answer every
request with a 2xx or a clear 4xx: never a 5xx, never an exception; and both the same.
V2 infer takes what tritonclient's JSON mode sends (no Content-Type, NaN for a missing
value) and answers it as it answers the same rows with null.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import hypothesis
import orjson
import pytest
from flask import Flask
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from inference_image.bundle import ModelBundle

from .checks import assert_clear_answer
from .conftest import TOKEN
from .hostile import (
    NAN_ELSEWHERE,
    HostileRequest,
    hostile_requests,
    tritonclient_json,
    tritonclient_rows,
)
from .outcomes import OUTCOMES

MAX_EXAMPLES = 600  # per target
SETTINGS = hypothesis.settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_for(request: HostileRequest, authorization: str | None = None) -> dict[str, Any]:
    headers = dict(request.headers)
    if authorization is not None:
        headers["Authorization"] = authorization
    environ = EnvironBuilder(
        path=request.path,
        method="POST",
        input_stream=io.BytesIO(request.body),
        headers=headers,
    ).get_environ()
    environ.pop("CONTENT_TYPE", None)
    if request.content_type is not None:
        environ["CONTENT_TYPE"] = request.content_type
    environ["CONTENT_LENGTH"] = str(len(request.body))
    if request.chunked:  # as gunicorn passes a chunked body: no length, terminated stream
        del environ["CONTENT_LENGTH"]
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    elif request.content_length is not None:
        environ["CONTENT_LENGTH"] = request.content_length
    return environ


def call(app: WSGIApp, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    body, status, headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), dict(headers), b"".join(body)


def assert_valid_success(path: str, headers: dict[str, str], body: bytes) -> None:
    if headers.get("Content-Type") == "application/octet-stream":
        json_length = int(headers["Inference-Header-Content-Length"])
        document = orjson.loads(body[:json_length])
    else:
        document = orjson.loads(body)
    if path == "/predict":
        assert document["predictions"] and all(
            0.0 <= p["probability"] <= 1.0 for p in document["predictions"]
        )
    else:
        assert {o["name"] for o in document["outputs"]} <= {"probability", "label"}


PATHS = ["/predict", "/v2/models/aps-classifier/infer"]


def versioned_paths(bundle: ModelBundle) -> list[str]:
    return [*PATHS, f"/v2/models/aps-classifier/versions/{bundle.version}/infer"]


def fuzz(app: WSGIApp, target: str, paths: list[str], authorization: str | None = None) -> None:
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(request=hostile_requests(paths))
    def run(request: HostileRequest) -> None:
        status, headers, body = call(app, environ_for(request, authorization))
        OUTCOMES.record(f"{target}:{request.path.replace(bundle_version[0], '{version}')}", status)
        assert_clear_answer(status, headers, body, request)
        if status == 200:
            assert_valid_success(request.path, headers, body)

    run()


bundle_version: list[str] = [""]


@pytest.fixture(autouse=True)
def _version(tiny_bundle: ModelBundle) -> None:
    bundle_version[0] = tiny_bundle.version


def test_fast_path_answers_hostile_requests_with_4xx(
    fuzz_app: Flask, tiny_bundle: ModelBundle
) -> None:
    fuzz(fuzz_app, "hypothesis-fastpath", versioned_paths(tiny_bundle))


def test_flask_views_answer_hostile_requests_with_4xx(
    fuzz_app: Flask, tiny_bundle: ModelBundle
) -> None:
    flask_only = fuzz_app.wsgi_app.app  # the Flask WSGI app behind the fast path
    fuzz(flask_only, "hypothesis-flask", versioned_paths(tiny_bundle))


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {TOKEN.decode()}",
        None,
        "Bearer wrong",
        "Basic Zm9vOmJhcg==",
        "Bearer",
        "Bearer \u00e9",
    ],
)
def test_hostile_requests_with_and_without_the_token(
    fuzz_app_with_token: Flask, authorization: str | None
) -> None:
    """With the right token as above; with anything else every request is a 401."""
    target = (
        "hypothesis-token"
        if authorization == f"Bearer {TOKEN.decode()}"
        else "hypothesis-bad-token"
    )

    @hypothesis.settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(request=hostile_requests(PATHS), via_flask=st.booleans())
    def run(request: HostileRequest, via_flask: bool) -> None:
        app = fuzz_app_with_token.wsgi_app.app if via_flask else fuzz_app_with_token
        status, headers, body = call(app, environ_for(request, authorization))
        OUTCOMES.record(f"{target}:{request.path}", status)
        assert_clear_answer(status, headers, body, request)
        if target == "hypothesis-bad-token":
            assert status == 401, (status, body)

    run()


def test_fast_path_and_flask_views_give_the_same_answers(
    fuzz_app: Flask, tiny_bundle: ModelBundle
) -> None:
    flask_only = fuzz_app.wsgi_app.app

    @hypothesis.settings(SETTINGS, max_examples=300)
    @hypothesis.given(request=hostile_requests(versioned_paths(tiny_bundle)))
    def run(request: HostileRequest) -> None:
        fast = call(fuzz_app, environ_for(request))
        OUTCOMES.record("hypothesis-fast-vs-flask", fast[0])
        flask = call(flask_only, environ_for(request))
        assert (fast[0], fast[2]) == (flask[0], flask[2]), request
        assert fast[1].get("Content-Type") == flask[1].get("Content-Type"), request

    run()


INFER = "/v2/models/aps-classifier/infer"


def test_nan_in_v2_data_is_answered_as_null(fuzz_app: Flask) -> None:
    """tritonclient's JSON mode (no Content-Type, NaN) gets the answer of null rows."""
    flask_only = fuzz_app.wsgi_app.app

    @hypothesis.settings(SETTINGS, max_examples=150)
    @hypothesis.given(
        rows=tritonclient_rows(),
        datatype=st.sampled_from(["FP32", "FP64"]),
        content_type=st.sampled_from([None, "application/json"]),
        via_flask=st.booleans(),
    )
    def run(rows: list, datatype: str, content_type: str | None, via_flask: bool) -> None:
        app = flask_only if via_flask else fuzz_app
        by_null = tritonclient_json(rows, datatype, nan=False)
        by_nan = tritonclient_json(rows, datatype)
        answers = [
            call(app, environ_for(HostileRequest(INFER, body, content_type)))
            for body in (by_nan, by_null)
        ]
        OUTCOMES.record("hypothesis-nan-as-null", answers[0][0])
        assert answers[0][0] == 200, answers[0][2]
        assert answers[0][2] == answers[1][2]

    run()


@pytest.mark.parametrize(
    ("old", "new"), NAN_ELSEWHERE, ids=[n.decode()[:40] for _, n in NAN_ELSEWHERE]
)
def test_nan_outside_v2_data_is_400_naming_where(fuzz_app: Flask, old: bytes, new: bytes) -> None:
    body = tritonclient_json([[None] + [1.0] * 169]).replace(old, new, 1)
    assert body.count(b"NaN") == 2, body[-200:]
    for app in (fuzz_app, fuzz_app.wsgi_app.app):
        for content_type in (None, "application/json"):
            status, headers, answer = call(
                app, environ_for(HostileRequest(INFER, body, content_type))
            )
            assert_clear_answer(status, headers, answer, body)
            assert status == 400 and b"NaN is only accepted in an input tensor" in answer, answer

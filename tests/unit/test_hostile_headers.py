"""Regressions found by the fuzz suite, and the request-time limit's 408, in process."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from inference_image.bundle import ModelBundle
from inference_image.serving.app import create_app
from inference_image.serving.config import ServingConfig
from inference_image.serving.validation import BEYOND_ANY_BODY, byte_count

INFER = "/v2/models/aps-classifier/infer"


@pytest.fixture(scope="module")
def app(tiny_bundle: ModelBundle) -> Flask:
    return create_app(tiny_bundle, ServingConfig(max_body_bytes=20_000))


def answer(app: Any, path: str, body: bytes, **environ: Any) -> tuple[int, dict[str, Any]]:
    built = EnvironBuilder(
        path=path, method="POST", input_stream=io.BytesIO(body), content_type="application/json"
    ).get_environ()
    built.update(environ)
    chunks, status, _ = run_wsgi_app(app, built, buffered=True)
    return int(status.split()[0]), orjson.loads(b"".join(chunks))


@pytest.mark.parametrize("via_flask", [False, True], ids=["fastpath", "flask"])
def test_a_content_length_of_5000_digits_is_413_not_500(app: Flask, via_flask: bool) -> None:
    """int() refuses strings of more than 4,300 digits with ValueError: it was a 500."""
    wsgi = app.wsgi_app.app if via_flask else app
    for path in ("/predict", INFER):
        status, body = answer(wsgi, path, b"{}", CONTENT_LENGTH="9" * 5000)
        assert status == 413, body
        assert body["error"].startswith("request body of 99999999999999999999... (5000 digits)")


@pytest.mark.parametrize("via_flask", [False, True], ids=["fastpath", "flask"])
def test_a_binary_header_length_of_5000_digits_is_400_not_500(app: Flask, via_flask: bool):
    wsgi = app.wsgi_app.app if via_flask else app
    status, body = answer(
        wsgi,
        INFER,
        b"{}",
        CONTENT_TYPE="application/octet-stream",
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH="9" * 5000,
    )
    assert status == 400, body
    assert body["error"] == (
        "Inference-Header-Content-Length: 99999999999999999999... (5000 digits) exceeds the "
        "body's 2 bytes"
    )


def test_byte_count() -> None:
    assert byte_count("0") == 0 and byte_count("0042") == 42
    assert byte_count("0" * 5000 + "7") == 7  # leading zeros are not magnitude
    assert byte_count("9" * 19) == BEYOND_ANY_BODY == byte_count("9" * 5000)
    for bad in ("", "-1", " 5", "1e3", "0x10", "\u0661\u0662", "5 "):
        assert byte_count(bad) is None, bad


class StalledStream:
    """A request body stream whose client stopped sending (the worker's deadline fired)."""

    def read(self, size: int = -1) -> bytes:
        raise TimeoutError("the request did not arrive within 2 s")


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("path", ["/predict", INFER])
def test_a_body_that_does_not_arrive_in_time_is_408(app: Flask, path: str, chunked: bool):
    environ: dict[str, Any] = {"wsgi.input": StalledStream(), "CONTENT_LENGTH": "100"}
    if chunked:
        environ.update(
            CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked", **{"wsgi.input_terminated": True}
        )
    for wsgi in (app, app.wsgi_app.app):
        status, body = answer(wsgi, path, b"", **environ)
        assert status == 408, body
        assert body["error"] == (
            "request body not received in time: the request did not arrive within 2 s"
        )

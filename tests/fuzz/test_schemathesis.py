"""schemathesis against the app's own OpenAPI document, with and without the API token.

Every operation of the document gets positive and negative cases, in-process through
WSGI (the fast path for /predict and V2 infer, Flask for the rest). Besides schemathesis'
own checks (no 5xx, status codes, content types, headers and bodies conform to the
document, negative data rejected), every 4xx must be a JSON error message.

schemathesis' pytest plugin cannot load a schema from a fixture under this pytest, so each
operation's strategy drives a plain hypothesis test.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from flask import Flask
from schemathesis import GenerationMode
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import positive_data_acceptance

from inference_image.serving.binary import HEADER, MEDIA_TYPE

from .checks import assert_clear_answer
from .conftest import FUZZ_MAX_BODY_BYTES, TOKEN
from .outcomes import OUTCOMES

MAX_EXAMPLES = 50  # per operation and generation mode
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
)


# OpenAPI 3.0 cannot relate two fields: that shape [N, 170] needs N x 170 values in data,
# that shape's second dimension is 170, or that Inference-Header-Content-Length must be
# the byte length of the body's JSON part. A schema-valid V2 request may be refused for
# exactly those reasons, and for no other.
SHAPE_ONLY_REFUSALS = (
    "values for shape",
    "values per row",
    "shape: expected [N, 170] or [170]",
    "rows exceed the limit",
)


def body_over_the_limit(response: Response) -> bool:
    """The request's body was larger than the server's LINKEDGE_MAX_BODY_BYTES (a limit the
    OpenAPI document cannot state, so schema-valid bodies may exceed it)."""
    body = getattr(response.request, "body", None) or b""
    return len(body) > FUZZ_MAX_BODY_BYTES


def valid_predict_refused_only_for_its_size(
    ctx: Any, response: Response, case: schemathesis.Case
) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return  # as positive_data_acceptance, which this replaces for /predict
    assert response.status_code == 413 and body_over_the_limit(response), (
        response.status_code,
        response.content[:300],
    )


def valid_infer_refused_only_for_its_shape(
    ctx: Any, response: Response, case: schemathesis.Case
) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return  # as positive_data_acceptance, which this replaces for V2 infer
    message = response.json()["error"]
    if response.status_code == 413 and body_over_the_limit(response):
        return
    if case.media_type == MEDIA_TYPE or not isinstance(case.body, dict):
        # The document can only call a binary body an opaque string: random bytes (which
        # schemathesis also sends as application/json), with or without the header they
        # need (415 without it), are refused as they should be.
        assert response.status_code in (400, 413, 415), (response.status_code, message)
        return
    assert response.status_code in (400, 413), (response.status_code, message)
    if HEADER.lower() in {name.lower() for name in case.headers or {}}:
        return  # the JSON part is whatever that many bytes of the body are
    if beyond_64_bits(case.body):
        # orjson reads integers beyond 64 bits as floats: refused as "expected an integer".
        assert "expected an integer" in message, message
        return
    assert any(reason in message for reason in SHAPE_ONLY_REFUSALS), message


def beyond_64_bits(body: dict) -> bool:
    """Whether a shape of the V2 request holds an integer JSON parsers cannot keep exact."""
    inputs = body.get("inputs")
    shapes = [tensor.get("shape") for tensor in inputs or [] if isinstance(tensor, dict)]
    return any(
        isinstance(dim, int) and not -(2**63) <= dim < 2**64
        for shape in shapes
        if isinstance(shape, list)
        for dim in shape
    )


def errors_name_the_problem(ctx: Any, response: Response, case: schemathesis.Case) -> None:
    headers = {name: values[0] for name, values in response.headers.items()}
    assert_clear_answer(response.status_code, headers, response.content, case)


def refused_without_the_token(ctx: Any, response: Response, case: schemathesis.Case) -> None:
    """Without a token: 401, or 404 for a model version that does not exist (metadata is
    public anyway)."""
    assert response.status_code in (401, 404), (response.status_code, response.content[:200])


GUARDED = ("/predict", "/infer")


def fuzz_operation(
    operation: Any, mode: GenerationMode, label: str, token: str | None, guarded: bool
) -> None:
    """``token``: sent as the bearer token; None: no Authorization header at all."""
    checks: list[Any] = [errors_name_the_problem]
    excluded: list[Any] = []
    if guarded and token is None:
        checks.append(refused_without_the_token)
    elif mode is GenerationMode.POSITIVE and operation.path.endswith("/infer"):
        checks.append(valid_infer_refused_only_for_its_shape)
        excluded.append(positive_data_acceptance)
    elif mode is GenerationMode.POSITIVE and operation.path.endswith("/predict"):
        checks.append(valid_predict_refused_only_for_its_size)
        excluded.append(positive_data_acceptance)

    @SETTINGS
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        if token is None:  # schemathesis makes up Authorization values: send none
            case.headers = {
                k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
            }
        response = case.call_and_validate(additional_checks=checks, excluded_checks=excluded)
        OUTCOMES.record(label, response.status_code)

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # No negative case exists for an operation without parameters or body.
        assert mode is GenerationMode.NEGATIVE, label


def fuzz_schema(app: Flask, target: str, token: str | None, requires_token: bool) -> set[str]:
    """Run every operation of ``app``'s document; their labels."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    # Invalid data may also be refused for its size: 413 (documented) is a rejection too.
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    if token is not None:

        @schema.auth()
        class BearerToken:
            """The real token (schemathesis' ignored_auth check then also sends none)."""

            def get(self, case: schemathesis.Case, ctx: Any) -> str:
                return token

            def set(self, case: schemathesis.Case, data: str, ctx: Any) -> None:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    labels = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        labels.add(label)
        guarded = requires_token and operation.path.endswith(GUARDED)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(operation, mode, f"schemathesis{target}:{label}", token, guarded)
    return labels


# /openapi.json itself is the one operation schemathesis leaves out.
OPERATIONS = {
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/aps-classifier",
    "GET /v2/models/aps-classifier/ready",
    "GET /v2/models/aps-classifier/versions/{version}",
    "GET /v2/models/aps-classifier/versions/{version}/ready",
    "POST /v2/models/aps-classifier/infer",
    "POST /v2/models/aps-classifier/versions/{version}/infer",
    "POST /predict",
    "GET /metrics",
}


def test_open_api_conforms_to_its_document(fuzz_app: Flask) -> None:
    assert fuzz_schema(fuzz_app, "", None, requires_token=False) == OPERATIONS


@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
def test_api_with_a_token_conforms_to_its_document(
    fuzz_app_with_token: Flask, with_token: bool
) -> None:
    """With the token every operation behaves as documented; without it /predict and V2
    infer answer every request 401 (documented there) and the open ones still answer."""
    target = "+token" if with_token else "+token-required-but-absent"
    token = TOKEN.decode() if with_token else None
    assert fuzz_schema(fuzz_app_with_token, target, token, requires_token=True) == OPERATIONS

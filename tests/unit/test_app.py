"""The Flask app end to end through its test client, with a real (tiny) model."""

from __future__ import annotations

import io
import json
import math
import random
from typing import Any

import numpy as np
import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import EnvironBuilder, run_wsgi_app

from inference_image.bundle import ModelBundle
from inference_image.serving.app import create_app
from inference_image.serving.config import ServingConfig

MODEL = "/v2/models/aps-classifier"
INFER = f"{MODEL}/infer"


@pytest.fixture(scope="module")
def app(tiny_bundle: ModelBundle) -> Flask:
    return create_app(tiny_bundle)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post_json(client: FlaskClient, path: str, body: Any, **kwargs: Any):
    return client.post(path, data=orjson.dumps(body), content_type="application/json", **kwargs)


def smoke_record(bundle: ModelBundle, index: int, missing: object = None) -> dict[str, Any]:
    inputs = bundle.smoke_vectors[index]["inputs"]
    return {
        name: (missing if value is None else value)
        for name, value in zip(bundle.feature_names, inputs, strict=True)
    }


def v2_body(rows: list[list[Any]], nested: bool = False, **extra: Any) -> dict[str, Any]:
    data = rows if nested else [value for row in rows for value in row]
    body = {
        "inputs": [{"name": "input-0", "shape": [len(rows), 170], "datatype": "FP32", "data": data}]
    }
    body.update(extra)
    return body


def assert_error(response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    message = response.get_json()["error"]
    for fragment in fragments:
        assert fragment in message, message
    return message


def metric_samples(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def requests_count(samples: dict, endpoint: str, method: str, status: int) -> float:
    labels = (("endpoint", endpoint), ("method", method), ("status", str(status)))
    return samples.get(("linkedge_requests_total", labels), 0.0)


# --- health and metadata ---------------------------------------------------------------


def test_health_and_server_metadata(client: FlaskClient) -> None:
    assert client.get("/v2/health/live").get_json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.get_json() == {"ready": True}
    meta = client.get("/v2").get_json()
    assert meta["name"] == "linkedge" and isinstance(meta["version"], str)
    assert meta["extensions"] == []


def test_model_metadata(client: FlaskClient, tiny_bundle: ModelBundle) -> None:
    expected = {
        "name": "aps-classifier",
        "versions": [tiny_bundle.version],
        "platform": "xgboost",
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 170]}],
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [-1]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {
            "threshold": tiny_bundle.threshold,
            "bundle_sha256": tiny_bundle.sha256,
            "features": list(tiny_bundle.feature_names),
        },
    }
    assert client.get(MODEL).get_json() == expected
    assert client.get(f"{MODEL}/versions/{tiny_bundle.version}").get_json() == expected
    assert client.get(f"{MODEL}/ready").get_json() == {"ready": True}
    assert client.get(f"{MODEL}/versions/{tiny_bundle.version}/ready").status_code == 200


def test_create_app_from_a_path(tiny_bundle: ModelBundle) -> None:
    client = create_app(tiny_bundle.path).test_client()
    assert client.get("/v2/health/ready").status_code == 200


# --- predictions reproduce the smoke vectors --------------------------------------------


def assert_matches_smoke(bundle: ModelBundle, probabilities: list[float], labels: list[str]):
    expected = [vector["probability"] for vector in bundle.smoke_vectors]
    # The server answers with float32 values: compare them exactly as float32.
    np.testing.assert_array_equal(
        np.array(probabilities, dtype=np.float32), np.array(expected, dtype=np.float32)
    )
    assert labels == [vector["label"] for vector in bundle.smoke_vectors]


@pytest.mark.parametrize("missing", [None, "na"])
def test_predict_reproduces_smoke_vectors(
    client: FlaskClient, tiny_bundle: ModelBundle, missing: object
) -> None:
    records = [smoke_record(tiny_bundle, i, missing) for i in range(len(tiny_bundle.smoke_vectors))]
    response = post_json(client, "/predict", {"instances": records})
    assert response.status_code == 200, response.data
    body = response.get_json()
    assert body["model_version"] == tiny_bundle.version
    predictions = body["predictions"]
    assert_matches_smoke(
        tiny_bundle, [p["probability"] for p in predictions], [p["label"] for p in predictions]
    )
    assert {p["label"] for p in predictions} == {"pos", "neg"}


def test_single_record_equals_its_row_in_a_list(
    client: FlaskClient, tiny_bundle: ModelBundle
) -> None:
    records = [smoke_record(tiny_bundle, i) for i in range(len(tiny_bundle.smoke_vectors))]
    batch = post_json(client, "/predict", {"instances": records}).get_json()["predictions"]
    for index in (0, 1, 12):
        single = post_json(client, "/predict", records[index])
        assert single.status_code == 200
        assert single.get_json()["predictions"] == [batch[index]]


@pytest.mark.parametrize("nested", [False, True])
def test_v2_infer_reproduces_smoke_vectors(
    client: FlaskClient, tiny_bundle: ModelBundle, nested: bool
) -> None:
    rows = [vector["inputs"] for vector in tiny_bundle.smoke_vectors]
    response = post_json(client, INFER, v2_body(rows, nested, id="batch-1"))
    assert response.status_code == 200, response.data
    body = response.get_json()
    n = len(rows)
    assert body["model_name"] == "aps-classifier"
    assert body["model_version"] == tiny_bundle.version and body["id"] == "batch-1"
    probability, label = body["outputs"]
    assert (probability["name"], probability["datatype"], probability["shape"]) == (
        "probability",
        "FP32",
        [n],
    )
    assert (label["name"], label["datatype"], label["shape"]) == ("label", "BYTES", [n])
    assert_matches_smoke(tiny_bundle, probability["data"], label["data"])


def test_v2_versioned_infer_single_row_and_outputs_subset(
    client: FlaskClient, tiny_bundle: ModelBundle
) -> None:
    vector = tiny_bundle.smoke_vectors[5]
    body = {
        "inputs": [{"name": "x", "shape": [170], "datatype": "FP64", "data": vector["inputs"]}],
        "outputs": [{"name": "label"}],
    }
    response = post_json(client, f"{MODEL}/versions/{tiny_bundle.version}/infer", body)
    assert response.status_code == 200, response.data
    payload = response.get_json()
    assert "id" not in payload
    assert payload["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": [vector["label"]]}
    ]


def test_charset_parameter_is_accepted(client: FlaskClient, tiny_bundle: ModelBundle) -> None:
    response = client.post(
        "/predict",
        data=orjson.dumps(smoke_record(tiny_bundle, 2)),
        content_type="application/json; charset=utf-8",
    )
    assert response.status_code == 200


# --- bad inputs --------------------------------------------------------------------------


def _with(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**record, **changes}


def _without(record: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in names}


BAD_PREDICT = [
    # (id, build(record) -> body bytes, status, fragments)
    (
        "bool",
        lambda r: {"instances": [r, r, r, _with(r, ab_000=True)]},
        400,
        ["instances[3].ab_000", "boolean true"],
    ),
    (
        "string",
        lambda r: {"instances": [r, r, r, _with(r, ab_000="abc")]},
        400,
        ["instances[3].ab_000: expected a number, null or \"na\", got string 'abc'"],
    ),
    ("NaN string", lambda r: _with(r, bb_000="NaN"), 400, ["bb_000", "'NaN'"]),
    ("Infinity string", lambda r: _with(r, bb_000="Infinity"), 400, ["bb_000", "'Infinity'"]),
    ("numeric string", lambda r: _with(r, cc_000="1.5"), 400, ["cc_000", "'1.5'"]),
    ("too big", lambda r: _with(r, dd_000=1e39), 400, ["dd_000", "float32 range"]),
    ("too small", lambda r: _with(r, dd_000=-3.5e38), 400, ["dd_000", "float32 range"]),
    ("array", lambda r: _with(r, ee_000=[1]), 400, ["ee_000", "array"]),
    ("object", lambda r: _with(r, ee_000={}), 400, ["ee_000", "object"]),
    ("unknown", lambda r: _with(r, zz_999=1), 400, ["unknown feature", "'zz_999'"]),
    ("missing", lambda r: _without(r, "ag_005"), 400, ["1 missing feature", "'ag_005'"]),
    (
        "missing many",
        lambda r: {"instances": [r, {}]},
        400,
        ["instances[1]", "170 missing features", "and 165 more"],
    ),
    ("empty instances", lambda r: {"instances": []}, 400, ["instances"]),
    ("instances object", lambda r: {"instances": r}, 400, ["instances: expected an array"]),
    ("instance array", lambda r: {"instances": [list(r.values())]}, 400, ["instances[0]"]),
    ("top-level array", lambda r: [r], 400, ["request body"]),
    ("extra field", lambda r: {"instances": [r], "parameters": {}}, 400, ["'parameters'"]),
]

BAD_INFER = [
    (
        "datatype",
        lambda b: b["inputs"][0].update(datatype="INT32"),
        400,
        ["inputs[0].datatype", "'INT32'"],
    ),
    (
        "length",
        lambda b: b["inputs"][0].update(shape=[2, 170]),
        400,
        ["inputs[0].data: expected 340 values for shape [2, 170], got 170"],
    ),
    ("width", lambda b: b["inputs"][0].update(shape=[1, 171]), 400, ["inputs[0].shape"]),
    ("zero rows", lambda b: b["inputs"][0].update(shape=[0, 170]), 400, ["inputs[0].shape"]),
    (
        "na in v2",
        lambda b: b["inputs"][0]["data"].__setitem__(9, "na"),
        400,
        ["inputs[0].data[9] (row 0, feature ag_003)", "'na'"],
    ),
    (
        "bool in v2",
        lambda b: b["inputs"][0]["data"].__setitem__(0, False),
        400,
        ["inputs[0].data[0]", "boolean false"],
    ),
    (
        "too big v2",
        lambda b: b["inputs"][0]["data"].__setitem__(2, 4e38),
        400,
        ["inputs[0].data[2]", "float32 range"],
    ),
    ("no inputs", lambda b: b.pop("inputs"), 400, ["inputs: required field is missing"]),
    ("two inputs", lambda b: b.update(inputs=b["inputs"] * 2), 400, ["inputs", "got 2"]),
    ("output", lambda b: b.update(outputs=[{"name": "logit"}]), 400, ["outputs[0].name"]),
    ("id", lambda b: b.update(id=1), 400, ["id: expected a string"]),
]


@pytest.mark.parametrize(
    ("build", "status", "fragments"),
    [case[1:] for case in BAD_PREDICT],
    ids=[case[0] for case in BAD_PREDICT],
)
def test_bad_predict_requests(
    client: FlaskClient, tiny_bundle: ModelBundle, build, status: int, fragments: list[str]
) -> None:
    body = build(smoke_record(tiny_bundle, 0, "na"))
    assert_error(post_json(client, "/predict", body), status, *fragments)


@pytest.mark.parametrize(
    ("mutate", "status", "fragments"),
    [case[1:] for case in BAD_INFER],
    ids=[case[0] for case in BAD_INFER],
)
def test_bad_infer_requests(
    client: FlaskClient, tiny_bundle: ModelBundle, mutate, status: int, fragments: list[str]
) -> None:
    body = v2_body([list(tiny_bundle.smoke_vectors[0]["inputs"])])
    mutate(body)
    assert_error(post_json(client, INFER, body), status, *fragments)


@pytest.mark.parametrize("path", ["/predict", INFER])
@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "request body is empty"),
        (b"{", "not valid JSON"),
        (b'{"aa_000": NaN}', "NaN"),  # V2: NaN only in data; /predict: never
        (b'{"aa_000": Infinity}', "not valid JSON: Infinity is not JSON"),
        (b'{"aa_000": -Infinity}', "not valid JSON: -Infinity is not JSON"),
        (b'{"aa_000": 1e400}', "not valid JSON"),
        (b"\xff", "not valid JSON"),
    ],
)
def test_invalid_json_is_400(client: FlaskClient, path: str, raw: bytes, fragment: str) -> None:
    assert_error(client.post(path, data=raw, content_type="application/json"), 400, fragment)


@pytest.mark.parametrize(
    "path",
    ["/nope", "/v2/models", "/v2/models/other", f"{MODEL}/versions/v999", "/predict/"],
)
def test_unknown_paths_and_models_are_404(client: FlaskClient, path: str) -> None:
    message = assert_error(client.get(path), 404)
    assert message


def test_unknown_model_and_version_messages(client: FlaskClient, tiny_bundle: ModelBundle):
    body = v2_body([tiny_bundle.smoke_vectors[0]["inputs"]])
    assert_error(post_json(client, "/v2/models/other/infer", body), 404, "unknown model 'other'")
    assert_error(
        post_json(client, f"{MODEL}/versions/v999/infer", body), 404, "unknown version 'v999'"
    )
    assert_error(client.get("/v2/models/other/ready"), 404, "unknown model 'other'")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/predict", "POST"),
        ("PUT", INFER, "POST"),
        ("POST", "/v2/health/live", "GET"),
        ("DELETE", MODEL, "GET"),
        ("POST", "/metrics", "GET"),
    ],
)
def test_wrong_method_is_405(client: FlaskClient, method: str, path: str, allowed: str) -> None:
    response = client.open(path, method=method)
    assert_error(response, 405, method, allowed)
    assert allowed in response.headers["Allow"]


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        *[
            ("/predict", content_type)
            for content_type in ("text/plain", "application/x-www-form-urlencoded", None)
        ],
        ("/predict", "application/jsonx"),
        *[
            (INFER, content_type)  # without the binary extension's header
            for content_type in (
                "text/plain",
                "application/x-www-form-urlencoded",
                "application/jsonx",
                "application/octet-stream",
            )
        ],
    ],
)
def test_wrong_content_type_is_415(
    app: Flask, tiny_bundle: ModelBundle, path: str, content_type: str | None
) -> None:
    body = orjson.dumps(v2_body([tiny_bundle.smoke_vectors[0]["inputs"]]))
    status, _, message = both_paths(app, path, body, content_type)
    assert status == 415
    assert "application/json" in message["error"]
    shown = "no Content-Type" if content_type is None else repr(content_type)
    assert shown in message["error"], message


# --- V2 infer as tritonclient's JSON mode sends it: no Content-Type, bare NaN ------------


def both_paths(
    app: Flask, path: str, body: bytes, content_type: str | None, **headers: str
) -> tuple[int, str | None, Any]:
    """The answer of the fast path, checked identical to Flask's views' for the request."""
    answers = []
    for wsgi in (app, app.wsgi_app.app):  # the fast path, and the Flask app behind it
        environ = EnvironBuilder(
            path=path, method="POST", input_stream=io.BytesIO(body), headers=headers
        ).get_environ()
        environ.pop("CONTENT_TYPE", None)
        if content_type is not None:
            environ["CONTENT_TYPE"] = content_type
        environ["CONTENT_LENGTH"] = str(len(body))
        chunks, status, response_headers = run_wsgi_app(wsgi, environ, buffered=True)
        answers.append((status, response_headers.get("Content-Type"), b"".join(chunks)))
    assert answers[0] == answers[1]
    status, media_type, data = answers[0]
    document = orjson.loads(data) if media_type == "application/json" else data
    return int(status.split()[0]), media_type, document


def nan_json(body: dict[str, Any]) -> bytes:
    """``body`` as Python's json module (and so tritonclient) writes it: None -> NaN."""

    def nan(values: list[Any]) -> list[Any]:
        return [nan(v) if type(v) is list else math.nan if v is None else v for v in values]

    for tensor in body["inputs"]:
        tensor["data"] = nan(tensor["data"])
    text = json.dumps(body).encode()
    assert b"NaN" in text and b"null" not in text
    return text


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "application/json; charset=utf-8"]
)
def test_v2_infer_takes_json_without_content_type_on_both_paths(
    app: Flask, tiny_bundle: ModelBundle, content_type: str | None
) -> None:
    rows = [vector["inputs"] for vector in tiny_bundle.smoke_vectors]
    body = orjson.dumps(v2_body(rows, id="no-type"))
    status, media_type, document = both_paths(app, INFER, body, content_type)
    assert (status, media_type) == (200, "application/json"), document
    assert document["id"] == "no-type"
    probability, label = document["outputs"]
    assert_matches_smoke(tiny_bundle, probability["data"], label["data"])
    versioned = f"{MODEL}/versions/{tiny_bundle.version}/infer"
    assert both_paths(app, versioned, body, content_type)[2] == document


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_nan_in_v2_data_is_a_missing_value_like_null(
    app: Flask, tiny_bundle: ModelBundle, datatype: str, nested: bool, content_type: str | None
) -> None:
    rows = [vector["inputs"] for vector in tiny_bundle.smoke_vectors]  # row 0: all missing
    with_null = v2_body(rows, nested, id="nan")
    with_null["inputs"][0]["datatype"] = datatype
    by_null = both_paths(app, INFER, orjson.dumps(with_null), content_type)
    by_nan = both_paths(app, INFER, nan_json(with_null), content_type)
    assert by_nan[0] == 200, by_nan
    assert by_nan == by_null
    probability, label = by_nan[2]["outputs"]
    assert_matches_smoke(tiny_bundle, probability["data"], label["data"])
    one_row = v2_body([rows[1]])
    assert both_paths(app, INFER, nan_json(one_row), None) == both_paths(
        app, INFER, orjson.dumps(one_row), None
    )


def test_v2_nan_answers_equal_predict_with_null_and_na(
    app: Flask, tiny_bundle: ModelBundle
) -> None:
    rows = [vector["inputs"] for vector in tiny_bundle.smoke_vectors]
    _, _, inferred = both_paths(app, INFER, nan_json(v2_body(rows)), None)
    probability, label = inferred["outputs"]
    for missing in (None, "na"):
        records = [smoke_record(tiny_bundle, i, missing) for i in range(len(rows))]
        body = orjson.dumps({"instances": records})
        _, _, predicted = both_paths(app, "/predict", body, "application/json")
        predictions = predicted["predictions"]
        assert [p["probability"] for p in predictions] == probability["data"]
        assert [p["label"] for p in predictions] == label["data"]


def _v2_text(data: str, tensor: dict[str, str] | None = None, **fields: str) -> bytes:
    """A V2 body written by hand: ``data`` and every field value are JSON text."""
    members = ['"name": "x"', '"shape": [1, 170]', '"datatype": "FP32"', f'"data": [{data}]']
    members += [f'"{name}": {value}' for name, value in (tensor or {}).items()]
    top = [f'"{name}": {value}' for name, value in fields.items()]
    return ("{" + ", ".join(['"inputs": [{' + ", ".join(members) + "}]", *top]) + "}").encode()


_ROW_WITH_NAN = ", ".join(["NaN"] * 3 + ["1.5"] * 167)


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (_v2_text(_ROW_WITH_NAN, id="NaN"), ["id: NaN is only accepted in an input tensor's data"]),
        (
            _v2_text(_ROW_WITH_NAN, parameters='{"binary_data_output": NaN}'),
            ["parameters.binary_data_output: NaN is only accepted"],
        ),
        (
            _v2_text(_ROW_WITH_NAN, tensor={"parameters": '{"x": [1, NaN]}'}),
            ["inputs[0].parameters.x[1]: NaN is only accepted"],
        ),
        (
            _v2_text(_ROW_WITH_NAN, outputs='[{"name": "label", "parameters": {"y": NaN}}]'),
            ["outputs[0].parameters.y: NaN is only accepted"],
        ),
        (_v2_text(_ROW_WITH_NAN).replace(b"[1, 170]", b"[NaN, 170]"), ["inputs[0].shape[0]: NaN"]),
        (_v2_text(_ROW_WITH_NAN.replace("1.5", "Infinity", 1)), ["Infinity is not JSON"]),
        (_v2_text(_ROW_WITH_NAN.replace("1.5", "-Infinity", 1)), ["-Infinity is not JSON"]),
        (_v2_text(_ROW_WITH_NAN.replace("NaN", "Infinity", 1)), ["Infinity is not JSON"]),
        (_v2_text(_ROW_WITH_NAN.replace("1.5", "1e400", 1)), ["data[3]", "float32 range"]),
        (_v2_text(_ROW_WITH_NAN.replace("1.5", "4e38", 1)), ["data[3]", "float32 range"]),
        (_v2_text(_ROW_WITH_NAN.replace("NaN", "-NaN", 1)), ["not valid JSON"]),
        (_v2_text(_ROW_WITH_NAN.replace("NaN", '"NaN"', 1)), ["data[0]", "string 'NaN'"]),
        (_v2_text(_ROW_WITH_NAN)[:-3], ["not valid JSON"]),
        (_v2_text(_ROW_WITH_NAN, id='"\\ud800"'), ["lone surrogate"]),
    ],
)
def test_nan_elsewhere_and_infinities_are_400_on_both_paths(
    app: Flask, body: bytes, fragments: list[str]
) -> None:
    for content_type in (None, "application/json"):
        status, _, document = both_paths(app, INFER, body, content_type)
        assert status == 400, document
        for fragment in fragments:
            assert fragment in document["error"], document


def test_predict_keeps_refusing_nan_and_says_what_to_send(
    app: Flask, tiny_bundle: ModelBundle
) -> None:
    record = orjson.dumps(smoke_record(tiny_bundle, 1))
    assert b"null" in record
    status, _, document = both_paths(
        app, "/predict", record.replace(b"null", b"NaN"), "application/json"
    )
    assert status == 400
    assert 'NaN is not JSON: send null (or "na") for a missing value' in document["error"]
    infinite = record.replace(b"null", b"-Infinity", 1)
    status, _, document = both_paths(app, "/predict", infinite, "application/json")
    assert status == 400 and "-Infinity is not JSON" in document["error"], document


def test_binary_data_without_its_header_gets_a_hint(app: Flask, tiny_bundle: ModelBundle) -> None:
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": [1, 170],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 680},
            }
        ]
    }
    body = orjson.dumps(header) + np.ones(170, "<f4").tobytes()
    for content_type in (None, "application/json"):
        status, _, document = both_paths(app, INFER, body, content_type)
        assert status == 400
        assert "Inference-Header-Content-Length header" in document["error"], document
    status, _, document = both_paths(app, INFER, body, "application/octet-stream")
    assert status == 415 and "Inference-Header-Content-Length" in document["error"], document


@pytest.fixture(scope="module")
def small_app(tiny_bundle: ModelBundle) -> Flask:
    return create_app(tiny_bundle, ServingConfig(max_body_bytes=20_000, max_rows=3))


@pytest.fixture
def small_client(small_app: Flask) -> FlaskClient:
    return small_app.test_client()


def _chunked_environ(body: bytes) -> dict[str, Any]:
    """A POST /predict as gunicorn passes a chunked body: no Content-Length, terminated."""
    environ = EnvironBuilder(
        path="/predict",
        method="POST",
        input_stream=io.BytesIO(body),
        content_type="application/json",
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    return environ


def test_body_over_the_byte_limit_is_413(
    small_app: Flask, small_client: FlaskClient, tiny_bundle: ModelBundle
) -> None:
    records = [smoke_record(tiny_bundle, i) for i in range(len(tiny_bundle.smoke_vectors))]
    body = orjson.dumps({"instances": records})
    assert len(body) > 20_000
    assert_error(post_json(small_client, "/predict", {"instances": records}), 413, "20000 bytes")

    three = orjson.dumps({"instances": records[:3]})
    exactly = three + b" " * (20_000 - len(three))  # valid JSON of exactly the limit
    response = small_client.post("/predict", data=exactly, content_type="application/json")
    assert response.status_code == 200
    response = small_client.post("/predict", data=exactly + b" ", content_type="application/json")
    assert_error(response, 413, "20000 bytes")

    for payload, expected in ((exactly, "200 "), (exactly + b" ", "413 "), (body, "413 ")):
        _, status, headers = run_wsgi_app(small_app, _chunked_environ(payload), buffered=True)
        assert status.startswith(expected), (len(payload), status)
        assert headers["Content-Type"] == "application/json"


def test_rows_over_the_row_limit_are_413(small_client: FlaskClient, tiny_bundle: ModelBundle):
    record = {name: None for name in tiny_bundle.feature_names}
    assert post_json(small_client, "/predict", {"instances": [record] * 3}).status_code == 200
    assert_error(
        post_json(small_client, "/predict", {"instances": [record] * 4}),
        413,
        "instances: 4 records exceed the limit of 3",
    )
    body = v2_body([[None] * 170] * 4)
    assert_error(post_json(small_client, INFER, body), 413, "inputs[0].shape", "limit of 3")


# --- metrics ----------------------------------------------------------------------------


def test_metrics_count_requests_predictions_and_model(
    client: FlaskClient, tiny_bundle: ModelBundle
) -> None:
    before = metric_samples(client)
    records = [smoke_record(tiny_bundle, i) for i in range(len(tiny_bundle.smoke_vectors))]
    n_pos = sum(v["label"] == "pos" for v in tiny_bundle.smoke_vectors)
    assert post_json(client, "/predict", {"instances": records}).status_code == 200
    assert post_json(client, "/predict", records[0]).status_code == 200
    assert post_json(client, "/predict", {"instances": []}).status_code == 400
    assert client.get("/no/such/path").status_code == 404
    assert post_json(client, INFER, v2_body([records and tiny_bundle.smoke_vectors[0]["inputs"]]))
    after = metric_samples(client)

    def delta(endpoint: str, method: str, status: int) -> float:
        return requests_count(after, endpoint, method, status) - requests_count(
            before, endpoint, method, status
        )

    assert delta("/predict", "POST", 200) == 2
    assert delta("/predict", "POST", 400) == 1
    assert delta("<unmatched>", "GET", 404) == 1
    assert delta("/v2/models/<model_name>/infer", "POST", 200) == 1
    assert delta("/metrics", "GET", 200) == 1  # the first scrape, counted after it answered
    first_label = tiny_bundle.smoke_vectors[0]["label"]
    for label, expected in (("pos", n_pos), ("neg", len(records) - n_pos)):
        key = ("linkedge_predictions_total", (("label", label),))
        expected += 2 if label == first_label else 0  # the single record and the V2 row
        assert after[key] - before.get(key, 0.0) == expected
    duration = ("linkedge_request_duration_seconds_count", (("endpoint", "/predict"),))
    assert after[duration] - before.get(duration, 0.0) == 3
    info = (
        "linkedge_model_info",
        (("bundle_sha256", tiny_bundle.sha256), ("version", tiny_bundle.version)),
    )
    assert after[info] == 1


def test_unusual_methods_do_not_grow_label_cardinality(client: FlaskClient) -> None:
    client.open("/predict", method="BREW")
    samples = metric_samples(client)
    methods = {dict(labels).get("method") for (name, labels) in samples if "requests" in name}
    assert "BREW" not in methods and "OTHER" in methods


def test_each_app_has_its_own_registry(tiny_bundle: ModelBundle) -> None:
    first, second = create_app(tiny_bundle).test_client(), create_app(tiny_bundle).test_client()
    first.get("/v2/health/live")
    first.get("/v2/health/live")
    assert requests_count(metric_samples(first), "/v2/health/live", "GET", 200) == 2
    assert requests_count(metric_samples(second), "/v2/health/live", "GET", 200) == 0


# --- OpenAPI ----------------------------------------------------------------------------


def test_openapi_document_is_valid_and_complete(client: FlaskClient, app: Flask) -> None:
    from openapi_spec_validator import validate

    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    validate(document)
    assert document["openapi"] == "3.0.3"
    documented = set()
    for path, operations in document["paths"].items():
        for method in operations:
            documented.add((method.upper(), path.replace("{version}", "<model_version>")))
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<model_name>", "aps-classifier")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, (method, path)
    record = document["components"]["schemas"]["Record"]
    assert len(record["properties"]) == 170 and record["additionalProperties"] is False
    assert record["required"] == list(record["properties"])


def _validator(document: dict[str, Any], schema: dict[str, Any]):
    from openapi_schema_validator import OAS30Validator

    return OAS30Validator({**schema, "components": document["components"]})


def test_openapi_schemas_agree_with_the_server(
    client: FlaskClient, tiny_bundle: ModelBundle
) -> None:
    document = client.get("/openapi.json").get_json()
    predict = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    infer = document["paths"][INFER]["post"]["requestBody"]["content"]["application/json"]
    predict_schema = _validator(document, predict["schema"])
    infer_schema = _validator(document, infer["schema"])
    good = smoke_record(tiny_bundle, 1, "na")
    for body in (good, {"instances": [good, good]}, predict["example"]):
        assert predict_schema.is_valid(body)
        assert post_json(client, "/predict", body).status_code == 200
    for body in (
        _with(good, aa_000=True),
        _with(good, aa_000="x"),
        _with(good, zz=1),
        _with(good, aa_000=3.5e38),
        {"instances": []},
        _without(good, "aa_000"),
    ):
        assert not predict_schema.is_valid(body)
        assert post_json(client, "/predict", body).status_code == 400
    assert infer_schema.is_valid(infer["example"])
    assert post_json(client, INFER, infer["example"]).status_code == 200
    bad_infer = v2_body([tiny_bundle.smoke_vectors[0]["inputs"]])
    bad_infer["inputs"][0]["datatype"] = "INT8"
    assert not infer_schema.is_valid(bad_infer)
    assert post_json(client, INFER, bad_infer).status_code == 400
    response_schema = _validator(
        document,
        document["paths"][INFER]["post"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ],
    )
    assert response_schema.is_valid(post_json(client, INFER, infer["example"]).get_json())


# --- readiness --------------------------------------------------------------------------


def test_not_ready_when_a_smoke_vector_does_not_reproduce(broken_bundle: ModelBundle) -> None:
    client = create_app(broken_bundle).test_client()
    assert client.get("/v2/health/live").status_code == 200
    for path in ("/v2/health/ready", f"{MODEL}/ready"):
        response = client.get(path)
        assert response.status_code == 503
        body = response.get_json()
        assert body["ready"] is False and "smoke vector 3" in body["reason"]
    record = smoke_record(broken_bundle, 0)
    assert_error(post_json(client, "/predict", record), 503, "not ready", "smoke vector 3")
    body = v2_body([broken_bundle.smoke_vectors[0]["inputs"]])
    assert_error(post_json(client, INFER, body), 503, "not ready")


# --- robustness -------------------------------------------------------------------------


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63 - 1, 1.5, -1e300, 5e-324, 3.4e38])
    if kind == 3:
        return rng.choice(["na", "", "NaN", "x" * 300, "\u2603", "170", "FP32", "input-0"])
    if kind in (4, 5):
        return rng.choice([[170], [1, 170], [0, 170], [-1, 170], [2, 170], [1, 2, 3]])
    if kind in (6, 7):
        keys = [
            "inputs",
            "instances",
            "shape",
            "data",
            "datatype",
            "name",
            "id",
            "outputs",
            "aa_000",
            "zz",
        ]
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_random_documents_never_cause_a_5xx(client: FlaskClient, tiny_bundle: ModelBundle):
    rng = random.Random(1234)
    record = smoke_record(tiny_bundle, 0)
    for _ in range(300):
        junk = _random_json(rng)
        mutated = dict(record)
        mutated[rng.choice(list(record))] = junk
        v2 = v2_body([list(tiny_bundle.smoke_vectors[0]["inputs"])])
        v2["inputs"][0][rng.choice(["shape", "data", "datatype", "name"])] = junk
        for path, body in (("/predict", junk), ("/predict", mutated), (INFER, junk), (INFER, v2)):
            response = post_json(client, path, body)
            assert response.status_code < 500, (path, body, response.data)
            assert response.mimetype == "application/json"


# --- configuration ------------------------------------------------------------------------


def test_config_from_env_reads_the_limits() -> None:
    config = ServingConfig.from_env(
        {
            "LINKEDGE_MAX_BODY_BYTES": "1024",
            "LINKEDGE_MAX_ROWS": " 7 ",
            "LINKEDGE_XGBOOST_NTHREAD": "2",
        }
    )
    assert config == ServingConfig(max_body_bytes=1024, max_rows=7, xgboost_nthread=2)
    assert ServingConfig.from_env({}) == ServingConfig()
    assert ServingConfig().max_body_bytes == 8 * 1024 * 1024 and ServingConfig().max_rows == 10_000


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5", "1e3"])
@pytest.mark.parametrize(
    "variable", ["LINKEDGE_MAX_BODY_BYTES", "LINKEDGE_MAX_ROWS", "LINKEDGE_XGBOOST_NTHREAD"]
)
def test_config_from_env_names_a_bad_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        ServingConfig.from_env({variable: value})

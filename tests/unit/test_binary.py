"""V2 infer with the binary tensor data extension, encoded and decoded by tritonclient itself."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from inference_image.bundle import ModelBundle
from inference_image.serving.app import create_app
from inference_image.serving.config import ServingConfig

httpclient = pytest.importorskip("tritonclient.http")

INFER = "/v2/models/aps-classifier/infer"
HEADER = "Inference-Header-Content-Length"
OUTPUTS = ("probability", "label")


@pytest.fixture(scope="module")
def app(tiny_bundle: ModelBundle) -> Flask:
    return create_app(tiny_bundle)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def smoke_rows(bundle: ModelBundle, dtype: Any = np.float32) -> np.ndarray:
    return np.array([v["inputs"] for v in bundle.smoke_vectors], dtype=np.float64).astype(dtype)


def triton_request(
    rows: np.ndarray,
    datatype: str = "FP32",
    binary_input: bool = True,
    outputs: list[Any] | None = None,
    **kwargs: Any,
) -> tuple[bytes, int | None]:
    tensor = httpclient.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=binary_input)
    return httpclient.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs, **kwargs
    )


def post(client: FlaskClient, body: bytes, json_size: int | None, **headers: str):
    if json_size is not None:
        headers[HEADER] = str(json_size)
    return client.post(INFER, data=body, headers=headers)


def triton_result(response) -> Any:
    assert response.status_code == 200, response.data
    length = response.headers.get(HEADER)
    return httpclient.InferenceServerClient.parse_response_body(
        response.data, header_length=int(length) if length is not None else None
    )


def expected(bundle: ModelBundle) -> tuple[np.ndarray, list[bytes]]:
    probabilities = np.array([v["probability"] for v in bundle.smoke_vectors], dtype=np.float32)
    return probabilities, [v["label"].encode() for v in bundle.smoke_vectors]


def test_binary_in_binary_out_as_tritonclient_sends_it(client, tiny_bundle) -> None:
    body, json_size = triton_request(smoke_rows(tiny_bundle), request_id="b-1")
    assert json_size is not None and json_size < len(body)
    response = post(client, body, json_size)
    assert response.headers["Content-Type"] == "application/octet-stream"
    result = triton_result(response)
    probabilities, labels = expected(tiny_bundle)
    np.testing.assert_array_equal(result.as_numpy("probability"), probabilities)
    assert result.as_numpy("label").tolist() == labels
    assert result.get_response()["id"] == "b-1"
    assert result.get_response()["model_name"] == "aps-classifier"


def test_binary_in_json_out(client, tiny_bundle) -> None:
    outputs = [
        httpclient.InferRequestedOutput("probability", binary_data=False),
        httpclient.InferRequestedOutput("label", binary_data=False),
    ]
    body, json_size = triton_request(smoke_rows(tiny_bundle), outputs=outputs)
    response = post(client, body, json_size, **{"Content-Type": "application/octet-stream"})
    assert response.mimetype == "application/json" and HEADER not in response.headers
    document = response.get_json()
    probabilities, labels = expected(tiny_bundle)
    by_name = {output["name"]: output["data"] for output in document["outputs"]}
    np.testing.assert_array_equal(np.array(by_name["probability"], np.float32), probabilities)
    assert by_name["label"] == [label.decode() for label in labels]


def test_json_in_binary_out_for_one_output(client, tiny_bundle) -> None:
    outputs = [httpclient.InferRequestedOutput("label", binary_data=True)]
    rows = smoke_rows(tiny_bundle)  # with NaN: tritonclient's JSON writes bare NaN tokens
    body, json_size = triton_request(rows, binary_input=False, outputs=outputs)
    assert json_size is None and b"NaN" in body  # sent as plain JSON, with no Content-Type
    result = triton_result(client.post(INFER, data=body))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    plain = {
        "inputs": [
            {
                "name": "x",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": [None if np.isnan(v) else v for v in rows.ravel().tolist()],
            }
        ]
    }
    json_labels = client.post(INFER, json=plain).get_json()["outputs"][1]["data"]
    assert result.as_numpy("label").tolist() == [label.encode() for label in json_labels]
    assert result.as_numpy("label").tolist() == expected(tiny_bundle)[1]


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_json_mode_as_tritonclient_sends_it_equals_binary_mode(client, tiny_bundle, datatype):
    """binary_data=False everywhere: no Content-Type, NaN for the missing values."""
    rows = smoke_rows(tiny_bundle, np.float64 if datatype == "FP64" else np.float32)
    assert np.isnan(rows).any()
    outputs = [httpclient.InferRequestedOutput(name, binary_data=False) for name in OUTPUTS]
    body, json_size = triton_request(rows, datatype, binary_input=False, outputs=outputs)
    assert json_size is None and b"NaN" in body
    response = client.post(INFER, data=body)  # no Content-Type, as tritonclient sends it
    assert response.mimetype == "application/json", response.data
    by_json = triton_result(response)
    binary_body, binary_size = triton_request(rows, datatype)
    by_binary = triton_result(post(client, binary_body, binary_size))
    probabilities, labels = expected(tiny_bundle)
    for result in (by_json, by_binary):
        np.testing.assert_array_equal(result.as_numpy("probability"), probabilities)
    assert by_json.as_numpy("label").tolist() == [label.decode() for label in labels]
    assert by_binary.as_numpy("label").tolist() == labels


def test_nan_in_the_json_part_of_a_binary_request(client, tiny_bundle) -> None:
    """With the header, JSON data (no binary_data_size) follows the JSON rules, NaN too."""
    rows = smoke_rows(tiny_bundle)
    body, json_size = triton_request(rows, binary_input=False)
    assert json_size is None and b"NaN" in body
    result = triton_result(post(client, body, len(body)))
    np.testing.assert_array_equal(result.as_numpy("probability"), expected(tiny_bundle)[0])
    _error(post(client, body.replace(b"NaN", b"Infinity", 1), len(body) + 5), 400, "Infinity")


def test_fp64_binary_and_the_versioned_path(client, tiny_bundle) -> None:
    body, json_size = triton_request(smoke_rows(tiny_bundle, np.float64), "FP64")
    response = client.post(
        f"/v2/models/aps-classifier/versions/{tiny_bundle.version}/infer",
        data=body,
        headers={HEADER: str(json_size)},
    )
    result = triton_result(response)
    np.testing.assert_array_equal(result.as_numpy("probability"), expected(tiny_bundle)[0])


def test_every_json_header_length_and_alignment_works(client, tiny_bundle) -> None:
    rows = smoke_rows(tiny_bundle)[:2]
    for request_id in ("", "x", "xy", "xyz"):  # shifts the floats off 4-byte alignment
        body, json_size = triton_request(rows, request_id=request_id)
        result = triton_result(post(client, body, json_size))
        np.testing.assert_array_equal(result.as_numpy("probability"), expected(tiny_bundle)[0][:2])


def test_binary_requests_are_counted_in_metrics(client, tiny_bundle) -> None:
    def count() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        for line in text.splitlines():
            if (
                line.startswith("linkedge_requests_total{")
                and '"/v2/models/<model_name>/infer"' in line
                and 'status="200"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count()
    body, json_size = triton_request(smoke_rows(tiny_bundle))
    assert post(client, body, json_size).status_code == 200
    assert count() == before + 1


def _binary_body(rows: np.ndarray, **changes: Any) -> tuple[dict[str, Any], bytes]:
    raw = rows.astype("<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    header.update(changes)
    return header, raw


def _send(client, header: dict[str, Any], raw: bytes, length: str | None = None, **headers):
    text = orjson.dumps(header)
    headers.setdefault(HEADER, length if length is not None else str(len(text)))
    return client.post(INFER, data=text + raw, headers=headers)


def _error(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    message = response.get_json()["error"]
    for fragment in fragments:
        assert fragment in message, message


def test_bad_binary_requests_name_the_problem(client, tiny_bundle) -> None:
    rows = smoke_rows(tiny_bundle)[:2]
    header, raw = _binary_body(rows)
    _error(_send(client, header, raw[:-4]), 400, "binary_data_size", "1360 bytes announced, 1356")
    _error(_send(client, header, raw + b"\0"), 400, "binary_data_size")
    _error(_send(client, header, raw, length="abc"), 400, HEADER, "'abc'")
    _error(_send(client, header, raw, length="-1"), 400, HEADER)
    _error(_send(client, header, raw, length=str(10**9)), 400, HEADER, "exceeds the body")
    _error(
        client.post(INFER, data=orjson.dumps(header), content_type="application/json"),
        400,
        "inputs[0].parameters.binary_data_size",
        HEADER,
    )
    with_data = {**header["inputs"][0], "data": [1.0] * 340}
    _error(_send(client, {"inputs": [with_data]}, raw), 400, "inputs[0].data", "binary")
    bad_size = {**header["inputs"][0], "parameters": {"binary_data_size": "1360"}}
    _error(_send(client, {"inputs": [bad_size]}, raw), 400, "binary_data_size", "string")
    json_input = {"name": "x", "shape": [2, 170], "datatype": "FP32", "data": [1.0] * 340}
    _error(_send(client, {"inputs": [json_input]}, raw), 400, "bytes follow the JSON part")
    _error(
        _send(client, header, raw, **{"Content-Type": "text/csv"}), 415, "application/octet-stream"
    )
    _error(
        _send(client, {**header, "parameters": {"binary_data_output": 1}}, raw),
        400,
        "parameters.binary_data_output",
        "boolean",
    )
    outputs = [{"name": "label", "parameters": {"binary_data": "yes"}}]
    _error(
        _send(client, {**header, "outputs": outputs}, raw),
        400,
        "outputs[0].parameters.binary_data",
        "boolean",
    )
    _error(_send(client, header, raw, length="3"), 400, "not valid JSON")


def test_non_finite_and_overflowing_binary_values_are_refused(client, tiny_bundle) -> None:
    rows = smoke_rows(tiny_bundle)[:2].copy()
    rows[1, 7] = np.inf
    _error(_send(client, *_binary_body(rows)), 400, "row 1, feature ag_001", "float32 range")
    wide = smoke_rows(tiny_bundle, np.float64)[:1].copy()
    wide[0, 2] = 1e39
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": [1, 170],
                "datatype": "FP64",
                "parameters": {"binary_data_size": wide.nbytes},
            }
        ]
    }
    _error(_send(client, header, wide.astype("<f8").tobytes()), 400, "row 0, feature ac_000")
    rows = smoke_rows(tiny_bundle)[:1].copy()
    rows[0, :] = np.nan  # all missing is a valid row
    assert _send(client, *_binary_body(rows)).status_code == 200


def test_binary_limits_are_413(tiny_bundle) -> None:
    client = create_app(tiny_bundle, ServingConfig(max_body_bytes=5_000, max_rows=3)).test_client()
    rows = smoke_rows(tiny_bundle)
    _error(_send(client, *_binary_body(rows[:4])), 413, "limit of 3")
    _error(_send(client, *_binary_body(rows[:10])), 413, "5000 bytes")
    assert _send(client, *_binary_body(rows[:3])).status_code == 200


def test_random_binary_bodies_never_cause_a_5xx(client, tiny_bundle) -> None:
    rng = random.Random(99)
    header, raw = _binary_body(smoke_rows(tiny_bundle)[:2])
    text = orjson.dumps(header)
    body = text + raw
    for _ in range(200):
        mutated = bytearray(body)
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        length = rng.choice([len(text), rng.randrange(len(body) + 5), len(text) - 1])
        response = client.post(INFER, data=bytes(mutated), headers={HEADER: str(length)})
        assert response.status_code < 500, response.data

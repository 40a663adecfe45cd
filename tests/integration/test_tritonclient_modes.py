"""tritonclient.http in its default modes against a real gunicorn server (tiny bundle).

JSON mode (``binary_data=False``) sends no Content-Type at all and writes missing values
as bare ``NaN`` tokens; binary mode sends raw float32 bytes. Both must work, and give the
same answers as each other and as /predict with ``null`` for the same rows: real request
rows from the APS test sample, which have missing values (``na`` in the file).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from inference_image.bundle import ModelBundle
from inference_image.data import REQUEST_SAMPLE_FILE, load_aps_csv

from .oip_answers import predict_with_null
from .test_gunicorn_server import Server

httpclient = pytest.importorskip("tritonclient.http")

MODEL = "aps-classifier"
N_ROWS = 50
OUTPUTS = ("probability", "label")


@pytest.fixture(scope="module")
def server(tiny_bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tiny_bundle.path, tmp_path_factory.mktemp("triton-modes"), nthread=1)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def rows(aps_data_dir: Path) -> np.ndarray:
    """The first rows of the unlabeled APS test sample (read in place, never copied)."""
    features = load_aps_csv(aps_data_dir / REQUEST_SAMPLE_FILE).features[:N_ROWS]
    assert features.shape == (N_ROWS, 170) and features.dtype == np.float32
    assert np.isnan(features).any(), "these rows should have missing values"
    return features


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[object]:
    triton = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        yield triton
    finally:
        triton.close()


@pytest.fixture(scope="module")
def by_predict(server: Server, tiny_bundle: ModelBundle, rows: np.ndarray):
    """/predict's answers for the same rows, missing values sent as null."""
    return predict_with_null(server.base, tiny_bundle.feature_names, rows)


def infer(
    client,
    rows: np.ndarray,
    binary_input: bool,
    binary_output: bool | None,
    datatype: str = "FP32",
    **kwargs,
):
    tensor = httpclient.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=binary_input)
    outputs = (
        None  # the client's default: asks for binary outputs
        if binary_output is None
        else [httpclient.InferRequestedOutput(name, binary_data=binary_output) for name in OUTPUTS]
    )
    result = client.infer(MODEL, [tensor], outputs=outputs, **kwargs)
    # BYTES come back as bytes from binary outputs, as str from JSON ones.
    labels = [
        label.decode() if isinstance(label, bytes) else label
        for label in result.as_numpy("label").tolist()
    ]
    return result.as_numpy("probability"), labels, result


@pytest.mark.parametrize(
    ("binary_input", "binary_output", "datatype"),
    [
        (False, False, "FP32"),  # JSON mode: no Content-Type, NaN tokens
        (False, False, "FP64"),
        (False, None, "FP32"),  # JSON input, the client's default (binary) outputs
        (True, None, "FP32"),  # binary mode
        (True, False, "FP64"),
    ],
    ids=["json-fp32", "json-fp64", "json-in-binary-out", "binary-fp32", "binary-in-json-out-fp64"],
)
def test_every_mode_gives_the_answers_of_predict_with_null(
    client, rows: np.ndarray, by_predict, binary_input, binary_output, datatype: str
) -> None:
    expected_probabilities, expected_labels = by_predict
    values = rows.astype(np.float64) if datatype == "FP64" else rows
    probabilities, labels, result = infer(client, values, binary_input, binary_output, datatype)
    assert probabilities.dtype == np.float32 and probabilities.shape == (N_ROWS,)
    np.testing.assert_array_equal(probabilities, expected_probabilities)
    assert labels == expected_labels
    outputs = result.get_response()["outputs"]
    assert all(("data" in output) is (binary_output is False) for output in outputs), outputs


def test_json_mode_single_row_and_versioned_path(
    client, rows: np.ndarray, by_predict, tiny_bundle: ModelBundle
) -> None:
    expected_probabilities, expected_labels = by_predict
    for index in (0, 1, 2):
        row = rows[index : index + 1]
        assert np.isnan(row).any() or index > 0
        probabilities, labels, result = infer(
            client,
            row,
            binary_input=False,
            binary_output=False,
            request_id=f"json-{index}",
            model_version=tiny_bundle.version,
        )
        np.testing.assert_array_equal(probabilities, expected_probabilities[index : index + 1])
        assert labels == expected_labels[index : index + 1]
        assert result.get_response()["id"] == f"json-{index}"


def test_json_mode_nan_equals_null_and_other_tokens_stay_refused(
    server: Server, rows: np.ndarray, by_predict
) -> None:
    """What tritonclient's JSON mode sends, by hand: no Content-Type, bare NaN."""
    infer_url = f"{server.base}/v2/models/{MODEL}/infer"
    row = rows[0]
    assert np.isnan(row).any()
    data = ", ".join("NaN" if np.isnan(value) else repr(float(value)) for value in row)
    body = (
        '{"inputs": [{"name": "input-0", "shape": [1, 170], "datatype": "FP32", "data": ['
        + data
        + "]}]}"
    ).encode()
    response = requests.post(infer_url, data=body, timeout=10)  # no Content-Type
    assert response.status_code == 200, response.text
    probability = response.json()["outputs"][0]["data"][0]
    assert np.float32(probability) == by_predict[0][0]
    json_type = {"Content-Type": "application/json"}
    assert requests.post(infer_url, data=body, headers=json_type, timeout=10).status_code == 200

    refused = requests.post(
        infer_url, data=body, headers={"Content-Type": "text/plain"}, timeout=10
    )
    assert refused.status_code == 415 and "'text/plain'" in refused.json()["error"]
    infinite = requests.post(infer_url, data=body.replace(b"NaN", b"-Infinity", 1), timeout=10)
    assert infinite.status_code == 400 and "Infinity" in infinite.json()["error"]
    record = b'{"instances": [{"aa_000": NaN}]}'
    predict = requests.post(f"{server.base}/predict", data=record, headers=json_type, timeout=10)
    assert predict.status_code == 400 and "NaN" in predict.json()["error"]

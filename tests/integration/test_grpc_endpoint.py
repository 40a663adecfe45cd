"""The OIP gRPC endpoint with ``tritonclient.grpc``, against a real gunicorn server (tiny bundle,
2 workers, LINKEDGE_GRPC_PORT) serving HTTP beside it.

Answers must equal HTTP's (binary V2 infer and /predict with null) for real rows with missing
values and for the bundle's smoke vectors, whether the client sends raw bytes or typed
contents; bad requests get the status code that names the problem, never INTERNAL.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from inference_image.bundle import ModelBundle
from inference_image.data import REQUEST_SAMPLE_FILE, load_aps_csv

from .oip_answers import predict_with_null
from .test_gunicorn_server import Server, free_port

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
grpc = pytest.importorskip("grpc")
service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

MODEL = "aps-classifier"
N_ROWS = 50
MAX_ROWS = 200
TOKEN = "grpc-test-token"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def start(bundle: ModelBundle, tmp: Path, **env: str) -> tuple[Server, int]:
    grpc_port = free_port()
    server = Server(
        bundle.path,
        tmp,
        nthread=1,
        via_env=True,
        extra_env={"LINKEDGE_GRPC_PORT": str(grpc_port), "LINKEDGE_MAX_ROWS": str(MAX_ROWS), **env},
    )
    server.wait_ready()
    return server, grpc_port


@pytest.fixture(scope="module")
def server(
    tiny_bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, int]]:
    running, grpc_port = start(tiny_bundle, tmp_path_factory.mktemp("grpc"))
    try:
        yield running, grpc_port
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(server: tuple[Server, int]) -> Iterator[object]:
    triton = grpcclient.InferenceServerClient(f"127.0.0.1:{server[1]}")
    try:
        yield triton
    finally:
        triton.close()


@pytest.fixture(scope="module")
def stub(server: tuple[Server, int]) -> Iterator[object]:
    """The raw stub, for requests tritonclient's helpers would not build."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server[1]}")
    try:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    finally:
        channel.close()


@pytest.fixture(scope="module")
def rows(aps_data_dir: Path) -> np.ndarray:
    features = load_aps_csv(aps_data_dir / REQUEST_SAMPLE_FILE).features[:N_ROWS]
    assert np.isnan(features).any(), "these rows should have missing values"
    return features


def http_binary_infer(server: Server, rows: np.ndarray):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        tensor = httpclient.InferInput("input-0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=True)
        result = client.infer(MODEL, [tensor])
        return result.as_numpy("probability"), [v.decode() for v in result.as_numpy("label")]
    finally:
        client.close()


def grpc_infer(client, rows: np.ndarray, datatype: str = "FP32", model: str = MODEL, **kwargs):
    tensor = grpcclient.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)
    result = client.infer(model, [tensor], **kwargs)
    labels = [label.decode() for label in result.as_numpy("label").tolist()]
    return result.as_numpy("probability"), labels, result


def typed_request(rows: np.ndarray, datatype: str = "FP32", **fields) -> object:
    request = service_pb2.ModelInferRequest(model_name=MODEL, **fields)
    tensor = request.inputs.add(name="input-0", datatype=datatype, shape=list(rows.shape))
    target = tensor.contents.fp32_contents if datatype == "FP32" else tensor.contents.fp64_contents
    target.extend(rows.ravel().tolist())
    return request


def tensor_request(
    shape: list[int],
    datatype: str = "FP32",
    contents: dict[str, list] | None = None,
    raw: list[bytes] | None = None,
) -> object:
    """A ModelInferRequest with one input tensor, its values typed or raw, as given."""
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="input-0", datatype=datatype, shape=shape
    )
    if contents is not None:
        tensor.contents.CopyFrom(service_pb2.InferTensorContents(**contents))
    return service_pb2.ModelInferRequest(
        model_name=MODEL, inputs=[tensor], raw_input_contents=raw or []
    )


def outputs_of(response) -> tuple[np.ndarray, list[str]]:
    """Decode raw_output_contents the way the protocol defines them."""
    by_name = dict(
        zip((o.name for o in response.outputs), response.raw_output_contents, strict=True)
    )
    probabilities = np.frombuffer(by_name["probability"], dtype="<f4")
    raw, labels = by_name["label"], []
    while raw:
        (length,) = struct.unpack_from("<I", raw)
        labels.append(raw[4 : 4 + length].decode())
        raw = raw[4 + length :]
    return probabilities, labels


def status_of(call) -> tuple[object, str]:
    """The status code and details of a failed call (grpc's own error or tritonclient's)."""
    with pytest.raises((grpc.RpcError, InferenceServerException)) as caught:
        call()
    error = caught.value
    if isinstance(error, InferenceServerException):
        return getattr(grpc.StatusCode, error.status().rpartition(".")[2]), error.message()
    return error.code(), error.details()


# --- health and metadata ----------------------------------------------------------------


def test_health_and_metadata_say_what_http_says(client, server, tiny_bundle) -> None:
    http_server, _ = server
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, tiny_bundle.version)
    code, details = status_of(lambda: client.is_model_ready(MODEL, "no-such-version"))
    assert code == grpc.StatusCode.NOT_FOUND and "unknown version 'no-such-version'" in details
    metadata = client.get_model_metadata(MODEL, as_json=True)
    http = requests.get(f"{http_server.base}/v2/models/{MODEL}", timeout=5).json()
    assert metadata["name"] == http["name"] and metadata["versions"] == http["versions"]
    assert metadata["platform"] == http["platform"] == "xgboost"
    for key in ("inputs", "outputs"):
        assert [
            {"name": t["name"], "datatype": t["datatype"], "shape": [int(d) for d in t["shape"]]}
            for t in metadata[key]
        ] == http[key]
    server_metadata = client.get_server_metadata(as_json=True)
    assert (
        server_metadata["name"] == requests.get(f"{http_server.base}/v2", timeout=5).json()["name"]
    )


# --- answers --------------------------------------------------------------------------


def test_raw_tensors_give_the_answers_of_http_for_rows_with_missing_values(
    client, server, tiny_bundle, rows
) -> None:
    http_server, _ = server
    features = tiny_bundle.feature_names
    expected_probabilities, expected_labels = predict_with_null(http_server.base, features, rows)
    binary_probabilities, binary_labels = http_binary_infer(http_server, rows)
    np.testing.assert_array_equal(binary_probabilities, expected_probabilities)
    for datatype, values in (("FP32", rows), ("FP64", rows.astype(np.float64))):
        probabilities, labels, result = grpc_infer(client, values, datatype, request_id="r-7")
        assert probabilities.dtype == np.float32 and probabilities.shape == (N_ROWS,)
        np.testing.assert_array_equal(probabilities, expected_probabilities)
        assert labels == expected_labels == binary_labels
        response = result.get_response()
        assert (response.id, response.model_name) == ("r-7", MODEL)
        assert response.model_version == tiny_bundle.version


def test_typed_contents_give_the_same_answers(stub, server, tiny_bundle, rows) -> None:
    features = tiny_bundle.feature_names
    expected_probabilities, expected_labels = predict_with_null(server[0].base, features, rows)
    for datatype in ("FP32", "FP64"):
        response = stub.ModelInfer(typed_request(rows, datatype))
        probabilities, labels = outputs_of(response)
        np.testing.assert_array_equal(probabilities, expected_probabilities)
        assert labels == expected_labels


def test_smoke_vectors_are_reproduced(client, tiny_bundle) -> None:
    vectors = tiny_bundle.smoke_vectors
    rows = np.array(
        [[np.nan if v is None else v for v in vector["inputs"]] for vector in vectors],
        dtype=np.float32,
    )
    probabilities, labels, _ = grpc_infer(client, rows)
    np.testing.assert_allclose(
        probabilities, [vector["probability"] for vector in vectors], rtol=0, atol=1e-6
    )
    assert labels == [vector["label"] for vector in vectors]


def test_one_requested_output_comes_alone(client, rows) -> None:
    tensor = grpcclient.InferInput("input-0", [2, 170], "FP32")
    tensor.set_data_from_numpy(rows[:2])
    result = client.infer(MODEL, [tensor], outputs=[grpcclient.InferRequestedOutput("label")])
    assert [output.name for output in result.get_response().outputs] == ["label"]
    assert result.as_numpy("probability") is None


# --- errors ----------------------------------------------------------------------------


def test_bad_requests_get_the_status_code_that_names_the_problem(client, stub, rows) -> None:
    code, details = status_of(lambda: grpc_infer(client, rows[:1], model="other"))
    assert code == grpc.StatusCode.NOT_FOUND and "unknown model 'other'" in details
    code, details = status_of(lambda: grpc_infer(client, rows[:1], model_version="v0"))
    assert code == grpc.StatusCode.NOT_FOUND and "unknown version 'v0'" in details

    cases = {
        "wrong width": (typed_request(rows[:1, :169]), "shape: expected [N, 170]"),
        "count off": (
            tensor_request([2, 170], contents={"fp32_contents": [0.0] * 170}),
            "fp32_contents: expected 340 values for shape [2, 170], got 170",
        ),
        "wrong contents field": (
            tensor_request([1, 170], contents={"fp64_contents": [0.0] * 170}),
            "values go in fp32_contents, got fp64_contents",
        ),
        "unsupported datatype": (
            tensor_request([1, 170], "INT32", raw=[b"\x00" * 680]),
            "unsupported datatype 'INT32'",
        ),
        "raw size": (tensor_request([1, 170], raw=[b"\x00" * 676]), "take 680 bytes, got 676"),
        "raw count": (
            tensor_request([1, 170], raw=[b"\x00" * 680, b"\x00"]),
            "raw_input_contents: 2 entries for 1 inputs",
        ),
        "no inputs": (
            service_pb2.ModelInferRequest(model_name=MODEL),
            "exactly 1 input tensor, got 0",
        ),
        "infinity": (
            typed_request(np.full((1, 170), np.inf, dtype=np.float32)),
            "outside the float32 range",
        ),
        "unknown output": (
            typed_request(
                rows[:1],
                outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name="score")],
            ),
            "unknown output 'score'",
        ),
    }
    both = typed_request(rows[:1])
    both.raw_input_contents.append(rows[:1].tobytes())
    cases["raw and typed"] = (both, "raw_input_contents is set too")
    for case, (request, expected) in cases.items():
        code, details = status_of(lambda request=request: stub.ModelInfer(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (case, code, details)
        assert expected in details, (case, details)


def test_limits_are_resource_exhausted_and_garbage_is_invalid(server, stub, rows) -> None:
    too_many = np.zeros((MAX_ROWS + 1, 170), dtype=np.float32)
    code, details = status_of(lambda: stub.ModelInfer(typed_request(too_many)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"exceed the limit of {MAX_ROWS}" in details
    channel = grpc.insecure_channel(f"127.0.0.1:{server[1]}")
    try:
        raw_call = channel.unary_unary(INFER_METHOD)  # bytes in, bytes out
        code, details = status_of(lambda: raw_call(b"\xff\xff\xff\xff", timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid inference.ModelInferRequest message" in details
        code, _ = status_of(lambda: raw_call(b"\x00" * (9 << 20), timeout=10))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # above LINKEDGE_MAX_BODY_BYTES
        unknown = channel.unary_unary("/inference.GRPCInferenceService/ModelConfig")
        code, _ = status_of(lambda: unknown(b"", timeout=5))
        assert code == grpc.StatusCode.UNIMPLEMENTED
    finally:
        channel.close()
    assert stub.ModelInfer(typed_request(rows[:1])).outputs  # still serving


def test_requests_are_counted_in_the_metrics(server, stub, rows) -> None:
    def infer_counts() -> dict[str, float]:
        text = requests.get(f"{server[0].base}/metrics", timeout=5).text
        return {
            sample.labels["status"]: sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "linkedge_requests"
            for sample in family.samples
            if sample.name == "linkedge_requests_total"
            and sample.labels["endpoint"] == INFER_METHOD
            and sample.labels["method"] == "GRPC"
        }

    before = infer_counts()
    stub.ModelInfer(typed_request(rows[:3]))
    status_of(lambda: stub.ModelInfer(service_pb2.ModelInferRequest(model_name="x")))
    after = infer_counts()
    assert after.get("OK", 0) - before.get("OK", 0) == 1
    assert after.get("NOT_FOUND", 0) - before.get("NOT_FOUND", 0) == 1


# --- the API token, and a port it cannot have --------------------------------------------


def test_the_api_token_goes_in_the_metadata(tiny_bundle, tmp_path, rows) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    running, grpc_port = start(tiny_bundle, tmp_path, LINKEDGE_API_TOKEN_FILE=str(token_file))
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = typed_request(rows[:1])
        code, details = status_of(lambda: stub.ModelInfer(request))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer <token>" in details
        code, _ = status_of(
            lambda: stub.ModelInfer(request, metadata=[("authorization", "Bearer wrong")])
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
        answer = stub.ModelInfer(request, metadata=[("authorization", f"Bearer {TOKEN}")])
        assert outputs_of(answer)[1][0] in ("neg", "pos")
        # Health and metadata stay open, as over HTTP.
        assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready
        assert stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=MODEL)).name == MODEL
    finally:
        channel.close()
        running.stop()


def test_a_grpc_port_taken_by_another_program_is_one_line_and_exit_2(tiny_bundle, tmp_path) -> None:
    with socket.socket() as taken:  # no SO_REUSEPORT: nobody can share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(
            tiny_bundle.path,
            tmp_path,
            nthread=1,
            via_env=True,
            extra_env={"LINKEDGE_GRPC_PORT": str(port)},
        )
        try:
            assert server.process.wait(timeout=60) == 2, server.log()
        finally:
            if server.process.poll() is None:
                os.kill(server.process.pid, signal.SIGKILL)
    assert server.log().strip() == (
        f"linkedge-serve: error: LINKEDGE_GRPC_PORT: cannot listen on 127.0.0.1:{port}: "
        "Address already in use; choose a free port, or set it empty to serve without gRPC"
    )

"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on the same objects
as HTTP.

Each RPC is the HTTP endpoint it mirrors: ModelInfer turns the request into the V2 JSON
document plus raw tensor bytes the binary extension carries, and :class:`.payloads.InferParser`
checks it, so both protocols accept and refuse the same requests with the same messages; the
answer is the same float32 probabilities and labels, as ``raw_output_contents`` (as Triton
sends them). NaN in an FP32/FP64 tensor is a missing value, as in a binary HTTP tensor.

Errors are gRPC status codes, never INTERNAL for a bad request: 400 -> INVALID_ARGUMENT,
401 -> UNAUTHENTICATED (the API token goes in the ``authorization`` metadata, ``Bearer
<token>``, as in HTTP), 404 -> NOT_FOUND (an unknown model or version), 413 ->
RESOURCE_EXHAUSTED (more rows than LINKEDGE_MAX_ROWS), 503 -> UNAVAILABLE (model not ready).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from time import perf_counter
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from inference_image.bundle import ModelBundle

from . import binary, grpc_schema
from .auth import SCHEME
from .config import ServingConfig
from .endpoints import PredictionEndpoints
from .metadata import model_metadata, server_metadata
from .metrics import ServingMetrics
from .payloads import InferRequest
from .validation import PayloadError

log = logging.getLogger("linkedge.serving.grpc")

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# The typed contents field that holds each accepted datatype's values.
CONTENTS_FIELDS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}


def _parameter_value(parameter: Any) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def _tensor_values(tensor: Any, where: str) -> bytes:
    """A tensor's typed contents as the little-endian bytes the binary extension carries."""
    filled = [field.name for field, _ in tensor.contents.ListFields()]
    expected = CONTENTS_FIELDS.get(tensor.datatype)
    if expected is None:  # InferParser names the unsupported datatype
        return b""
    wrong = [name for name in filled if name != expected]
    if wrong:
        raise PayloadError(
            f"{where}.contents: a {tensor.datatype} tensor's values go in {expected}, "
            f"got {', '.join(wrong)}"
        )
    values = getattr(tensor.contents, expected)
    shape = list(tensor.shape)
    expected_count = math.prod(shape) if shape and min(shape) >= 0 else None
    if expected_count is not None and len(values) != expected_count:
        raise PayloadError(
            f"{where}.contents.{expected}: expected {expected_count} values for shape "
            f"{shape}, got {len(values)}"
        )
    return np.asarray(values, dtype=binary.DTYPES[tensor.datatype]).tobytes()


def infer_document(request: Any) -> tuple[dict[str, Any], memoryview | None]:
    """A ModelInferRequest as the V2 JSON document and binary tail :class:`InferParser`
    reads: each input's values (raw or typed) become its binary data."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise PayloadError(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, in input order"
        )
    inputs: list[dict[str, Any]] = []
    tail = b""
    for index, tensor in enumerate(request.inputs):
        where = f"inputs[{index}]"
        if raw and tensor.HasField("contents"):
            raise PayloadError(
                f"{where}.contents: raw_input_contents is set too; send the values in one of them"
            )
        data = raw[index] if raw else _tensor_values(tensor, where)
        inputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "parameters": {"binary_data_size": len(data)},
            }
        )
        if index == 0:
            tail = data
    document: dict[str, Any] = {"inputs": inputs}
    if request.id:
        document["id"] = request.id
    if request.outputs:
        document["outputs"] = [{"name": output.name} for output in request.outputs]
    return document, memoryview(tail)


class GrpcEndpoints:
    """The RPCs, each a function of (request, context) answering with a response message."""

    def __init__(
        self,
        bundle: ModelBundle,
        endpoints: PredictionEndpoints,
        metrics: ServingMetrics,
        config: ServingConfig,
    ) -> None:
        self.endpoints = endpoints
        self.metrics = metrics
        self.model_name = config.model_name
        self.version = bundle.version
        self._server_metadata = grpc_schema.ServerMetadataResponse(**server_metadata())
        metadata = model_metadata(bundle, config)
        self._model_metadata = grpc_schema.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=metadata["inputs"],
            outputs=metadata["outputs"],
        )

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """The service's method handlers, each timed, counted and with errors as status codes."""
        methods: dict[str, Callable[[Any, Any], Any]] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
        }
        handlers = {}
        for rpc, method in methods.items():
            request_name, response_name = grpc_schema.METHODS[rpc]
            response_class = grpc_schema.message_class(response_name)
            # The request arrives as bytes and is parsed in the handler: grpcio answers a
            # request its deserializer cannot parse with INTERNAL, this with INVALID_ARGUMENT.
            handlers[rpc] = grpc.unary_unary_rpc_method_handler(
                self._guarded(
                    f"/{grpc_schema.SERVICE}/{rpc}",
                    method,
                    grpc_schema.message_class(request_name),
                    response_class,
                ),
                response_serializer=response_class.SerializeToString,
            )
        return handlers

    def _guarded(
        self,
        endpoint: str,
        method: Callable[[Any, Any], Any],
        request_class: Any,
        response_class: Any,
    ) -> Callable[[bytes, Any], Any]:
        request_name = request_class.DESCRIPTOR.full_name

        def handle(data: bytes, context: grpc.ServicerContext) -> Any:
            started = perf_counter()
            code = grpc.StatusCode.OK
            try:
                try:
                    request = request_class.FromString(data)
                except DecodeError:
                    raise PayloadError(f"request: not a valid {request_name} message") from None
                return method(request, context)
            except PayloadError as exc:
                code = STATUS_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
                context.set_code(code)
                context.set_details(exc.message)
                return response_class()
            except Exception as exc:
                log.exception("unexpected error in %s", endpoint)
                code = grpc.StatusCode.INTERNAL
                context.set_code(code)
                context.set_details(f"internal error ({type(exc).__name__}); see the server log")
                return response_class()
            finally:
                self.metrics.observe_request(endpoint, "GRPC", code.name, perf_counter() - started)

        return handle

    def _check_model(self, name: str, version: str) -> None:
        if name != self.model_name:
            raise PayloadError(
                f"unknown model {name[:100]!r}; this server serves {self.model_name!r}", 404
            )
        if version and version != self.version:
            raise PayloadError(
                f"unknown version {version[:100]!r} of model {self.model_name!r}; "
                f"available: {self.version!r}",
                404,
            )

    def server_live(self, request: Any, context: grpc.ServicerContext) -> Any:
        return grpc_schema.ServerLiveResponse(live=True)

    def server_ready(self, request: Any, context: grpc.ServicerContext) -> Any:
        return grpc_schema.ServerReadyResponse(ready=self.endpoints.model.ready)

    def model_ready(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._check_model(request.name, request.version)
        return grpc_schema.ModelReadyResponse(ready=self.endpoints.model.ready)

    def server_metadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._server_metadata

    def model_metadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._check_model(request.name, request.version)
        return self._model_metadata

    def model_infer(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._authorize(context)
        self._check_model(request.model_name, request.model_version)
        self.endpoints.require_ready()
        parsed = self.endpoints.tensors.parse(*infer_document(request))
        probabilities, positive = self.endpoints.predict_rows(parsed.rows)
        return self._infer_response(parsed, probabilities, positive)

    def _authorize(self, context: grpc.ServicerContext) -> None:
        if self.endpoints.auth is None:
            return
        header = next(
            (value for key, value in context.invocation_metadata() if key == "authorization"),
            None,
        )
        if header is None:
            raise PayloadError(
                f"missing bearer token: send the metadata authorization: {SCHEME} <token>", 401
            )
        self.endpoints.authorize({"HTTP_AUTHORIZATION": str(header)})

    def _infer_response(
        self, parsed: InferRequest, probabilities: np.ndarray, positive: np.ndarray
    ) -> Any:
        response = grpc_schema.ModelInferResponse(
            model_name=self.model_name, model_version=self.version, id=parsed.id or ""
        )
        n_rows = len(probabilities)
        for name in parsed.outputs:
            if name == "probability":
                response.outputs.add(name=name, datatype="FP32", shape=[n_rows])
                response.raw_output_contents.append(
                    probabilities.astype("<f4", copy=False).tobytes()
                )
            else:
                response.outputs.add(name=name, datatype="BYTES", shape=[n_rows])
                response.raw_output_contents.append(binary.label_bytes(positive))
        return response

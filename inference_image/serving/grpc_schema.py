"""The Open Inference Protocol's gRPC messages (package ``inference``), built at import time.

The field names and numbers are the protocol's (KServe's ``grpc_predict_v2.proto``, of which
Triton's ``grpc_service.proto`` is a superset: ``InferParameter`` also has ``double_param`` and
``uint64_param``), so ``tritonclient.grpc`` and KServe clients talk to it unchanged. Only the
RPCs LinkEdge serves are declared; any other method of ``inference.GRPCInferenceService``
gets UNIMPLEMENTED from grpcio.

The descriptors are built in a pool of their own, not protobuf's default one: no generated
``_pb2`` module to keep in step with the protobuf runtime, and no clash with a client's own
``inference.*`` messages (tritonclient registers them) in the same process.
``tests/unit/test_grpc_schema.py`` checks every field against tritonclient's descriptors.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
}
# (name, number, type, repeated); a type that is not a scalar names a message, and
# "map:<Message>" is map<string, Message>.
Field = tuple[str, int, str, bool]
_TENSOR_METADATA: list[Field] = [
    ("name", 1, "string", False),
    ("datatype", 2, "string", False),
    ("shape", 3, "int64", True),
]
_PARAMETERS_4: Field = ("parameters", 4, "map:InferParameter", False)
_MESSAGES: dict[str, list[Field]] = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [("live", 1, "bool", False)],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [("ready", 1, "bool", False)],
    "ModelReadyRequest": [("name", 1, "string", False), ("version", 2, "string", False)],
    "ModelReadyResponse": [("ready", 1, "bool", False)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [
        ("name", 1, "string", False),
        ("version", 2, "string", False),
        ("extensions", 3, "string", True),
    ],
    "ModelMetadataRequest": [("name", 1, "string", False), ("version", 2, "string", False)],
    "ModelMetadataResponse.TensorMetadata": _TENSOR_METADATA,
    "ModelMetadataResponse": [
        ("name", 1, "string", False),
        ("versions", 2, "string", True),
        ("platform", 3, "string", False),
        ("inputs", 4, "ModelMetadataResponse.TensorMetadata", True),
        ("outputs", 5, "ModelMetadataResponse.TensorMetadata", True),
    ],
    "ModelInferRequest.InferInputTensor": [
        *_TENSOR_METADATA,
        _PARAMETERS_4,
        ("contents", 5, "InferTensorContents", False),
    ],
    "ModelInferRequest.InferRequestedOutputTensor": [
        ("name", 1, "string", False),
        ("parameters", 2, "map:InferParameter", False),
    ],
    "ModelInferRequest": [
        ("model_name", 1, "string", False),
        ("model_version", 2, "string", False),
        ("id", 3, "string", False),
        _PARAMETERS_4,
        ("inputs", 5, "ModelInferRequest.InferInputTensor", True),
        ("outputs", 6, "ModelInferRequest.InferRequestedOutputTensor", True),
        ("raw_input_contents", 7, "bytes", True),
    ],
    "ModelInferResponse.InferOutputTensor": [
        *_TENSOR_METADATA,
        _PARAMETERS_4,
        ("contents", 5, "InferTensorContents", False),
    ],
    "ModelInferResponse": [
        ("model_name", 1, "string", False),
        ("model_version", 2, "string", False),
        ("id", 3, "string", False),
        _PARAMETERS_4,
        ("outputs", 5, "ModelInferResponse.InferOutputTensor", True),
        ("raw_output_contents", 6, "bytes", True),
    ],
    # One of these is set (the oneof "parameter_choice").
    "InferParameter": [
        ("bool_param", 1, "bool", False),
        ("int64_param", 2, "int64", False),
        ("string_param", 3, "string", False),
        ("double_param", 4, "double", False),
        ("uint64_param", 5, "uint64", False),
    ],
    "InferTensorContents": [
        ("bool_contents", 1, "bool", True),
        ("int_contents", 2, "int32", True),
        ("int64_contents", 3, "int64", True),
        ("uint_contents", 4, "uint32", True),
        ("uint64_contents", 5, "uint64", True),
        ("fp32_contents", 6, "float", True),
        ("fp64_contents", 7, "double", True),
        ("bytes_contents", 8, "bytes", True),
    ],
}
_ONEOFS = {"InferParameter": "parameter_choice"}
# rpc name -> (request message, response message)
METHODS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
}


def _add_field(message: Any, owner: str, field: Field) -> None:
    name, number, kind, repeated = field
    proto = message.field.add(name=name, number=number, json_name=_json_name(name))
    proto.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if kind in _SCALARS:
        proto.type = _SCALARS[kind]
    elif kind.startswith("map:"):
        entry = message.nested_type.add(name=_map_entry_name(name))
        entry.options.map_entry = True
        _add_field(entry, owner, ("key", 1, "string", False))
        _add_field(entry, owner, ("value", 2, kind[len("map:") :], False))
        proto.label = _F.LABEL_REPEATED
        proto.type = _F.TYPE_MESSAGE
        proto.type_name = f".{PACKAGE}.{owner}.{entry.name}"
    else:
        proto.type = _F.TYPE_MESSAGE
        proto.type_name = f".{PACKAGE}.{kind}"


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _map_entry_name(field_name: str) -> str:
    return "".join(part.capitalize() for part in field_name.split("_")) + "Entry"


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="linkedge/oip_grpc.proto", package=PACKAGE, syntax="proto3"
    )
    protos: dict[str, Any] = {}
    for full_name in _MESSAGES:  # the outer messages first, then the nested ones
        parent, _, name = full_name.rpartition(".")
        if not parent:
            protos[full_name] = file.message_type.add(name=name)
    for full_name in _MESSAGES:
        parent, _, name = full_name.rpartition(".")
        if parent:
            protos[full_name] = protos[parent].nested_type.add(name=name)
    for full_name, fields in _MESSAGES.items():
        message = protos[full_name]
        oneof = _ONEOFS.get(full_name)
        if oneof:
            message.oneof_decl.add(name=oneof)
        for field in fields:
            _add_field(message, full_name, field)
            if oneof:
                message.field[-1].oneof_index = 0
    service = file.service.add(name=SERVICE.rpartition(".")[2])
    for rpc, (request, response) in METHODS.items():
        service.method.add(
            name=rpc, input_type=f".{PACKAGE}.{request}", output_type=f".{PACKAGE}.{response}"
        )
    return file


POOL = descriptor_pool.DescriptorPool()
FILE = POOL.Add(_file_descriptor())


def message_class(name: str) -> Any:
    """The message class for ``inference.<name>`` (e.g. ``ModelInferRequest``)."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


ServerLiveResponse = message_class("ServerLiveResponse")
ServerReadyResponse = message_class("ServerReadyResponse")
ModelReadyResponse = message_class("ModelReadyResponse")
ServerMetadataResponse = message_class("ServerMetadataResponse")
ModelMetadataResponse = message_class("ModelMetadataResponse")
ModelInferRequest = message_class("ModelInferRequest")
ModelInferResponse = message_class("ModelInferResponse")

"""LinkEdge's gRPC messages against tritonclient's: same names, numbers, types and labels, so
the bytes one side writes are what the other reads."""

from __future__ import annotations

import numpy as np
import pytest

from inference_image.serving import grpc_schema

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")


def _fields(descriptor) -> dict[str, tuple]:
    return {
        field.name: (
            field.number,
            field.type,
            field.is_repeated,
            field.message_type.full_name if field.message_type else None,
            field.containing_oneof.name if field.containing_oneof else None,
        )
        for field in descriptor.fields
    }


def _messages(descriptor, prefix: str = "") -> dict[str, object]:
    found = {f"{prefix}{descriptor.name}": descriptor}
    for nested in descriptor.nested_types:
        found.update(_messages(nested, f"{prefix}{descriptor.name}."))
    return found


def test_every_message_matches_tritonclients_field_for_field() -> None:
    ours = {}
    for descriptor in grpc_schema.FILE.message_types_by_name.values():
        ours.update(_messages(descriptor))
    theirs = {}
    for descriptor in service_pb2.DESCRIPTOR.message_types_by_name.values():
        theirs.update(_messages(descriptor))
    assert len(ours) == 23  # 14 messages, 4 nested ones and 5 map entries
    for name, descriptor in ours.items():
        assert name in theirs, name
        assert _fields(descriptor) == _fields(theirs[name]), name
        assert descriptor.GetOptions().map_entry == theirs[name].GetOptions().map_entry, name


def test_the_service_declares_each_served_rpc_with_tritonclients_types() -> None:
    ours = grpc_schema.FILE.services_by_name["GRPCInferenceService"]
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == grpc_schema.SERVICE == theirs.full_name
    assert sorted(method.name for method in ours.methods) == sorted(grpc_schema.METHODS)
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name


def test_a_request_written_by_tritonclient_reads_back_the_same() -> None:
    request = service_pb2.ModelInferRequest(model_name="aps-classifier", id="r-1")
    request.parameters["priority"].int64_param = 3
    request.parameters["ratio"].double_param = 0.5
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[2, 2])
    tensor.contents.fp32_contents.extend([1.5, float("nan"), -2.0, 0.0])
    request.raw_input_contents.append(b"\x00\x01")
    request.outputs.add(name="label")
    ours = grpc_schema.ModelInferRequest.FromString(request.SerializeToString())
    assert (ours.model_name, ours.id) == ("aps-classifier", "r-1")
    assert ours.parameters["priority"].int64_param == 3
    assert ours.parameters["ratio"].WhichOneof("parameter_choice") == "double_param"
    assert list(ours.inputs[0].shape) == [2, 2]
    values = np.array(ours.inputs[0].contents.fp32_contents, dtype=np.float32)
    np.testing.assert_array_equal(values, np.array([1.5, np.nan, -2.0, 0.0], dtype=np.float32))
    assert list(ours.raw_input_contents) == [b"\x00\x01"]
    assert [output.name for output in ours.outputs] == ["label"]
    # Map entries have no wire order of their own: compare the canonical form.
    assert ours.SerializeToString(deterministic=True) == request.SerializeToString(
        deterministic=True
    )

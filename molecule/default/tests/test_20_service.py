"""Role inference_service: the release serves, hardened, and answers exactly its smoke vectors."""

import json
import shlex
import struct

from conftest import SERVICE, inspect, truck_http


def f32(value: float) -> bytes:
    """The FP32 the model computed: the API prints it shortest (0.723928), the smoke vectors
    keep its exact double (0.7239279747009277); both are the same 32-bit float."""
    return struct.pack("<f", value)


def test_serving_container_runs_the_release(host, expected):
    container = inspect(host, SERVICE)
    assert container["State"]["Running"]
    assert container["Image"] == expected.image_id
    labels = container["Config"]["Labels"]
    assert labels["io.linkedge.service"] == SERVICE
    assert labels["io.linkedge.role"] == "serving"
    assert labels["io.linkedge.model.version"] == expected.model_version


def test_container_is_hardened(host):
    container = inspect(host, SERVICE)
    config, hostconfig = container["Config"], container["HostConfig"]
    assert config["User"].split(":")[0] == "10001"
    assert hostconfig["ReadonlyRootfs"] is True
    assert hostconfig["CapDrop"] == ["ALL"]
    assert not hostconfig["CapAdd"]
    assert hostconfig["Privileged"] is False
    assert any(opt.startswith("no-new-privileges") for opt in hostconfig["SecurityOpt"])
    assert "/tmp" in hostconfig["Tmpfs"]
    assert hostconfig["Memory"] == 512 * 1024 * 1024
    assert hostconfig["NanoCpus"] == 2 * 10**9
    assert hostconfig["PidsLimit"] == 256
    assert hostconfig["RestartPolicy"]["Name"] == "unless-stopped"
    # The truck's network, no NAT: the server itself listens on 127.0.0.1:8080 (SO_REUSEPORT).
    assert hostconfig["NetworkMode"] == "host" and not hostconfig["PortBindings"]
    assert {"LINKEDGE_HOST=127.0.0.1", "LINKEDGE_PORT=8080"} <= set(config["Env"])


def test_process_is_unprivileged_on_a_read_only_root(host):
    assert host.check_output(f"docker exec {SERVICE} id -u") == "10001"
    status = host.check_output(f"docker exec {SERVICE} cat /proc/1/status")
    caps = {
        line.split(":")[0]: line.split()[1]
        for line in status.splitlines()
        if line.startswith("Cap")
    }
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000000000"
    assert host.run(f"docker exec {SERVICE} touch /probe").rc != 0
    assert host.run(f"docker exec {SERVICE} touch /tmp/probe").rc == 0


def test_predict_returns_exactly_the_smoke_vectors(truck, expected):
    vectors = expected.smoke_vectors
    records = [dict(zip(expected.features, v["inputs"], strict=True)) for v in vectors]
    status, body = truck_http(truck, "POST", "/predict", {"instances": records})
    assert status == 200, body
    assert body["model_version"] == expected.model_version
    got = [(p["label"], f32(p["probability"])) for p in body["predictions"]]
    want = [(v["label"], f32(v["probability"])) for v in expected.smoke_vectors]
    assert got == want


def test_v2_infer_returns_exactly_the_smoke_vectors(truck, expected):
    vectors = expected.smoke_vectors
    request = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(vectors), len(expected.features)],
                "datatype": "FP32",
                "data": [x for v in vectors for x in v["inputs"]],
            }
        ]
    }
    status, body = truck_http(truck, "POST", "/v2/models/aps-classifier/infer", request)
    assert status == 200, body
    assert body["model_version"] == expected.model_version
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    assert outputs["label"] == [v["label"] for v in vectors]
    assert [f32(p) for p in outputs["probability"]] == [f32(v["probability"]) for v in vectors]


def test_model_metadata_names_the_version(truck, expected):
    status, body = truck_http(truck, "GET", "/v2/models/aps-classifier")
    assert status == 200
    assert body["versions"] == [expected.model_version]


GRPC_CLIENT = """
import json, sys
import grpc, numpy as np
from inference_image.serving import grpc_schema
rows = np.array(json.loads(sys.argv[1]), dtype="<f4")
request = grpc_schema.ModelInferRequest(model_name="aps-classifier")
request.inputs.add(name="input-0", datatype="FP32", shape=list(rows.shape))
request.raw_input_contents.append(rows.tobytes())
token = open("/run/secrets/linkedge-api-token").read().strip()
with grpc.insecure_channel("127.0.0.1:8081") as channel:
    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=grpc_schema.ModelInferRequest.SerializeToString,
        response_deserializer=grpc_schema.ModelInferResponse.FromString,
    )
    try:
        infer(request, timeout=10)
        refused = "OK"
    except grpc.RpcError as exc:
        refused = exc.code().name
    answer = infer(request, metadata=[("authorization", "Bearer " + token)], timeout=10)
outputs = dict(zip([o.name for o in answer.outputs], answer.raw_output_contents))
labels, raw = [], outputs["label"]
while raw:
    size = int.from_bytes(raw[:4], "little")
    labels.append(raw[4 : 4 + size].decode())
    raw = raw[4 + size :]
print(json.dumps({
    "without_token": refused,
    "version": answer.model_version,
    "labels": labels,
    "probabilities": np.frombuffer(outputs["probability"], dtype="<f4").tolist(),
}))
"""


def test_grpc_model_infer_returns_exactly_the_smoke_vectors(host, expected):
    """The OIP gRPC endpoint on the truck's 127.0.0.1:8081 (inference_service_grpc_port), with
    the token as metadata; the client is grpcio in the serving image itself."""
    container = inspect(host, SERVICE)
    assert "LINKEDGE_GRPC_PORT=8081" in container["Config"]["Env"]
    rows = [[float("nan") if x is None else x for x in v["inputs"]] for v in expected.smoke_vectors]
    client = shlex.quote(GRPC_CLIENT)
    answer = json.loads(
        host.check_output(
            f"docker exec {SERVICE} python3 -c {client} {shlex.quote(json.dumps(rows))}"
        )
    )
    assert answer["without_token"] == "UNAUTHENTICATED"
    assert answer["version"] == expected.model_version
    assert answer["labels"] == [v["label"] for v in expected.smoke_vectors]
    assert [f32(p) for p in answer["probabilities"]] == [
        f32(v["probability"]) for v in expected.smoke_vectors
    ]

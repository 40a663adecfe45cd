"""linkedge.edge.inference_container against the engine with real images: deploy, idempotence,
switch, every kind of bad version rolled back, hardening, check mode."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from inference_image.image.smoke import http_json

from .conftest import _derive
from .run_module import free_port, run_module

pytestmark = pytest.mark.docker


def deploy(service: str, image, port: int, check: bool = False, **options):
    args = {"name": service, "image": image.tag, "published_port": port, **options}
    return run_module("inference_container", args, check=check)


def served_version(port: int) -> str | None:
    return served_version_or_why(port)[0]


def served_version_or_why(port: int, timeout: float = 2) -> tuple[str | None, str]:
    """The version the service on ``port`` answers with, or None and why it did not."""
    try:
        status, body = http_json(
            f"http://127.0.0.1:{port}/v2/models/aps-classifier", timeout=timeout
        )
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if status != 200:
        return None, f"HTTP {status}: {body}"
    return body["versions"][0], ""


def containers_of(client, service: str) -> dict[str, object]:
    return {c.name: c for c in client.containers.list(all=True, filters={"name": service})}


def test_first_deploy_then_unchanged(docker_client, images, service):
    port = free_port()
    first = deploy(service, images.v1, port)
    assert not first.failed, first.result
    assert first["changed"] and first["outcome"] == "updated" and not first["rolled_back"]
    assert first["image_id"] == images.v1.id and first["model_version"] == images.v1.version
    assert first["previous_image_id"] is None and first["serving_gap_seconds"] is None
    assert first["smoke_vectors_checked"] >= 30 and first["cold_start_seconds"] > 0
    container = docker_client.containers.get(service)
    assert container.id == first["container_id"] and container.status == "running"
    assert served_version(port) == images.v1.version

    again = deploy(service, images.v1, port)
    assert not again.failed, again.result
    assert not again["changed"] and again["outcome"] == "unchanged"
    assert again["container_id"] == container.id
    assert set(containers_of(docker_client, service)) == {service}

    changed_settings = deploy(service, images.v1, port, env={"LINKEDGE_WORKERS": "1"})
    assert changed_settings["outcome"] == "updated", changed_settings.result
    assert docker_client.containers.get(service).id != container.id


@pytest.mark.usefixtures("migrate_queued_connections")
def test_new_version_switches_without_a_failed_request(docker_client, images, service):
    port = free_port()
    assert deploy(service, images.v1, port)["outcome"] == "updated"
    old_id = docker_client.containers.get(service).id

    # Watch the service from outside during the switch, a new connection per request.
    answers: list[tuple[float, str | None]] = []
    failures: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            started = time.monotonic()
            version, why = served_version_or_why(port)
            answers.append((started, version))
            if why:
                failures.append(f"{started - answers[0][0]:.2f} s after the first: {why}")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    switch = deploy(service, images.v2, port)
    stop.set()
    watcher.join()

    assert not switch.failed, switch.result
    assert switch["outcome"] == "updated" and switch["changed"]
    assert switch["image_id"] == images.v2.id and switch["model_version"] == images.v2.version
    assert switch["previous_image_id"] == images.v1.id
    assert switch["previous_model_version"] == images.v1.version
    assert switch["serving_gap_seconds"] == 0.0 and 0 < switch["cold_start_seconds"] < 15
    assert switch["candidate_cold_start_seconds"] > 0 and 0 < switch["handover_seconds"] < 15
    assert served_version(port) == images.v2.version

    serving = docker_client.containers.get(service)
    previous = docker_client.containers.get(f"{service}-previous")
    assert serving.attrs["Image"] == images.v2.id and serving.status == "running"
    assert previous.id == old_id and previous.attrs["Image"] == images.v1.id
    assert previous.status == "exited"
    assert previous.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"  # never comes back
    assert f"{service}-candidate" not in containers_of(docker_client, service)

    # Every request was answered, by one of the two versions, v1 then v2.
    versions = [version for _, version in answers]
    assert len(versions) > 50 and failures == [], (len(versions), failures, switch["steps"])
    assert set(versions) == {images.v1.version, images.v2.version}
    assert versions[0] == images.v1.version and versions[-1] == images.v2.version
    print(f"\nswitch: {switch.result['steps']}, {len(versions)} requests, none failed")

    # A third version replaces the older previous; keep_previous=false removes it.
    third = deploy(service, images.v1, port, keep_previous=False)
    assert third["outcome"] == "updated", third.result
    assert set(containers_of(docker_client, service)) == {service}


@pytest.mark.parametrize(
    ("bad_image", "expected_reason"),
    [
        ("bad", "refuses to be ready"),  # its own smoke vectors fail inside the server
        ("impostor", "smoke vector"),  # ready, but answers differ from its bundle's vectors
    ],
)
def test_bad_version_is_rolled_back(docker_client, images, service, bad_image, expected_reason):
    port = free_port()
    assert deploy(service, images.v1, port)["outcome"] == "updated"
    serving_id = docker_client.containers.get(service).id

    run = deploy(service, getattr(images, bad_image), port)
    assert run.failed, run.result  # fail_on_rollback: counts against max_fail_percentage
    assert run["outcome"] == "rolled_back" and run["rolled_back"]
    assert expected_reason in run["reason"] and "was not touched" in run["reason"]
    assert run["container_id"] == serving_id
    assert run["previous_model_version"] == images.v1.version
    assert set(containers_of(docker_client, service)) == {service}  # no candidate left
    container = docker_client.containers.get(service)
    assert container.status == "running" and container.attrs["Image"] == images.v1.id
    assert served_version(port) == images.v1.version

    quiet = deploy(service, getattr(images, bad_image), port, fail_on_rollback=False)
    assert not quiet.failed and not quiet["changed"] and quiet["outcome"] == "rolled_back"
    assert docker_client.containers.get(service).id == serving_id


def test_smoke_check_false_only_waits_for_ready(docker_client, images, service):
    run = deploy(service, images.impostor, free_port(), smoke_check=False)
    assert not run.failed and run["outcome"] == "updated", run.result
    assert run["smoke_vectors_checked"] == 0


def test_never_ready_version_is_rolled_back_within_ready_timeout(docker_client, images, service):
    port = free_port()
    assert deploy(service, images.v1, port)["outcome"] == "updated"
    serving_id = docker_client.containers.get(service).id

    run = deploy(service, images.never_ready, port, ready_timeout=6)
    assert run.failed and run["outcome"] == "rolled_back", run.result
    assert "not ready within 6 s" in run["reason"]
    assert run.seconds < 6 + 8, run.seconds  # the timeout plus ansible's own start-up
    assert docker_client.containers.get(service).id == serving_id
    assert served_version(port) == images.v1.version


def test_failure_in_the_handover_leaves_the_old_one_serving(docker_client, images, service):
    """The candidate is fine, but the real port cannot be bound: the old version never stops."""
    port, busy_port = free_port(), free_port()
    assert deploy(service, images.v1, port)["outcome"] == "updated"
    serving_id = docker_client.containers.get(service).id
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", busy_port))
        blocker.listen()
        run = deploy(service, images.v2, busy_port)
    assert run.failed and run["outcome"] == "rolled_back", run.result
    assert "previous container never stopped serving" in run["reason"]
    assert run["changed"] and run["serving_gap_seconds"] == 0.0
    container = docker_client.containers.get(service)
    assert container.id == serving_id and container.status == "running"
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert served_version(port) == images.v1.version


def test_container_is_hardened(docker_client, images, service):
    port = free_port()
    run = deploy(
        service,
        images.v1,
        port,
        memory="256m",
        cpus=1.5,
        pids_limit=128,
        restart_policy="always",
        tmpfs_size="32m",
        env={"LINKEDGE_WORKERS": "1"},
    )
    assert run["outcome"] == "updated", run.result
    container = docker_client.containers.get(service)
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["Memory"] == 256 * 1024 * 1024 and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 1_500_000_000 and host["PidsLimit"] == 128
    assert host["RestartPolicy"]["Name"] == "always"
    assert host["Tmpfs"]["/tmp"].startswith("rw,noexec,nosuid,nodev,size=")
    assert host["NetworkMode"] == "host" and not host.get("PortBindings")
    assert container.attrs["Config"]["User"].split(":")[0] == "10001"
    env = dict(pair.split("=", 1) for pair in container.attrs["Config"]["Env"])
    assert env["LINKEDGE_WORKERS"] == "1" and env["LINKEDGE_REUSE_PORT"] == "1"
    assert (env["LINKEDGE_HOST"], env["LINKEDGE_PORT"]) == ("127.0.0.1", str(port))
    assert served_version(int(env["LINKEDGE_CHECK_PORT"])) == images.v1.version
    labels = container.labels
    assert labels["io.linkedge.service"] == service and labels["io.linkedge.role"] == "serving"
    assert labels["io.linkedge.model.version"] == images.v1.version
    assert {row[0] for row in container.top()["Processes"]} == {"10001"}
    probe = container.exec_run(["python3", "-c", "open('/opt/linkedge/x', 'w')"])
    assert probe.exit_code != 0


def test_root_image_is_refused(docker_client, images, service):
    run = deploy(service, images.root, free_port())
    assert run.failed and "runs as root" in run["msg"], run.result
    assert containers_of(docker_client, service) == {}


def test_absent_image_says_load_it_first(docker_client, service):
    run = run_module("inference_container", {"name": service, "image": "linkedge-test/none:0"})
    assert run.failed and "load it first" in run["msg"]


def test_check_mode_touches_nothing(docker_client, images, service):
    port = free_port()
    fresh = deploy(service, images.v1, port, check=True)
    assert not fresh.failed and fresh["changed"] and fresh["outcome"] == "updated", fresh.result
    assert containers_of(docker_client, service) == {}

    absent = run_module(
        "inference_container", {"name": service, "image": "linkedge-test/none:0"}, check=True
    )
    assert not absent.failed and absent["changed"], absent.result

    assert deploy(service, images.v1, port)["outcome"] == "updated"
    before = docker_client.containers.get(service)
    switch = deploy(service, images.v2, port, check=True)
    assert not switch.failed and switch["changed"] and switch["outcome"] == "updated"
    assert switch["previous_image_id"] == images.v1.id
    after = docker_client.containers.get(service)
    assert after.id == before.id and after.status == "running"
    assert after.attrs["State"]["StartedAt"] == before.attrs["State"]["StartedAt"]
    assert set(containers_of(docker_client, service)) == {service}
    assert served_version(port) == images.v1.version


def test_an_interrupted_switch_is_completed_or_undone(docker_client, images, service):
    """What a power cut leaves behind, made by hand, is repaired by the next run."""
    port = free_port()
    assert deploy(service, images.v1, port)["outcome"] == "updated"
    assert deploy(service, images.v2, port)["outcome"] == "updated"
    previous = docker_client.containers.get(f"{service}-previous")

    # Cut between "new started" and "old retired": both serve the port.
    previous.start()
    again = deploy(service, images.v2, port)
    assert again["outcome"] == "unchanged" and again["changed"], again.result
    assert "interrupted switch" in again["reason"]
    previous.reload()
    assert previous.status == "exited"
    assert previous.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert served_version(port) == images.v2.version

    # Cut after the old one was renamed, before the new one existed: the old one runs alone
    # as <name>-previous. It gets its name back, then the switch happens normally.
    docker_client.containers.get(service).remove(force=True)
    previous.start()
    resumed = deploy(service, images.v2, port)
    assert resumed["outcome"] == "updated", resumed.result
    assert any("back to" in step for step in resumed.result["steps"])
    assert served_version(port) == images.v2.version
    assert docker_client.containers.get(f"{service}-previous").attrs["Image"] == images.v1.id


def test_env_may_not_set_what_the_module_manages(images, service):
    run = deploy(service, images.v1, free_port(), env={"LINKEDGE_PORT": "9999"})
    assert run.failed and "env must not set LINKEDGE_PORT" in run.result["msg"]


def _predict_status(port: int, token: str | None) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_api_token_file_protects_predictions_and_a_new_token_recreates(
    docker_client, images, service, tmp_path
):
    port = free_port()
    token_file = tmp_path / "api-token"
    token_file.write_text("first-token-0123456789\n")
    token_file.chmod(0o444)  # the test engine runs the container as 10001: it must read it
    run = deploy(service, images.v1, port, api_token_file=str(token_file))
    assert run["outcome"] == "updated" and run["smoke_vectors_checked"] > 0, run.result
    container = docker_client.containers.get(service)
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/run/secrets/linkedge-api-token"]["RW"] is False
    assert "first-token" not in json.dumps(container.attrs["Config"])  # path only, no secret
    assert _predict_status(port, None) == 401
    assert _predict_status(port, "wrong-token") == 401
    assert _predict_status(port, "first-token-0123456789") == 400  # authorised; {} is no record
    assert served_version(port) == images.v1.version  # metadata stays open

    assert deploy(service, images.v1, port, api_token_file=str(token_file))["changed"] is False
    token_file.chmod(0o644)
    token_file.write_text("second-token-9876543210\n")
    rotated = deploy(service, images.v1, port, api_token_file=str(token_file))
    assert rotated["outcome"] == "updated", rotated.result  # smoke-checked with the new token
    assert _predict_status(port, "first-token-0123456789") == 401
    assert _predict_status(port, "second-token-9876543210") == 400

    empty = tmp_path / "empty-token"
    empty.write_text("")
    refused = deploy(service, images.v1, port, api_token_file=str(empty))
    assert refused.failed and "is empty" in refused.result["msg"]
    assert _predict_status(port, "second-token-9876543210") == 400  # still serving


@pytest.mark.usefixtures("migrate_queued_connections")
def test_grpc_port_serves_oip_grpc_with_the_token_and_switches_without_a_failure(
    docker_client, images, service, tmp_path
):
    grpc = pytest.importorskip("grpc")
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    token_file = tmp_path / "token"
    token_file.write_text("grpc-module-token\n")
    token_file.chmod(0o444)
    port, grpc_port = free_port(), free_port()
    first = deploy(service, images.v1, port, grpc_port=grpc_port, api_token_file=str(token_file))
    assert first["outcome"] == "updated", first.result
    env = dict(
        e.split("=", 1) for e in docker_client.containers.get(service).attrs["Config"]["Env"]
    )
    assert env["LINKEDGE_GRPC_PORT"] == str(grpc_port)

    request = service_pb2.ModelInferRequest(model_name="aps-classifier")
    request.inputs.add(name="input-0", datatype="FP32", shape=[1, 170])
    request.raw_input_contents.append(b"\x00" * 680)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=service_pb2.ModelInferRequest.SerializeToString,
        response_deserializer=service_pb2.ModelInferResponse.FromString,
    )
    metadata = [("authorization", "Bearer grpc-module-token")]
    with pytest.raises(grpc.RpcError) as refused:
        infer(request, timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert infer(request, metadata=metadata, timeout=5).model_version == images.v1.version

    versions: list[str] = []
    failures: list[str] = []
    running = threading.Event()
    running.set()

    def probe() -> None:  # one channel kept open across the switch, as tritonclient keeps it
        while running.is_set():
            try:
                versions.append(infer(request, metadata=metadata, timeout=5).model_version)
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        time.sleep(0.5)
        switch = deploy(
            service, images.v2, port, grpc_port=grpc_port, api_token_file=str(token_file)
        )
        time.sleep(1.0)
    finally:
        running.clear()
        prober.join(timeout=10)
        channel.close()
    assert switch["outcome"] == "updated", switch.result
    assert any("listens for gRPC" in step for step in switch["steps"]), switch["steps"]
    assert failures == [], failures[:5]
    assert versions[0] == images.v1.version and versions[-1] == images.v2.version
    assert set(versions) == {images.v1.version, images.v2.version}


def test_an_image_that_cannot_serve_grpc_is_refused_as_a_candidate(docker_client, images, service):
    # As an image built before LinkEdge served gRPC: it ignores LINKEDGE_GRPC_PORT.
    no_grpc = _derive(
        docker_client,
        images.v2,
        f"{images.v2.tag}-nogrpc",
        'ENTRYPOINT ["env", "LINKEDGE_GRPC_PORT=", "python3", "-m", "inference_image", "serve"]\n',
    )
    try:
        port, grpc_port = free_port(), free_port()
        assert deploy(service, images.v1, port, grpc_port=grpc_port)["outcome"] == "updated"
        run = deploy(service, no_grpc, port, grpc_port=grpc_port)
        assert run.failed and run["outcome"] == "rolled_back", run.result
        assert "does not serve gRPC" in run["reason"] and not run["changed"]
        assert served_version(port) == images.v1.version
    finally:
        for container in containers_of(docker_client, service).values():
            container.remove(force=True)
        docker_client.images.remove(no_grpc.tag, force=True)


def _predict_rows(port: int, rows: list[list]) -> None:
    import urllib.request

    features = len(rows[0])
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [len(rows), features],
                    "datatype": "FP32",
                    "data": [value for row in rows for value in row],
                }
            ]
        }
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/aps-classifier/infer", data=body, method="POST"
    )
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


@pytest.mark.usefixtures("migrate_queued_connections")
def test_capture_spools_the_served_rows_on_the_host_and_not_the_checks(
    docker_client, images, service, tmp_path
):
    """capture: the serving container writes what it answers to a spool on the host; its own
    smoke checks (check port) and the candidate's are not captured; a switch leaves every
    segment of the old container sealed, none twice."""
    import os

    from inference_image.capture_spool import read_segment

    port = free_port()
    spool = tmp_path / "capture"
    spool.mkdir()
    os.chown(spool, 10001, 10001)
    capture = {"dir": str(spool), "rate": 1.0, "segment": "8k", "budget": "1m"}
    run = deploy(service, images.v1, port, capture=capture)
    assert run["outcome"] == "updated" and run["smoke_vectors_checked"] > 0, run.result
    container = docker_client.containers.get(service)
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/var/lib/linkedge/capture"]["RW"] is True
    assert deploy(service, images.v1, port, capture=capture)["changed"] is False

    rows = [[float(row * 170 + column) for column in range(170)] for row in range(25)]
    for start in range(0, 25, 5):
        _predict_rows(port, rows[start : start + 5])
    import urllib.request

    deadline = time.monotonic() + 10
    while True:  # the rows reach the spool from a writer thread, just after the answers
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        # The container's own CPU and memory, from its cgroup (read inside the container).
        figures = {
            line.split()[0]: float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith(("linkedge_container_", "linkedge_capture_records_total"))
        }
        if figures.get("linkedge_capture_records_total") == 25 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert figures["linkedge_container_cpu_seconds_total"] > 0, figures
    assert figures["linkedge_container_memory_bytes"] > 10 << 20, figures
    assert figures["linkedge_capture_records_total"] == 25, figures
    switched = deploy(service, images.v2, port, capture=capture)  # the old one stops
    assert switched["outcome"] == "updated", switched.result
    deadline = time.monotonic() + 30
    while list((spool / "open").glob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the new container holds no open segment until it is asked
    kept = [item for path in sorted((spool / "sealed").iterdir()) for item in read_segment(path)]
    # Exactly the served rows, each once (two workers: one segment each, in either order).
    assert sorted(item["inputs"] for item in kept) == sorted(rows)
    assert {item["model_version"] for item in kept} == {images.v1.version}
    refused = deploy(service, images.v2, port, capture={**capture, "rate": 2.0})
    assert refused.failed and "capture.rate must be between 0 and 1" in refused.result["msg"]

"""Zero-downtime handover between two real gunicorn servers on one port (SO_REUSEPORT).

This is what linkedge.edge.inference_container does on a truck: the new server binds the
service port beside the old one (LINKEDGE_REUSE_PORT=1), is checked on a port of its own
(LINKEDGE_CHECK_PORT), then the old one is stopped gracefully. A client opening a new
connection for every request must see no failure at any point; nor must gRPC clients, with a
channel kept open across the handover or a new channel per request (the gRPC port is shared
with SO_REUSEPORT the same way).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from inference_image.bundle import ModelBundle

REPO = Path(__file__).resolve().parents[2]
LAUNCH_ENV = "from inference_image.serving.server import run_from_env; run_from_env()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    bundle: Path, port: int, check_port: int, log: Path, grpc_port: int | None = None
) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PROMETHEUS_MULTIPROC_DIR": str(log.with_suffix(".metrics")),
        "LINKEDGE_BUNDLE": str(bundle),
        "LINKEDGE_HOST": "127.0.0.1",
        "LINKEDGE_PORT": str(port),
        "LINKEDGE_CHECK_PORT": str(check_port),
        "LINKEDGE_REUSE_PORT": "1",
        "LINKEDGE_WORKERS": "2",
        "LINKEDGE_GRPC_PORT": "" if grpc_port is None else str(grpc_port),
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", LAUNCH_ENV], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def wait_ready(process: subprocess.Popen, port: int, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/v2/health/ready", timeout=2
            ) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"not ready on {port} after {timeout} s:\n{log.read_text()}")


class Prober(threading.Thread):
    """Sends one request after the other until stopped, counting requests and failures;
    ``call()`` sends one and returns the label it got."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.running = threading.Event()
        self.running.set()
        self.requests = 0
        self.failures: list[str] = []
        self.labels: set[str] = set()

    def call(self) -> str:
        raise NotImplementedError

    def run(self) -> None:
        while self.running.is_set():
            self.requests += 1
            try:
                self.labels.add(self.call())
            except Exception as exc:  # every failure counts; the test shows them
                self.failures.append(repr(exc))
        self.close()

    def close(self) -> None:
        pass

    def stop(self) -> None:
        self.running.clear()
        self.join(timeout=10)


class HttpProber(Prober):
    """POSTs one record to /predict over a new connection each time."""

    def __init__(self, port: int, body: bytes) -> None:
        super().__init__()
        self.url = f"http://127.0.0.1:{port}/predict"
        self.body = body

    def call(self) -> str:
        request = urllib.request.Request(
            self.url, data=self.body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            (prediction,) = json.loads(answer.read())["predictions"]
            return prediction["label"]


class GrpcProber(Prober):
    """ModelInfer with one row: over one channel kept open (``reuse``) or a new channel per
    request."""

    def __init__(self, port: int, row: list[float | None], reuse: bool) -> None:
        super().__init__()
        import numpy as np
        import tritonclient.grpc.service_pb2 as service_pb2

        self.target = f"127.0.0.1:{port}"
        self.reuse = reuse
        self.response_class = service_pb2.ModelInferResponse
        request = service_pb2.ModelInferRequest(model_name="aps-classifier")
        request.inputs.add(name="input-0", datatype="FP32", shape=[1, len(row)])
        values = np.array([np.nan if v is None else v for v in row], dtype="<f4")
        request.raw_input_contents.append(values.tobytes())
        self.request = request.SerializeToString()
        self.channel = None

    def call(self) -> str:
        import grpc

        if self.channel is None:
            self.channel = grpc.insecure_channel(self.target)
        infer = self.channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            response_deserializer=self.response_class.FromString,
        )
        try:
            response = infer(self.request, timeout=5)
        finally:
            if not self.reuse:
                self.close()
        names = [output.name for output in response.outputs]
        return dict(zip(names, response.raw_output_contents, strict=True))["label"][4:].decode()

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


@pytest.mark.usefixtures("migrate_queued_connections")
def test_handover_on_one_port_loses_no_request(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    port, old_check, new_check, grpc_port = free_port(), free_port(), free_port(), free_port()
    vector = tiny_bundle.smoke_vectors[0]
    body = json.dumps(dict(zip(tiny_bundle.feature_names, vector["inputs"], strict=True))).encode()
    old_log, new_log = tmp_path / "old.log", tmp_path / "new.log"
    old = start_server(tiny_bundle.path, port, old_check, old_log, grpc_port)
    new = None
    probers: list[Prober] = [HttpProber(port, body) for _ in range(2)]
    probers += [GrpcProber(grpc_port, vector["inputs"], reuse) for reuse in (True, False)]
    try:
        wait_ready(old, port, old_log)
        for prober in probers:
            prober.start()
        time.sleep(0.5)
        new = start_server(tiny_bundle.path, port, new_check, new_log, grpc_port)
        wait_ready(new, new_check, new_log)  # its own port: it is this server that is ready
        time.sleep(0.5)  # both serve the port now
        old.send_signal(signal.SIGTERM)  # gunicorn's graceful stop: in-flight requests finish
        assert old.wait(timeout=40) == 0, old_log.read_text()
        time.sleep(0.5)
        with pytest.raises(OSError):  # the old server's check port is gone with it
            socket.create_connection(("127.0.0.1", old_check), timeout=1).close()
    finally:
        for prober in probers:
            prober.stop()
        for process in (old, new):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=40)
    assert all(prober.requests > 30 for prober in probers), "a prober hardly ran"
    requests_sent = sum(prober.requests for prober in probers)
    failures = [failure for prober in probers for failure in prober.failures]
    assert failures == [], f"{len(failures)} of {requests_sent} requests failed: {failures[:5]}"
    assert {label for prober in probers for label in prober.labels} == {vector["label"]}


def test_check_port_must_differ_from_the_service_port(tiny_bundle: ModelBundle) -> None:
    from inference_image.serving.server import gunicorn_options

    with pytest.raises(ValueError, match="LINKEDGE_CHECK_PORT must differ"):
        gunicorn_options("127.0.0.1", 8080, 1, 30, False, check_port=8080)
    options = gunicorn_options("0.0.0.0", 8080, 1, 30, False, reuse_port=True, check_port=9090)
    assert options["bind"] == ["0.0.0.0:8080", "127.0.0.1:9090"]
    assert options["reuse_port"] is True

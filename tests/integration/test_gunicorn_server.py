"""`server.run` under gunicorn with two real worker processes."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import stop_process
from inference_image.bundle import ModelBundle
from inference_image.capture_spool import read_segment

REPO = Path(__file__).resolve().parents[2]
N_REQUESTS = 50
LAUNCH_RUN = """
import sys
from pathlib import Path
from inference_image.serving.config import ServingConfig
from inference_image.serving.server import run
run(Path(sys.argv[1]), "127.0.0.1", int(sys.argv[2]), workers=2,
    config=ServingConfig(xgboost_nthread=int(sys.argv[3])))
"""
LAUNCH_ENV = "from inference_image.serving.server import run_from_env; run_from_env()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(
        self,
        bundle_path: Path,
        tmp_path: Path,
        nthread: int,
        via_env: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.metrics_dir = tmp_path / "prometheus"
        self.log_path = tmp_path / "server.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
        }
        env.pop("LINKEDGE_ACCESS_LOG", None)
        if via_env:  # the container entrypoint
            env.update(
                LINKEDGE_BUNDLE=str(bundle_path),
                LINKEDGE_HOST="127.0.0.1",
                LINKEDGE_PORT=str(self.port),
                LINKEDGE_WORKERS="2",
                LINKEDGE_XGBOOST_NTHREAD=str(nthread),
            )
            env.update(extra_env or {})
            command = [sys.executable, "-c", LAUNCH_ENV]
        else:
            command = [sys.executable, "-c", LAUNCH_RUN, str(bundle_path), str(self.port)]
            command.append(str(nthread))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        """The gunicorn workers: the master's child processes, from /proc."""
        children = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(fields[1]) == self.process.pid:
                children.add(int(stat.parent.name))
        return children

    def wait_workers(self, count: int, timeout: float = 30.0) -> set[int]:
        """The worker PIDs once ``count`` workers run (they boot after the first is ready)."""
        deadline = time.monotonic() + timeout
        while len(workers := self.worker_pids()) != count:
            if time.monotonic() > deadline:
                pytest.fail(f"{len(workers)} workers, expected {count}:\n{self.log()}")
            time.sleep(0.05)
        return workers

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.base}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        pytest.fail(f"server not ready after {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 40.0) -> int:
        if not stop_process(self.process, timeout):
            pytest.fail(f"server ignored SIGTERM for {timeout} s:\n{self.log()}")
        self._log.close()
        return self.process.returncode


@pytest.fixture(
    params=[(1, False), (2, True)], ids=["run-preloaded-nthread1", "env-per-worker-nthread2"]
)
def server(request: pytest.FixtureRequest, tiny_bundle: ModelBundle, tmp_path: Path):
    nthread, via_env = request.param
    running = Server(tiny_bundle.path, tmp_path, nthread=nthread, via_env=via_env)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def predict_counts_by_pid(metrics_dir: Path) -> Counter[int]:
    """Successful /predict requests recorded in each process's metric file."""
    counts: Counter[int] = Counter()
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, _timestamp, _offset in MmapedDict.read_all_values_from_file(str(path)):
            if '"linkedge_requests_total"' in key and '"/predict"' in key and '"200"' in key:
                counts[pid] += int(value)
    return counts


def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    text = requests.get(f"{base}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_two_workers_serve_and_aggregate_metrics(server: Server, tiny_bundle: ModelBundle):
    vectors = tiny_bundle.smoke_vectors
    jobs = [vectors[i % len(vectors)] for i in range(N_REQUESTS)]

    def predict(vector: dict) -> tuple[int, dict]:
        record = dict(zip(tiny_bundle.feature_names, vector["inputs"], strict=True))
        response = requests.post(f"{server.base}/predict", json=record, timeout=10)
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(predict, jobs))

    for (status, body), vector in zip(results, jobs, strict=True):
        assert status == 200, body
        (prediction,) = body["predictions"]
        assert np.float32(prediction["probability"]) == np.float32(vector["probability"])
        assert prediction["label"] == vector["label"]

    per_worker = predict_counts_by_pid(server.metrics_dir)
    assert sum(per_worker.values()) == N_REQUESTS

    # Both workers must answer (a worker hung after fork never would). A worker that loads
    # the model after the fork may still be loading during the first batch, so keep sending
    # bounded batches until both have served.
    batch, sent_jobs = list(jobs), list(jobs)
    while len([pid for pid, n in per_worker.items() if n]) < 2 and len(sent_jobs) < 20 * N_REQUESTS:
        with ThreadPoolExecutor(max_workers=6) as pool:
            more = list(pool.map(predict, batch))
        assert all(status == 200 for status, _ in more)
        sent_jobs += batch
        per_worker = predict_counts_by_pid(server.metrics_dir)
    assert len([pid for pid, n in per_worker.items() if n]) == 2, per_worker
    assert sum(per_worker.values()) == len(sent_jobs)

    expected_labels = Counter(vector["label"] for vector in sent_jobs)
    for _ in range(4):  # every scrape, whichever worker answers, sees all workers' counts
        samples = scrape(server.base)
        key = frozenset({"endpoint": "/predict", "method": "POST", "status": "200"}.items())
        assert samples[("linkedge_requests_total", key)] == len(sent_jobs)
        for label in ("pos", "neg"):
            total = samples[("linkedge_predictions_total", frozenset({("label", label)}))]
            assert total == expected_labels[label]
        duration = frozenset({("endpoint", "/predict")})
        assert samples[("linkedge_request_duration_seconds_count", duration)] == len(sent_jobs)
        info = frozenset({("version", tiny_bundle.version), ("bundle_sha256", tiny_bundle.sha256)})
        assert samples[("linkedge_model_info", info)] == 1
        # Drift: every worker's rows, counted in its own file, are in the one window.
        assert samples[("linkedge_drift_window_rows", frozenset())] == len(sent_jobs)
    assert len(list(server.metrics_dir.glob("drift-*.counts"))) == 2

    workers = list(per_worker)
    assert server.stop() == 0, server.log()
    log = server.log()
    assert "Shutting down: Master" in log
    assert "POST /predict" not in log  # access log is off by default
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_tritonclient_binary_infer(server: Server, tiny_bundle: ModelBundle) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    rows = np.array([v["inputs"] for v in tiny_bundle.smoke_vectors], dtype=np.float32)
    expected = np.array([v["probability"] for v in tiny_bundle.smoke_vectors], dtype=np.float32)
    labels = [v["label"].encode() for v in tiny_bundle.smoke_vectors]
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", concurrency=2)
    try:
        assert client.is_server_ready() and client.is_model_ready("aps-classifier")
        tensor = httpclient.InferInput("input-0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)  # binary, the client's default
        for index in range(6):  # several requests over the client's kept-alive connections
            result = client.infer("aps-classifier", [tensor], request_id=f"r{index}")
            np.testing.assert_array_equal(result.as_numpy("probability"), expected)
            assert result.as_numpy("label").tolist() == labels
            assert result.get_response()["id"] == f"r{index}"
        versioned = client.infer("aps-classifier", [tensor], model_version=tiny_bundle.version)
        np.testing.assert_array_equal(versioned.as_numpy("probability"), expected)
    finally:
        client.close()


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, from ``sock`` (leftovers stay in buffer)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in a body"
        rest += chunk
    buffer[:] = rest[length:]
    return status.encode(), headers, rest[:length]


def test_keep_alive_and_pipelined_requests(server: Server, tiny_bundle: ModelBundle) -> None:
    vector = tiny_bundle.smoke_vectors[3]
    body = json.dumps(dict(zip(tiny_bundle.feature_names, vector["inputs"], strict=True)))
    request = (
        "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        buffer = bytearray()
        sock.sendall(request * 5)  # pipelined: all five before reading any answer
        for _ in range(5):
            status, headers, payload = _read_response(sock, buffer)
            assert status.startswith(b"HTTP/1.1 200"), payload
            assert headers["connection"] == "keep-alive"
            (prediction,) = json.loads(payload)["predictions"]
            assert prediction["label"] == vector["label"]
        sock.sendall(request)  # the same connection still serves
        status, _, payload = _read_response(sock, buffer)
        assert status.startswith(b"HTTP/1.1 200") and not buffer


@pytest.fixture
def tampered_bundle(tiny_bundle: ModelBundle, tmp_path: Path) -> Path:
    bundle = tmp_path / "tampered"
    bundle.mkdir()
    for file in tiny_bundle.path.iterdir():
        (bundle / file.name).write_bytes(file.read_bytes())
    (bundle / "model_card.json").write_text('{"version": "evil", "threshold": 0.0}')
    return bundle


def test_a_tampered_bundle_stops_the_server_at_startup(tampered_bundle: Path, tmp_path: Path):
    for nthread, via_env in ((1, False), (2, True)):
        started = Server(tampered_bundle, tmp_path, nthread, via_env)
        try:
            returncode = started.process.wait(timeout=60)
        finally:
            started.stop()
        assert returncode == (2 if via_env else 1)
        assert "model_card.json fails its checksum" in started.log()
        assert "Listening at" not in started.log()  # gunicorn never started


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LINKEDGE_PORT", "http"),
        ("LINKEDGE_PORT", "70000"),
        ("LINKEDGE_WORKERS", "0"),
        ("LINKEDGE_REQUEST_TIMEOUT", "-5"),
        ("LINKEDGE_MAX_ROWS", "many"),
        ("LINKEDGE_XGBOOST_NTHREAD", "1.5"),
        ("LINKEDGE_WORKER_CLASS", "eventlet"),
    ],
)
def test_run_from_env_rejects_bad_settings(
    tiny_bundle: ModelBundle,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    from inference_image.serving import server

    def must_not_start(*args: object, **kwargs: object) -> None:
        raise AssertionError("gunicorn was started despite a bad setting")

    monkeypatch.setattr(server, "_LinkEdgeApplication", must_not_start)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    run_from_env = server.run_from_env
    with pytest.raises(SystemExit) as info:
        run_from_env({"LINKEDGE_BUNDLE": str(tiny_bundle.path), variable: value})
    assert info.value.code == 2
    assert variable in capsys.readouterr().err
    # A refused setting changes nothing in the process (metrics mode stays as it was).
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_run_from_env_names_a_missing_bundle(tmp_path: Path, capsys, monkeypatch) -> None:
    from inference_image.serving import server

    monkeypatch.setattr(server, "_LinkEdgeApplication", None)  # must fail before gunicorn
    with pytest.raises(SystemExit):
        server.run_from_env({"LINKEDGE_BUNDLE": str(tmp_path / "nothing-here")})
    assert "nothing-here is not a model bundle" in capsys.readouterr().err


# --- limits, enforced by the real server ---------------------------------------------------

LIMITS_ENV = {
    "LINKEDGE_MAX_BODY_BYTES": "20000",
    "LINKEDGE_MAX_ROWS": "3",
    "LINKEDGE_REQUEST_TIMEOUT": "2",
}


@pytest.fixture(scope="module")
def limited_server(tiny_bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory):
    running = Server(
        tiny_bundle.path,
        tmp_path_factory.mktemp("limited"),
        nthread=1,
        via_env=True,
        extra_env=LIMITS_ENV,
    )
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _exchange(port: int, raw: bytes, pause_after: int | None = None, timeout: float = 20.0):
    """Send ``raw`` (stalling after ``pause_after`` bytes: the rest is never sent); return
    (status or 0 when the server closed without answering, body, seconds taken)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw if pause_after is None else raw[:pause_after])
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    elapsed = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head.startswith(b"HTTP/1.1") else 0
    return status, body, elapsed


def _post(path: str, body: bytes, *headers: str, chunked: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: t", "Connection: close", *headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        body = (
            b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000])
                for i in range(0, len(body), 1000)
            )
            + b"0\r\n\r\n"
        )
    else:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_body_and_row_limits_on_every_path(limited_server: Server, tiny_bundle: ModelBundle):
    workers = limited_server.wait_workers(2)
    names = tiny_bundle.feature_names
    record = {name: None for name in names}
    json_type = "Content-Type: application/json"
    big = json.dumps({"instances": [record] * 3, "pad": "x" * 20000}).encode()
    four = json.dumps({"instances": [record] * 4}).encode()
    v2_four = json.dumps(
        {"inputs": [{"name": "i", "shape": [4, 170], "datatype": "FP32", "data": [None] * 680}]}
    ).encode()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "i",
                    "shape": [4, 170],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 4 * 170 * 4},
                }
            ]
        }
    ).encode()
    binary_four = header + np.full((4, 170), np.nan, dtype="<f4").tobytes()
    binary_big = header + b"\0" * 20000
    infer = "/v2/models/aps-classifier/infer"
    binary_headers = ("Content-Type: application/octet-stream",)
    cases = [
        (_post("/predict", big, json_type), 413, b"exceeds the limit of 20000 bytes"),
        (_post("/predict", big, json_type, chunked=True), 413, b"limit of 20000 bytes"),
        (_post(infer, big, json_type, chunked=True), 413, b"limit of 20000 bytes"),
        (_post("/predict", four, json_type), 413, b"4 records exceed the limit of 3"),
        (_post(infer, v2_four, json_type), 413, b"4 rows exceed the limit of 3"),
        (_post(infer, v2_four, json_type, chunked=True), 413, b"4 rows exceed the limit of 3"),
        (
            _post(infer, binary_four, *binary_headers, f"{HEADER}: {len(header)}"),
            413,
            b"4 rows exceed the limit of 3",
        ),
        (
            _post(infer, binary_big, *binary_headers, f"{HEADER}: {len(header)}", chunked=True),
            413,
            b"limit of 20000 bytes",
        ),
    ]
    for raw, status, fragment in cases:
        got, body, _ = _exchange(limited_server.port, raw)
        assert got == status and fragment in body, (raw[:200], got, body)
    # A body announced over the limit is refused before it is sent.
    announced = (
        f"POST /predict HTTP/1.1\r\nHost: t\r\n{json_type}\r\nContent-Length: 999999\r\n\r\n"
    ).encode()
    got, body, _ = _exchange(limited_server.port, announced, pause_after=len(announced))
    assert got == 413 and b"999999 bytes exceeds the limit" in body
    assert limited_server.worker_pids() == workers


HEADER = "Inference-Header-Content-Length"


def test_a_request_that_does_not_arrive_in_time_gets_408_and_the_worker_lives(
    limited_server: Server, tiny_bundle: ModelBundle
) -> None:
    """LINKEDGE_REQUEST_TIMEOUT=2: a stalled body is a 408 after ~2 s, a stalled head a
    closed connection; the same workers serve on (gunicorn's own kill comes 5 s later)."""
    workers = limited_server.wait_workers(2)
    record = dict(
        zip(tiny_bundle.feature_names, tiny_bundle.smoke_vectors[0]["inputs"], strict=True)
    )
    body = json.dumps(record).encode()
    raw = _post("/predict", body, "Content-Type: application/json")
    infer = _post("/v2/models/aps-classifier/infer", body, "Content-Type: application/json")
    stalled_body = raw[: raw.index(b"\r\n\r\n") + 10]
    for request in (stalled_body, infer[: infer.index(b"\r\n\r\n") + 1]):
        status, answer, elapsed = _exchange(limited_server.port, request, pause_after=len(request))
        if request is stalled_body:
            assert status == 408, answer
            assert json.loads(answer)["error"].startswith("request body not received in time")
        else:
            assert status == 0 and answer == b""  # stalled in its head: disconnected
        assert 1.5 < elapsed < 4.5, elapsed

    # A body trickled one byte at a time is cut off at the same deadline (not per read):
    # the 408 arrives while the client is still sending, ~2 s after it started.
    started = time.monotonic()
    answered_after = None
    with socket.create_connection(("127.0.0.1", limited_server.port), timeout=20) as sock:
        sock.sendall(stalled_body)
        answer = b""
        for byte in raw[len(stalled_body) :]:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0.25)[0]:  # the answer, while still sending
                answered_after = time.monotonic() - started
                break
            if time.monotonic() - started > 6:
                break
        sock.settimeout(10)
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert answered_after is not None and 1.5 < answered_after < 3.5, answered_after

    status, answer, _ = _exchange(limited_server.port, raw)
    assert status == 200, answer
    assert limited_server.worker_pids() == workers
    log = limited_server.log()
    assert "WORKER TIMEOUT" not in log and "Traceback" not in log, log


# --- the bearer token ------------------------------------------------------------------------

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def token_server(tiny_bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("token")
    token_file = directory / "api-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o400)
    running = Server(
        tiny_bundle.path,
        directory,
        nthread=1,
        via_env=True,
        extra_env={"LINKEDGE_API_TOKEN_FILE": str(token_file)},
    )
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_the_token_guards_predictions_and_leaves_health_open(
    token_server: Server, tiny_bundle: ModelBundle
) -> None:
    base = token_server.base
    vector = tiny_bundle.smoke_vectors[2]
    record = dict(zip(tiny_bundle.feature_names, vector["inputs"], strict=True))
    v2 = {"inputs": [{"name": "i", "shape": [170], "datatype": "FP32", "data": vector["inputs"]}]}
    good = {"Authorization": f"Bearer {TOKEN}"}
    for path, body in (("/predict", record), ("/v2/models/aps-classifier/infer", v2)):
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
            response = requests.post(f"{base}{path}", json=body, headers=headers, timeout=10)
            assert response.status_code == 401, response.text
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "token" in response.json()["error"] or "Bearer" in response.json()["error"]
        response = requests.post(f"{base}{path}", json=body, headers=good, timeout=10)
        assert response.status_code == 200, response.text
    answer = requests.post(f"{base}/predict", json=record, headers=good, timeout=10).json()
    assert answer["predictions"][0]["label"] == vector["label"]
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/aps-classifier",
        "/v2/models/aps-classifier/ready",
        "/metrics",
        "/openapi.json",
    ):
        assert requests.get(f"{base}{path}", timeout=10).status_code == 200, path
    document = requests.get(f"{base}/openapi.json", timeout=10).json()
    assert document["paths"]["/predict"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in document["paths"]["/v2/health/ready"]["get"]
    # The image's HEALTHCHECK command works with a token configured (health is open).
    check = subprocess.run(
        [sys.executable, "-m", "inference_image", "healthcheck", "--port", str(token_server.port)],
        cwd=REPO,
        capture_output=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr
    assert TOKEN not in token_server.log()


@pytest.mark.parametrize("content", ["", "  \n", None], ids=["empty", "blank", "missing"])
def test_an_empty_or_unreadable_token_file_stops_the_server(
    tiny_bundle: ModelBundle, tmp_path: Path, content: str | None
) -> None:
    token_file = tmp_path / "api-token"
    if content is not None:
        token_file.write_text(content)
    started = Server(
        tiny_bundle.path,
        tmp_path,
        nthread=1,
        via_env=True,
        extra_env={"LINKEDGE_API_TOKEN_FILE": str(token_file)},
    )
    try:
        returncode = started.process.wait(timeout=60)
    finally:
        started.stop()
    assert returncode == 2
    lines = started.log().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linkedge-serve: error: LINKEDGE_API_TOKEN_FILE")
    assert ("cannot be read" if content is None else "is empty") in lines[0]


def wait_until_captured(base: str, rows: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    written = 0.0
    while time.monotonic() < deadline:
        for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines():
            if line.startswith("linkedge_capture_records_total "):
                written = float(line.split()[1])
        if written >= rows:
            return
        time.sleep(0.1)
    raise AssertionError(f"{written:.0f} of {rows} rows written to the spool in {timeout} s")


def test_capture_spool_across_workers_a_killed_worker_and_the_shutdown(
    tiny_bundle: ModelBundle, tmp_path: Path
) -> None:
    """Two workers capture every row (rate 1) into one spool; a worker killed mid-run has its
    open segment sealed by the master, the others are sealed at shutdown: every answered row
    is in a sealed segment, none twice, and nothing stays open."""
    spool = tmp_path / "capture"
    server = Server(
        tiny_bundle.path,
        tmp_path,
        nthread=1,
        via_env=True,
        extra_env={"LINKEDGE_CAPTURE_DIR": str(spool), "LINKEDGE_CAPTURE_RATE": "1"},
    )
    try:
        server.wait_ready()
        workers = server.wait_workers(2)
        vector = tiny_bundle.smoke_vectors[3]
        record = dict(zip(tiny_bundle.feature_names, vector["inputs"], strict=True))

        def predict(number: int) -> int:
            return requests.post(f"{server.base}/predict", json=record, timeout=10).status_code

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert set(pool.map(predict, range(200))) == {200}
        # Rows are written by each worker's writer thread just after the answer: a kill
        # before that loses what waits (as a power cut loses unsynced writes). Here the kill
        # comes after the writers have counted every row written.
        wait_until_captured(server.base, 200)
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(path.name.startswith(f"{victim}-") for path in (spool / "open").iterdir()):
            assert time.monotonic() < deadline, "the killed worker's segment stays open"
            time.sleep(0.1)
        server.wait_workers(2)
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert set(pool.map(predict, range(200, 300))) == {200}
    finally:
        assert server.stop() == 0, server.log()
    assert list((spool / "open").iterdir()) == []
    rows = [item for path in sorted((spool / "sealed").iterdir()) for item in read_segment(path)]
    assert len(rows) == 300
    assert {np.float32(item["probability"]) for item in rows} == {np.float32(vector["probability"])}

"""``--case grpc``: the Open Inference Protocol over gRPC, LinkEdge against MLServer.

One run starts the real image (2 workers, hardened, host network, LINKEDGE_GRPC_PORT on a
free port: one gRPC server per worker with SO_REUSEPORT) and MLServer with one XGBoost thread
per worker (the faster of the bench's two MLServer variants in every case of
``latest.md``; its gRPC server is its own, on a free port). Both get the same ModelInfer
request, ``raw_input_contents`` FP32 (as ``tritonclient.grpc`` sends it), for 1 record and
for a 100-row batch, at each of ``--grpc-concurrency`` requests in flight over up to
``--grpc-channels`` channels (one HTTP/2 connection each: one connection is served by one
LinkEdge worker). LinkEdge's HTTP V2 binary figure for the same rows and concurrency (wrk)
is measured in the same rounds, for reference.

The gRPC client is ``bench/grpc_load.py`` in a process of its own: Python and grpcio, the
same for both servers, so the comparison is fair, but it caps the absolute figures (wrk, a C
client, drives HTTP). Rounds are interleaved as in the throughput cases; each figure is its
median round; a round during which other work took the CPU is measured again.

Correct or failed: before the load each server's gRPC answer for each body is compared with
the bundle's model run locally (probability within 1e-6, label), LinkEdge's also with its
HTTP ``/predict`` answer for the same rows (the same float32 probabilities, exactly, and the
same labels); under load every answer must carry the very outputs of that checked answer;
the smoke vectors go over gRPC and HTTP before and after all the load. A wrong answer or any
gRPC error under load exits 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from inference_image.bundle import load_bundle
from inference_image.contract import MODEL_NAME
from inference_image.serving import grpc_schema

from . import verify
from .bodies import Body, BodyFactory, rows_of
from .grpc_report import LINKEDGE_GRPC, LINKEDGE_HTTP, MLSERVER_GRPC, grpc_ratios
from .load import LoadError, measure
from .procs import memory
from .run import MAX_RETRIES, QUIET_THRESHOLD, Bench, wait_for_quiet
from .servers import LinkEdgeContainer, MLServerProcess, ServerError
from .tools import REPO, log, package_version

INFER = "/inference.GRPCInferenceService/ModelInfer"
SERVER_READY = "/inference.GRPCInferenceService/ServerReady"
READY_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0
LOADER_WARMUP = {"full": 0.5, "smoke": 0.25}  # seconds of each load run before its window
GRPC_CLIENT = "python-grpcio"
MLSERVER_KEY = "mlserver-1t"

Measure = Callable[[float], dict[str, Any]]


class GrpcAnswerError(verify.WrongAnswer):
    """A gRPC call failed or its answer could not be read."""


# --- requests and answers --------------------------------------------------------------------


def infer_request(rows: np.ndarray, model: str = MODEL_NAME) -> bytes:
    """A ModelInferRequest as ``tritonclient.grpc`` builds it for ``InferInput("input-0",
    shape, "FP32").set_data_from_numpy(rows)``: raw little-endian FP32, no outputs named
    (each server sends its default outputs: LinkEdge probability and label, MLServer its one)."""
    request = grpc_schema.ModelInferRequest(model_name=model)
    request.inputs.add(name="input-0", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    return request.SerializeToString()


def model_name(server: Any) -> str:
    """The name a server serves the bundle's model under (MLServer: its model-settings.json;
    both are MODEL_NAME in this bench, with the input ``input-0`` as bench/bodies.py sends)."""
    if isinstance(server, MLServerProcess):
        return str(server.model_settings()["name"])
    return MODEL_NAME


def _labels(raw: bytes) -> list[str]:
    """A BYTES tensor: each element a 4-byte little-endian length, then its bytes."""
    values, position = [], 0
    while position < len(raw):
        size = int.from_bytes(raw[position : position + 4], "little")
        values.append(raw[position + 4 : position + 4 + size].decode())
        position += 4 + size
    return values


def _output_values(response: Any, index: int) -> Any:
    output = response.outputs[index]
    if response.raw_output_contents:
        raw = response.raw_output_contents[index]
        if output.datatype == "BYTES":
            return _labels(raw)
        dtypes = {"FP32": "<f4", "FP64": "<f8"}
        if output.datatype not in dtypes:
            raise GrpcAnswerError(f"output {output.name!r}: datatype {output.datatype}")
        return np.frombuffer(raw, dtype=dtypes[output.datatype]).astype(np.float64)
    contents = output.contents
    if output.datatype == "BYTES":
        return [value.decode() for value in contents.bytes_contents]
    values = contents.fp32_contents or contents.fp64_contents
    return np.array(list(values), dtype=np.float64)


def answers(kind: str, data: bytes) -> tuple[np.ndarray, list[str] | None]:
    """(probabilities, labels or None) from a ModelInferResponse of a ``kind`` server:
    LinkEdge's ``probability`` and ``label`` outputs, MLServer's one output."""
    response = grpc_schema.ModelInferResponse.FromString(data)
    outputs = {
        output.name: _output_values(response, i) for i, output in enumerate(response.outputs)
    }
    if kind == "mlserver":
        if len(outputs) != 1:
            raise GrpcAnswerError(f"{len(outputs)} outputs, expected 1: {sorted(outputs)}")
        (probabilities,) = outputs.values()
        return np.asarray(probabilities, dtype=np.float64).ravel(), None
    return np.asarray(outputs["probability"], dtype=np.float64), list(outputs["label"])


def outputs_tail(data: bytes) -> bytes:
    """The serialized ``raw_output_contents`` of an answer: how every identical answer ends
    (the outputs are the message's last field; MLServer's id before them differs)."""
    response = grpc_schema.ModelInferResponse.FromString(data)
    tail = grpc_schema.ModelInferResponse(
        raw_output_contents=list(response.raw_output_contents)
    ).SerializeToString()
    if not tail or not data.endswith(tail):
        raise GrpcAnswerError("the answer does not end with raw_output_contents")
    return tail


def call(target: str, method: str, request: bytes, timeout: float = CALL_TIMEOUT) -> bytes:
    with grpc.insecure_channel(target) as channel:
        try:
            return channel.unary_unary(method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise GrpcAnswerError(f"{method}: {exc.code()}: {exc.details()}") from None


def wait_grpc_ready(server: Any, timeout: float = READY_TIMEOUT) -> None:
    """ServerReady answers ready=true (the HTTP readiness came first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = call(server.grpc_target, SERVER_READY, b"", timeout=2.0)
            if grpc_schema.ServerReadyResponse.FromString(data).ready:
                return
        except GrpcAnswerError:
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"{server.label}: gRPC not ready on {server.grpc_target}")
        time.sleep(0.1)


def check_grpc(server: Any, body: Body, request: bytes) -> bytes:
    """One ModelInfer; WrongAnswer unless its answers are ``body``'s. The answer's bytes."""
    data = call(server.grpc_target, INFER, request)
    where = f"{server.key} gRPC {body.rows} rows"
    try:
        probabilities, labels = answers(server.kind, data)
    except (KeyError, ValueError, TypeError) as exc:
        raise verify.WrongAnswer(f"{where}: malformed answer ({exc!r})") from None
    verify.check_answers(where, probabilities, labels, body)
    return data


def check_equals_predict(server: Any, factory: BodyFactory, rows: int, data: bytes) -> None:
    """LinkEdge's gRPC answer has /predict's float32 probabilities (exactly) and labels."""
    body = factory.predict(rows)
    status, headers, text = verify.post(server.base_url, body)
    if status != 200:
        raise verify.WrongAnswer(f"/predict {rows} rows: HTTP {status}: {text[:300]!r}")
    expected, expected_labels = verify.answers(server.kind, body, headers, text)
    probabilities, labels = answers(server.kind, data)
    if not np.array_equal(probabilities.astype(np.float32), expected.astype(np.float32)):
        row = int(np.argmax(probabilities.astype(np.float32) != expected.astype(np.float32)))
        raise verify.WrongAnswer(
            f"gRPC {rows} rows: row {row} probability {probabilities[row]!r}, "
            f"/predict {expected[row]!r}"
        )
    if labels != expected_labels:
        raise verify.WrongAnswer(f"gRPC {rows} rows: labels differ from /predict's")


# --- the load --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One thing measured in a case: a server over gRPC, or LinkEdge over HTTP (wrk)."""

    key: str
    label: str
    server: Any
    measure: Measure


def channels_for(concurrency: int, most: int) -> int:
    return max(1, min(concurrency, most))


def run_loader(
    server: Any,
    files: tuple[Path, Path],
    concurrency: int,
    channels: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    """``bench/grpc_load.py`` in a process of its own; its figures."""
    request_file, tail_file = files
    command = [
        sys.executable,
        "-m",
        "bench.grpc_load",
        f"--target={server.grpc_target}",
        f"--request={request_file}",
        f"--tail={tail_file}",
        f"--concurrency={concurrency}",
        f"--channels={channels}",
        f"--seconds={seconds}",
        f"--warmup={warmup}",
        f"--pids={','.join(str(pid) for pid in server.pids())}",
    ]
    load_before = os.getloadavg()
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=warmup + seconds + 120
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise LoadError(f"grpc_load failed (exit {result.returncode}): {result.stderr[-1500:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["client"] = GRPC_CLIENT
    figures["load_1m_before"] = round(load_before[0], 2)
    return figures


def wrk_figures(figures: dict[str, Any]) -> dict[str, Any]:
    """measure()'s figures with the gRPC figures' client fields."""
    figures.pop("wrk_text", None)
    figures["client"] = "wrk"
    figures["client_cpu_cores"] = figures["wrk_cpu_cores"]
    figures["concurrency"] = figures["connections"]
    return figures


class GrpcBench(Bench):
    def grpc_servers(self, workdir: Path) -> list[Any]:
        servers: list[Any] = [LinkEdgeContainer(self.settings.image)]
        venv = self.settings.mlserver_venv
        if venv is not None:
            servers.append(
                MLServerProcess(
                    venv,
                    self.settings.bundle / "model.json",
                    workdir / "mlserver-1t",
                    MLSERVER_KEY,
                    "MLServer, 1 XGBoost thread/worker",
                    threads_per_worker=1,
                )
            )
        return servers

    def run(self) -> dict[str, Any]:
        settings = self.settings
        load_start = os.getloadavg()
        bundle = load_bundle(settings.bundle)
        factory = BodyFactory(bundle)
        report = self.header(bundle.version)
        report["case"] = "grpc"
        report["settings"].update(
            {
                "rows": list(settings.grpc_rows),
                "concurrency": list(settings.grpc_concurrency),
                "most_channels": settings.grpc_channels,
                "loader_warmup_s": LOADER_WARMUP[settings.mode],
                "grpc_client": f"bench/grpc_load.py: Python {sys.version.split()[0]}, grpcio "
                f"{grpc.__version__}, sync generic calls in threads, 1 process",
                "http_client": "wrk, 1 thread, connections = requests in flight",
                "workers": 2,
            }
        )
        report["grpc_cases"] = []
        report["servers"] = {}
        with tempfile.TemporaryDirectory(prefix="linkedge-bench-grpc-") as tmp:
            workdir = settings.workdir or Path(tmp)
            files = workdir / "grpc"
            files.mkdir(parents=True, exist_ok=True)
            servers = self.grpc_servers(workdir)
            try:
                self.start_checked(servers, factory)
                for server in servers:
                    wait_grpc_ready(server)
                self._check_grpc_smoke(servers, factory, "before")
                for rows in settings.grpc_rows:
                    self._rows_cases(report, rows, servers, factory, files)
                self._check_grpc_smoke(servers, factory, "after")
                for server in servers:
                    self._check(
                        f"{server.key} smoke vectors after load",
                        lambda s=server: verify.check_smoke(factory, s.kind, s.base_url),
                    )
                    report["servers"][server.key] = self._server_entry(server)
            finally:
                for server in servers:
                    server.stop()
        report["ratios"] = grpc_ratios(report["grpc_cases"])
        return self.finish(report, load_start)

    def _server_entry(self, server: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "label": server.label,
            "grpc_port": server.grpc_port,
            "cold_start_s": round(server.cold_start_seconds, 3),
            "memory_after_load": memory(server.pids()).as_dict(),
        }
        if isinstance(server, MLServerProcess):
            entry["mlserver_version"] = package_version(server.venv, "mlserver")
            entry["threads_per_worker"] = server.threads_per_worker or "default"
        return entry

    def _check_grpc_smoke(self, servers: list[Any], factory: BodyFactory, phase: str) -> None:
        """The bundle's smoke vectors in one ModelInfer (LinkEdge: equal to /predict too)."""
        n = len(factory.bundle.smoke_vectors)
        body = factory.v2_binary(n)
        for server in servers:
            request = infer_request(rows_of(factory.bundle, n), model_name(server))

            def check(s: Any = server, r: bytes = request) -> None:
                data = check_grpc(s, body, r)
                if s.kind == "linkedge":
                    check_equals_predict(s, factory, n, data)

            self._check(f"{server.key} gRPC smoke vectors {phase} load", check)

    # --- the cases ---------------------------------------------------------------------------

    def _rows_cases(
        self,
        report: dict[str, Any],
        rows: int,
        servers: list[Any],
        factory: BodyFactory,
        files: Path,
    ) -> None:
        """Check each server's answer for these rows, then each concurrency's case."""
        body = factory.v2_binary(rows)
        body_file = body.write(files)
        grpc_files: dict[str, tuple[Path, Path]] = {}
        for server in servers:
            request = infer_request(rows_of(factory.bundle, rows), model_name(server))
            answer: list[bytes] = []

            def check(s: Any = server, r: bytes = request, out: list[bytes] = answer) -> None:
                out.append(check_grpc(s, body, r))
                if s.kind == "linkedge":
                    check_equals_predict(s, factory, rows, out[0])

            if self._check(f"{server.key} gRPC {rows} rows answer before load", check):
                request_file = files / f"{server.key}-{rows}.request"
                tail_file = files / f"{server.key}-{rows}.tail"
                request_file.write_bytes(request)
                tail_file.write_bytes(outputs_tail(answer[0]))
                grpc_files[server.key] = (request_file, tail_file)
        linkedge = servers[0]
        http_ok = self._check(
            f"linkedge HTTP {body.key} answer before load",
            lambda: verify.check(linkedge.kind, linkedge.base_url, body),
        )
        for concurrency in self.settings.grpc_concurrency:
            targets = self._targets(servers, grpc_files, concurrency)
            if http_ok:
                targets.append(
                    Target(
                        LINKEDGE_HTTP,
                        "LinkEdge HTTP V2 binary (wrk)",
                        linkedge,
                        lambda seconds, c=concurrency: wrk_figures(
                            measure(self.wrk, linkedge, body, body_file, c, seconds)
                        ),
                    )
                )
            report["grpc_cases"].append(self.grpc_case(rows, concurrency, targets, servers))

    def _targets(
        self, servers: list[Any], grpc_files: dict[str, tuple[Path, Path]], concurrency: int
    ) -> list[Target]:
        channels = channels_for(concurrency, self.settings.grpc_channels)
        warmup = LOADER_WARMUP[self.settings.mode]
        targets = []
        for server in servers:
            if server.key not in grpc_files:
                continue
            key = LINKEDGE_GRPC if server.kind == "linkedge" else MLSERVER_GRPC
            targets.append(
                Target(
                    key,
                    f"{server.label} gRPC",
                    server,
                    lambda seconds, s=server: run_loader(
                        s, grpc_files[s.key], concurrency, channels, seconds, warmup
                    ),
                )
            )
        return targets

    def grpc_case(
        self, rows: int, concurrency: int, targets: list[Target], servers: list[Any]
    ) -> dict[str, Any]:
        """Every target in turn, ``rounds`` times; each target's median round."""
        settings = self.settings
        key = f"{'single' if rows == 1 else f'batch-{rows}'}-c{concurrency}"
        deadline = time.monotonic() + settings.quiet_wait
        quiet = None
        if settings.quiet_wait > 0:
            quiet = wait_for_quiet(servers, settings.quiet_wait, QUIET_THRESHOLD)
        rounds: dict[str, list[dict[str, Any]]] = {target.key: [] for target in targets}
        for _ in range(settings.rounds):
            for target in targets:
                figures = self._measure_calm(target, servers, deadline)
                if figures is None:
                    continue
                figures["rows_per_s"] = round(figures["requests_per_s"] * rows, 1)
                self._judge(f"{target.key} {key}", figures)
                rounds[target.key].append(figures)
        results = {}
        for target in targets:
            done = sorted(rounds[target.key], key=lambda figures: figures["requests_per_s"])
            if not done:
                continue
            figures = dict(done[(len(done) - 1) // 2])  # the median (lower, for even counts)
            figures["label"] = target.label
            figures["rounds_requests_per_s"] = [f["requests_per_s"] for f in rounds[target.key]]
            figures["rounds_other_cpu_cores"] = [f["other_cpu_cores"] for f in rounds[target.key]]
            results[target.key] = figures
            self._log(key, target.key, figures)
        return {
            "key": key,
            "title": "1 record" if rows == 1 else f"{rows} rows",
            "rows": rows,
            "concurrency": concurrency,
            "channels": channels_for(concurrency, settings.grpc_channels),
            "quiet_before": quiet,
            "results": results,
        }

    def _measure_calm(
        self, target: Target, servers: list[Any], deadline: float
    ) -> dict[str, Any] | None:
        """One round; measured again (at most MAX_RETRIES times, within the case's waiting
        budget) once the machine is calm when other work took the CPU meanwhile."""
        seconds = self.settings.seconds / self.settings.rounds
        self.loads.append(os.getloadavg())
        try:
            figures = target.measure(seconds)
            retries = 0
            while (
                figures["other_cpu_cores"] > QUIET_THRESHOLD
                and retries < MAX_RETRIES
                and time.monotonic() < deadline
            ):
                retries += 1
                wait_for_quiet(servers, deadline - time.monotonic(), QUIET_THRESHOLD)
                again = target.measure(seconds)
                if again["other_cpu_cores"] < figures["other_cpu_cores"]:
                    figures = again
        except (LoadError, subprocess.TimeoutExpired) as exc:
            self.failures.append(f"{target.key}: {exc}")
            return None
        figures["retries"] = retries
        return figures

    def _judge(self, what: str, figures: dict[str, Any]) -> None:
        if figures["client"] == "wrk":
            self._check_errors(what, figures)
            return
        if figures["requests"] == 0:
            self.failures.append(f"{what}: no request answered")
        if figures["errors"]:
            self.failures.append(f"{what}: gRPC errors under load: {figures['errors']}")
        if figures["mismatched"]:
            self.failures.append(f"{what}: {figures['mismatched']} answers differ under load")

    @staticmethod
    def _log(case: str, target: str, figures: dict[str, Any]) -> None:
        latency = figures["latency_ms"]
        log(
            f"grpc {case:<14} {target:<16} {figures['requests_per_s']:>9.1f} req/s "
            f"{figures['rows_per_s']:>10.0f} rows/s p50 {latency['p50']:.2f} ms "
            f"p99 {latency['p99']:.2f} ms server {figures['server_cpu_cores']} cores "
            f"client {figures['client_cpu_cores']} others {figures['other_cpu_cores']} "
            f"(rounds {figures['rounds_requests_per_s']})"
        )

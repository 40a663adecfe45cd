"""Start every server, run every case on each in turn, verify, and collect the figures."""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_image.bundle import load_bundle

from . import verify
from .bodies import BodyFactory
from .cases import Case, full_cases, smoke_cases
from .load import LoadError, measure
from .procs import cpu_delta, cpu_seconds, memory, system_busy_seconds
from .servers import LinkEdgeContainer, MLServerProcess, ServerError
from .tools import git_state, image_architecture, log, machine_info, package_version

MAX_SOCKET_ERROR_SHARE = 0.001  # socket errors beyond 0.1% of requests fail the run
QUIET_THRESHOLD = 0.3  # cores of other work the bench waits to fall under before a case
MAX_RETRIES = 2  # measurements of a round disturbed by other work, at most, after the first


@dataclass(frozen=True)
class Settings:
    image: str
    bundle: Path
    mode: str = "full"  # or "smoke"
    seconds: float = 12.0  # per case and server, split over the rounds
    rounds: int = 3
    warmup_seconds: float = 2.0
    quiet_wait: float = 0.0  # at most this long before each case for other work to calm
    cold_starts: int = 5
    mlserver_venv: Path | None = None  # None: LinkEdge only
    workdir: Path | None = None
    cases: tuple[str, ...] = ()  # keys of the standard cases to run; empty: all of them
    capture_rate: float = 0.01  # --case capture: LINKEDGE_CAPTURE_RATE of the capturing one
    capture_cases: tuple[str, ...] = ()  # --case capture: its cases (empty: all of the mode)
    capture_control: bool = False  # --case capture: the second server without capture too
    # --case slow-clients (bench/resilience.py)
    slow_seconds: float = 40.0  # each phase: alone, then beside the slow clients
    slow_connections: int = 64
    # --case soak (bench/resilience.py)
    soak_requests: int = 5_000_000
    soak_connections: int = 8
    soak_slow_clients: int = 8  # trickling beside the soak, replaced as the deadline ends them
    segment_seconds: float = 5.0  # one wrk run between two memory samples
    # --case mqtt (bench/mqtt.py)
    mqtt_seconds: float = 12.0  # per MQTT case, paced
    mqtt_rates: tuple[float, ...] = (5000.0, 6000.0, 7000.0, 8000.0)  # single records; 1st: target
    mqtt_batch_rows: int = 100
    mqtt_batch_rate: float = 400.0  # batch messages per second
    mqtt_periodic_changes: int = 1000  # the "periodic" broker saves every N changes
    mqtt_durable_messages: int = 2000  # per case on the durable broker (~200 messages/s)
    # --case grpc (bench/grpc_case.py)
    grpc_rows: tuple[int, ...] = (1, 100)  # rows per ModelInfer request
    grpc_concurrency: tuple[int, ...] = (1, 4, 16)  # requests in flight
    grpc_channels: int = 8  # channels (HTTP/2 connections) at most: min(in flight, this)


def image_size_mb(image: str) -> float:
    raw = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not raw:
        raise ServerError(f"no such image: {image} (build it first)")
    return round(int(raw) / 1e6, 1)


def cold_starts(image: str, runs: int) -> list[float]:
    """Seconds from ``docker run`` to ready, each in a fresh container."""
    seconds = []
    for _ in range(runs):
        container = LinkEdgeContainer(image)
        try:
            seconds.append(round(container.start(), 3))
        finally:
            container.stop()
    return seconds


def background_cpu(servers: list[Any], seconds: float = 1.0) -> float:
    """Cores the rest of the machine used over ``seconds`` (the servers are idle then)."""
    pids = [pid for server in servers for pid in server.pids()]
    busy, ours = system_busy_seconds(), cpu_seconds(pids)
    time.sleep(seconds)
    used = system_busy_seconds() - busy - cpu_delta(ours, cpu_seconds(pids))
    return max(0.0, used) / seconds


def wait_for_quiet(servers: list[Any], limit: float, threshold: float) -> dict[str, float]:
    """Wait (at most ``limit`` s) until other work on the machine uses under ``threshold``
    cores for two seconds in a row: other people's jobs on a shared machine come in bursts."""
    started = time.monotonic()
    calm = 0
    background = background_cpu(servers)
    while time.monotonic() - started < limit:
        calm = calm + 1 if background < threshold else 0
        if calm >= 2:
            break
        background = background_cpu(servers)
    return {
        "waited_s": round(time.monotonic() - started, 1),
        "background_cores": round(background, 2),
    }


def idle_cpu(servers: list[Any], seconds: float = 2.0) -> dict[str, float]:
    """CPU cores each server burns doing nothing (all of them run during every case)."""
    before = {s.key: cpu_seconds(s.pids()) for s in servers}
    time.sleep(seconds)
    return {
        s.key: round(cpu_delta(before[s.key], cpu_seconds(s.pids())) / seconds, 4) for s in servers
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Bench:
    def __init__(self, settings: Settings, wrk: str) -> None:
        self.settings = settings
        self.wrk = wrk
        self.failures: list[str] = []
        self.checks = 0
        self.loads: list[tuple[float, float, float]] = []
        self.quiet: dict[str, float] | None = None

    def available_cases(self, factory: BodyFactory) -> list[Case]:
        """The cases this bench can run (settings.cases picks among them)."""
        return smoke_cases(factory) if self.settings.mode == "smoke" else full_cases(factory)

    def start_checked(self, servers: list[Any], factory: BodyFactory) -> None:
        """Start each server and check its smoke vectors before any load."""
        for server in servers:
            log(f"starting {server.label}")
            server.start()
            self._check(
                f"{server.key} smoke vectors before load",
                lambda s=server: verify.check_smoke(factory, s.kind, s.base_url),
            )

    def finish(self, report: dict[str, Any], load_start: tuple[float, ...]) -> dict[str, Any]:
        """The verification verdict, the load average at the start and end, the finish time."""
        report["load_average"] = {
            **report.get("load_average", {}),
            "start": [round(v, 2) for v in load_start],
            "end": [round(v, 2) for v in os.getloadavg()],
        }
        report["verification"] = {"checks": self.checks, "failures": self.failures}
        report["ok"] = not self.failures
        report["finished"] = now()
        return report

    def _check(self, what: str, action) -> bool:
        self.checks += 1
        try:
            action()
            return True
        except (verify.WrongAnswer, OSError) as exc:
            self.failures.append(f"{what}: {exc}")
            log(f"FAILED {what}: {exc}")
            return False

    def _servers(self, workdir: Path) -> list[Any]:
        servers: list[Any] = [LinkEdgeContainer(self.settings.image)]
        venv = self.settings.mlserver_venv
        if venv is not None:
            model_file = self.settings.bundle / "model.json"
            servers += [
                MLServerProcess(venv, model_file, workdir / "mlserver", "mlserver", "MLServer"),
                MLServerProcess(
                    venv,
                    model_file,
                    workdir / "mlserver-1t",
                    "mlserver-1t",
                    "MLServer, 1 XGBoost thread/worker",
                    threads_per_worker=1,
                ),
            ]
        return servers

    def run_case(self, case: Case, servers: list[Any], bodies_dir: Path) -> dict[str, Any]:
        """Each server in turn, ``rounds`` times, so that a burst of other work on the
        machine hits every server alike; each server's figures are its median round's. The
        order turns round every round (A B, B A, ...): whatever the server measured first
        leaves behind (its last connections, the wrk that just ended) falls on each alike."""
        ready = []
        settings = self.settings
        deadline = time.monotonic() + settings.quiet_wait  # waiting budget of this case
        self.quiet = None
        if settings.quiet_wait > 0:
            quiet = wait_for_quiet(servers, settings.quiet_wait, QUIET_THRESHOLD)
            log(f"{case.key}: waited {quiet['waited_s']} s, others {quiet['background_cores']}")
            self.quiet = quiet
        for server in servers:
            body = case.bodies.get(server.kind)
            if body is None:
                continue
            body_file = bodies_dir / f"{body.key}.body"
            if not body_file.exists():
                body.write(bodies_dir)
            if self._check(
                f"{server.key} {case.key} answer before load",
                lambda s=server, b=body: verify.check(s.kind, s.base_url, b),
            ):
                ready.append((server, body, body_file))
        rounds: dict[str, list[dict[str, Any]]] = {server.key: [] for server, _, _ in ready}
        for index in range(-1 if settings.warmup_seconds > 0 else 0, settings.rounds):
            for server, body, body_file in ready if index % 2 == 0 else ready[::-1]:
                if index < 0:
                    seconds = settings.warmup_seconds
                else:
                    seconds = settings.seconds / settings.rounds
                    self.loads.append(os.getloadavg())
                try:
                    figures = measure(self.wrk, server, body, body_file, case.connections, seconds)
                    # A round during which other work took the CPU is measured again once
                    # the machine is calm, while this case's waiting budget lasts.
                    retries = 0
                    while (
                        index >= 0
                        and figures["other_cpu_cores"] > QUIET_THRESHOLD
                        and retries < MAX_RETRIES
                        and time.monotonic() < deadline
                    ):
                        retries += 1
                        wait_for_quiet(servers, deadline - time.monotonic(), QUIET_THRESHOLD)
                        again = measure(
                            self.wrk, server, body, body_file, case.connections, seconds
                        )
                        if again["other_cpu_cores"] < figures["other_cpu_cores"]:
                            figures = again
                except LoadError as exc:
                    self.failures.append(f"{server.key} {case.key}: {exc}")
                    continue
                if index >= 0:
                    figures.pop("wrk_text", None)
                    figures["body"] = body.key
                    figures["retries"] = retries
                    figures["round"] = index
                    self._check_errors(f"{server.key} {case.key}", figures)
                    rounds[server.key].append(figures)
        results: dict[str, Any] = {}
        for server, _, _ in ready:
            done = sorted(rounds[server.key], key=lambda figures: figures["requests_per_s"])
            if not done:
                continue
            figures = dict(done[(len(done) - 1) // 2])  # the median (lower, for even counts)
            figures["rounds_requests_per_s"] = [f["requests_per_s"] for f in rounds[server.key]]
            figures["rounds_other_cpu_cores"] = [f["other_cpu_cores"] for f in rounds[server.key]]
            figures["rounds_index"] = [f["round"] for f in rounds[server.key]]
            figures["rounds_server_cpu_us_per_request"] = [
                f["server_cpu_us_per_request"] for f in rounds[server.key]
            ]
            log(
                f"{case.key:<20} {server.key:<12} c={case.connections:<3} "
                f"{figures['requests_per_s']:>9.1f} req/s {figures['rows_per_s']:>10.0f} rows/s "
                f"p50 {figures['latency_ms']['p50']:.2f} ms "
                f"p99 {figures['latency_ms']['p99']:.2f} ms "
                f"cpu {figures['server_cpu_us_per_request']} µs/req, "
                f"others {figures['other_cpu_cores']} cores, load {figures['load_1m_before']} "
                f"(rounds {figures['rounds_requests_per_s']})"
            )
            results[server.key] = figures
        return results

    def _check_errors(self, what: str, figures: dict[str, Any]) -> None:
        socket_errors = sum(v for k, v in figures["errors"].items() if k != "status")
        if figures["non_2xx"]:
            self.failures.append(f"{what}: {figures['non_2xx']} non-2xx answers under load")
        if socket_errors > MAX_SOCKET_ERROR_SHARE * max(1, figures["requests"]):
            self.failures.append(f"{what}: {socket_errors} socket errors under load")

    def header(self, model_version: str) -> dict[str, Any]:
        """What every results document starts with: when, what, on which machine."""
        settings = self.settings
        return {
            "schema": 1,
            "mode": settings.mode,
            "started": now(),
            "git": git_state(),
            "machine": machine_info(),
            "settings": {
                "seconds_per_case": settings.seconds,
                "rounds": settings.rounds,
                "warmup_seconds": settings.warmup_seconds,
                "quiet_wait_s": settings.quiet_wait,
                "quiet_threshold_cores": QUIET_THRESHOLD,
                "wrk_threads": 1,
                "image": settings.image,
                **{f"image_{k}": v for k, v in image_architecture(settings.image).items()},
                "bundle": str(settings.bundle),
                "model_version": model_version,
            },
        }

    def run(self) -> dict[str, Any]:
        settings = self.settings
        load_start = os.getloadavg()
        bundle = load_bundle(settings.bundle)
        factory = BodyFactory(bundle)
        cases = self.available_cases(factory)
        if settings.cases:
            known = {case.key for case in cases}
            unknown = [key for key in settings.cases if key not in known]
            if unknown:
                raise ValueError(
                    f"no such {settings.mode} case: {', '.join(unknown)} "
                    f"(cases: {', '.join(sorted(known))}, slow-clients, soak, mqtt, grpc)"
                )
            cases = [case for case in cases if case.key in settings.cases]
        report = self.header(bundle.version)
        with tempfile.TemporaryDirectory(prefix="linkedge-bench-") as tmp:
            workdir = settings.workdir or Path(tmp)
            bodies_dir = workdir / "bodies"
            bodies_dir.mkdir(parents=True, exist_ok=True)
            log(f"cold start: {settings.cold_starts} fresh containers of {settings.image}")
            starts = cold_starts(settings.image, settings.cold_starts)
            servers = self._servers(workdir)
            try:
                self.start_checked(servers, factory)
                idle = idle_cpu(servers)
                report["cases"] = []
                for case in cases:
                    results = self.run_case(case, servers, bodies_dir)
                    report["cases"].append(
                        {
                            "key": case.key,
                            "title": case.title,
                            "rows": case.rows,
                            "connections": case.connections,
                            "compare_with": case.compare_with,
                            "quiet_before": self.quiet,
                            "results": results,
                        }
                    )
                report["servers"] = {}
                for server in servers:
                    self._check(
                        f"{server.key} smoke vectors after load",
                        lambda s=server: verify.check_smoke(factory, s.kind, s.base_url),
                    )
                    entry: dict[str, Any] = {
                        "label": server.label,
                        "cold_start_s": round(server.cold_start_seconds, 3),
                        "idle_cpu_cores": idle[server.key],
                        "memory_after_load": memory(server.pids()).as_dict(),
                    }
                    if server.kind == "linkedge":
                        entry["image"] = settings.image
                        entry["image_size_mb"] = image_size_mb(settings.image)
                        entry["cold_start_runs_s"] = starts
                        entry["cold_start_median_s"] = round(
                            statistics.median([*starts, server.cold_start_seconds]), 3
                        )
                    else:
                        entry["mlserver_version"] = package_version(server.venv, "mlserver")
                        entry["threads_per_worker"] = server.threads_per_worker or "default"
                    report["servers"][server.key] = entry
            finally:
                for server in servers:
                    server.stop()
        loads_1m = [load[0] for load in self.loads] or [load_start[0]]
        report["load_average"] = {
            "min_1m_during": round(min(loads_1m), 2),
            "max_1m_during": round(max(loads_1m), 2),
            "mean_1m_during": round(statistics.fmean(loads_1m), 2),
        }
        report["ratios"] = ratios(report["cases"])
        return self.finish(report, load_start)


def ratios(cases: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """LinkEdge's requests/s over each MLServer variant's, case by case (rows/s for the
    binary cases, set against MLServer's JSON case with the same rows and connections)."""
    by_key = {case["key"]: case for case in cases}
    out: dict[str, dict[str, float]] = {}
    for case in cases:
        ours = case["results"].get("linkedge")
        if ours is None:
            continue
        theirs_case = by_key.get(case["compare_with"]) if case["compare_with"] else case
        if theirs_case is None:
            continue
        entry = {}
        for kind, theirs in theirs_case["results"].items():
            if kind != "linkedge" and theirs["rows_per_s"]:
                entry[kind] = round(ours["rows_per_s"] / theirs["rows_per_s"], 2)
        if entry:
            out[case["key"]] = entry
    return out

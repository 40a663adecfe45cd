"""Two cases beside the throughput ones: ``--case slow-clients`` and ``--case soak``.

slow-clients: for each server, wrk sends one record per request on 4 connections, first
alone, then beside 64 slow connections (half trickle a head that never ends, half a body:
bench/slow.py), each phase ``--slow-seconds`` long (default 40: longer than LinkEdge's
request deadline, so the slow connections are also closed and replaced during the load).
Normal requests must keep their latency: p50/p99 of both phases, timeouts and errors, what
happened to the slow connections, and LinkEdge's closures by reason from /metrics.

soak: LinkEdge alone, a mix of single records, 100-row batches and bad inputs (four kinds,
each answered 4xx) for ``--soak-requests`` requests in wrk runs of ``--segment-seconds``,
with a few slow clients trickling beside it. After each run: PSS of the container's
processes, its worker PIDs (a new one is a restart), the answers by status class. The
memory growth per million requests after the warm-up is the slope of PSS over requests
(least squares); it must stay within 1 MiB (judged from 500,000 requests after the warm-up
on: the allocator grows in 256 KiB steps), with no restart and no 5xx. The slope is taken
of the anonymous and shmem part of PSS (the heap, the metric files: what a leak grows); the
file-backed part (libraries, the model) comes and goes as the kernel reclaims cold pages
(several MiB at once, in the master as in the workers), and its slope is reported beside.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from inference_image.bundle import load_bundle

from . import verify
from .bodies import Body, BodyFactory
from .load import LoadError, measure, run_script
from .procs import cpu_delta, cpu_seconds, memory
from .run import QUIET_THRESHOLD, Bench, wait_for_quiet
from .servers import LinkEdgeContainer
from .slow import SlowClients
from .tools import log

NORMAL_CONNECTIONS = 4
TRICKLE_SECONDS = 1.0
P99_TARGET_MS = 20.0  # issue 16: normal requests beside 64 slow clients, 4 connections
MIN_THROUGHPUT_RATIO = 0.25  # beside the slow clients / alone: below, the server starved
MIX_SCRIPT = Path(__file__).with_name("mix.lua")
GROWTH_LIMIT_MIB_PER_MILLION = 1.0
# The allocator grows in steps (a pymalloc arena is 256 KiB): over fewer requests after the
# warm-up than this, one step alone would exceed the limit, so the growth is only reported.
MIN_JUDGED_REQUESTS = 500_000
EXPECTED_SHARE_TOLERANCE = 0.01  # 4xx share vs the share of bad inputs sent
CLOSED_METRIC = re.compile(r'^linkedge_connections_closed_total\{reason="([a-z_]+)"\} (\S+)$', re.M)


def closures(base_url: str) -> dict[str, float] | None:
    """LinkEdge's linkedge_connections_closed_total by reason (None: not exposed)."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    found = {reason: float(value) for reason, value in CLOSED_METRIC.findall(text)}
    return found or None


def _delta(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, int]:
    if before is None or after is None:
        return {}
    return {reason: int(after[reason] - before.get(reason, 0)) for reason in sorted(after)}


class SlowClientBench(Bench):
    def run(self) -> dict[str, Any]:
        settings = self.settings
        bundle = load_bundle(settings.bundle)
        factory = BodyFactory(bundle)
        bodies = {"linkedge": factory.predict(1), "mlserver": factory.v2_json(1)}
        report = self.header(bundle.version)
        report["case"] = "slow-clients"
        report["settings"].update(
            {
                "phase_seconds": settings.slow_seconds,
                "normal_connections": NORMAL_CONNECTIONS,
                "slow_connections": settings.slow_connections,
                "trickle_seconds": TRICKLE_SECONDS,
                "p99_target_ms": P99_TARGET_MS,
            }
        )
        load_start = os.getloadavg()
        results: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="linkedge-bench-") as tmp:
            workdir = settings.workdir or Path(tmp)
            servers = self._servers(workdir)
            try:
                self.start_checked(servers, factory)
                for server in servers:
                    body = bodies[server.kind]
                    body_file = body.write(workdir)
                    results[server.key] = self.one_server(servers, server, body, body_file)
                for server in servers:
                    self._check(
                        f"{server.key} smoke vectors after load",
                        lambda s=server: verify.check_smoke(factory, s.kind, s.base_url),
                    )
            finally:
                for server in servers:
                    server.stop()
        report["results"] = results
        return self.finish(report, load_start)

    def one_server(self, servers: list[Any], server: Any, body: Body, body_file: Path) -> dict:
        settings = self.settings
        seconds = settings.slow_seconds
        if settings.quiet_wait > 0:
            quiet = wait_for_quiet(servers, settings.quiet_wait, QUIET_THRESHOLD)
            log(f"slow-clients {server.key}: waited {quiet['waited_s']} s for a calm machine")
        self._check(
            f"{server.key} slow-clients answer before load",
            lambda: verify.check(server.kind, server.base_url, body),
        )
        entry: dict[str, Any] = {"label": server.label, "body": body.key}
        try:
            if settings.warmup_seconds > 0:
                measure(
                    self.wrk, server, body, body_file, NORMAL_CONNECTIONS, settings.warmup_seconds
                )
            alone = measure(self.wrk, server, body, body_file, NORMAL_CONNECTIONS, seconds)
            before = closures(server.base_url) if server.kind == "linkedge" else None
            slow = SlowClients(
                "127.0.0.1",
                server.port,
                body.path,
                body.content_type,
                count=settings.slow_connections,
                trickle_seconds=TRICKLE_SECONDS,
            )
            slow.start_and_wait()
            time.sleep(2 * TRICKLE_SECONDS)  # every slow connection is past its first bytes
            try:
                beside = measure(self.wrk, server, body, body_file, NORMAL_CONNECTIONS, seconds)
            finally:
                slow_figures = slow.stop()
            after = closures(server.base_url) if server.kind == "linkedge" else None
        except LoadError as exc:
            self.failures.append(f"{server.key} slow-clients: {exc}")
            return entry
        for phase, figures in (("alone", alone), ("beside slow clients", beside)):
            figures.pop("wrk_text", None)
            self._check_errors(f"{server.key} slow-clients {phase}", figures)
        self._check(
            f"{server.key} slow-clients answer after load",
            lambda: verify.check(server.kind, server.base_url, body),
        )
        p99 = beside["latency_ms"]["p99"]
        # wrk counts no timeout for a request that never got an answer before it stopped:
        # a starved server shows as (almost) no requests at all.
        ratio = beside["requests_per_s"] / alone["requests_per_s"] if alone["requests"] else 0.0
        if ratio < MIN_THROUGHPUT_RATIO:
            self.failures.append(
                f"{server.key} slow-clients: {beside['requests']} normal requests answered "
                f"beside the slow clients ({beside['requests_per_s']:.0f} req/s, "
                f"{alone['requests_per_s']:.0f} alone)"
            )
        entry.update(
            {
                "alone": alone,
                "beside_slow_clients": beside,
                "slow_clients": slow_figures,
                "closures": _delta(before, after),
                "throughput_ratio": round(ratio, 3),
                "p99_within_target": bool(beside["requests"]) and p99 <= P99_TARGET_MS,
            }
        )
        log(
            f"slow-clients {server.key:<12} alone p50 {alone['latency_ms']['p50']:.2f} ms "
            f"p99 {alone['latency_ms']['p99']:.2f} ms {alone['requests_per_s']:.0f} req/s; "
            f"beside {settings.slow_connections} slow: p50 {beside['latency_ms']['p50']:.2f} ms "
            f"p99 {p99:.2f} ms {beside['requests_per_s']:.0f} req/s, "
            f"timeouts {beside['errors']['timeout']}; slow ended {slow_figures['ended']}"
        )
        return entry


class SoakBench(Bench):
    def mix(self, factory: BodyFactory, workdir: Path) -> list[tuple[Body | None, dict]]:
        """(body, wrk arguments) of each kind of request in the mix; bad ones have no Body."""
        single, batch = factory.predict(1), factory.v2_json(100)
        record = single.data
        bad = [
            ("bad-json", b'{"aa_000": 1,', "application/json", "/predict", 400),
            ("bad-type", record, "text/plain", "/predict", 415),
            ("bad-record", b'{"aa_000": 1.5}', "application/json", "/predict", 400),
            ("bad-model", batch.data, "application/json", "/v2/models/nope/infer", 404),
        ]
        kinds: list[tuple[Body | None, dict]] = []
        for body, weight in ((single, 14), (batch, 2)):
            path = body.write(workdir)
            kinds.append(
                (
                    body,
                    {"file": path, "type": body.content_type, "path": body.path, "weight": weight},
                )
            )
        for key, data, content_type, target, status in bad:
            path = workdir / f"{key}.body"
            path.write_bytes(data)
            kinds.append(
                (
                    None,
                    {
                        "file": path,
                        "type": content_type,
                        "path": target,
                        "weight": 1,
                        "status": status,
                        "key": key,
                    },
                )
            )
        return kinds

    def run(self) -> dict[str, Any]:
        settings = self.settings
        bundle = load_bundle(settings.bundle)
        factory = BodyFactory(bundle)
        report = self.header(bundle.version)
        report["case"] = "soak"
        target = settings.soak_requests
        warmup = min(500_000, max(50_000, target // 10))
        report["settings"].update(
            {
                "requests": target,
                "warmup_requests": warmup,
                "connections": settings.soak_connections,
                "segment_seconds": settings.segment_seconds,
                "slow_clients": settings.soak_slow_clients,
                "growth_limit_mib_per_million": GROWTH_LIMIT_MIB_PER_MILLION,
                "min_judged_requests": MIN_JUDGED_REQUESTS,
            }
        )
        load_start = os.getloadavg()
        server = LinkEdgeContainer(settings.image)
        samples: list[dict[str, Any]] = []
        totals = {"requests": 0, "2xx": 0, "4xx": 0, "5xx": 0, "other": 0, "socket_errors": 0}
        segments: list[dict[str, Any]] = []
        first_workers: set[int] = set()
        seen_workers: set[int] = set()
        wall = cpu = 0.0
        with tempfile.TemporaryDirectory(prefix="linkedge-soak-") as tmp:
            workdir = settings.workdir or Path(tmp)
            kinds = self.mix(factory, workdir)
            args: list[str] = []
            for _, kind in kinds:
                args += [str(kind["file"]), kind["type"], kind["path"], str(kind["weight"]), "-"]
            weights = sum(kind["weight"] for _, kind in kinds)
            bad_share = sum(kind["weight"] for body, kind in kinds if body is None) / weights
            report["settings"]["mix"] = [
                {k: v for k, v in kind.items() if k != "file"}
                | {"key": body.key if body else kind["key"]}
                for body, kind in kinds
            ]
            log(f"soak: starting {settings.image}")
            server.start()
            slow = None
            try:
                self._check_mix(server, factory, kinds)
                root = server.root_pid
                first_workers = self._wait_workers(server)
                seen_workers = set(first_workers)
                started = time.monotonic()
                cpu_start = cpu_seconds(server.pids())
                samples.append(self._sample(server, 0, 0.0, first_workers))
                if settings.soak_slow_clients:
                    slow = SlowClients(
                        "127.0.0.1",
                        server.port,
                        "/predict",
                        count=settings.soak_slow_clients,
                        trickle_seconds=TRICKLE_SECONDS,
                    )
                    slow.start_and_wait()
                next_log = target / 10
                while totals["requests"] < target:
                    try:
                        figures = run_script(
                            self.wrk,
                            server.base_url,
                            MIX_SCRIPT,
                            args,
                            settings.soak_connections,
                            settings.segment_seconds,
                        )
                    except LoadError as exc:
                        self.failures.append(f"soak: {exc}")
                        break
                    answers = figures["answers"]
                    errors = figures["errors"]
                    totals["requests"] += figures["requests"]
                    for status_class in ("2xx", "4xx", "5xx", "other"):
                        totals[status_class] += answers[status_class]
                    socket_errors = sum(v for k, v in errors.items() if k != "status")
                    totals["socket_errors"] += socket_errors
                    workers = set(server.pids()) - {root}
                    seen_workers |= workers
                    sample = self._sample(
                        server, totals["requests"], time.monotonic() - started, workers
                    )
                    samples.append(sample)
                    duration = figures["duration_us"] / 1e6
                    segments.append(
                        {
                            "requests": figures["requests"],
                            "requests_per_s": round(figures["requests"] / duration, 1),
                            "p99_ms": round(figures["latency_us"]["p99"] / 1000, 3),
                            "answers": answers,
                            "socket_errors": socket_errors,
                        }
                    )
                    if root not in server.pids():
                        self.failures.append("soak: the gunicorn master is gone")
                        break
                    if totals["requests"] >= next_log:
                        next_log += target / 10
                        log(
                            f"soak: {totals['requests']:,} requests, PSS {sample['pss_mib']} MiB, "
                            f"{segments[-1]['requests_per_s']:.0f} req/s, 5xx {totals['5xx']}, "
                            f"restarts {len(seen_workers - first_workers)}"
                        )
                wall = time.monotonic() - started
                cpu = cpu_delta(cpu_start, cpu_seconds(server.pids()))
                if slow is not None:
                    report["slow_clients"] = slow.stop()
                    slow = None
                report["closures"] = closures(server.base_url)
                self._check(
                    "linkedge smoke vectors after the soak",
                    lambda: verify.check_smoke(factory, server.kind, server.base_url),
                )
                report["memory_after"] = memory(server.pids()).as_dict()
            finally:
                if slow is not None:
                    slow.stop()
                server.stop()
        restarts = len(seen_workers - first_workers)
        growth = growth_per_million(samples, warmup)
        total_growth = growth_per_million(samples, warmup, "pss_mib")
        totals["wall_s"] = round(wall, 1)
        totals["requests_per_s"] = round(totals["requests"] / wall, 1) if wall else 0
        totals["server_cpu_us_per_request"] = (
            round(cpu / totals["requests"] * 1e6, 1) if totals["requests"] else None
        )
        report.update(
            {
                "samples": samples,
                "segments": segments,
                "totals": totals,
                "restarts": restarts,
                "growth_mib_per_million": growth,  # anonymous + shmem PSS: the criterion
                "total_pss_growth_mib_per_million": total_growth,
            }
        )
        if totals["5xx"] or totals["other"]:
            self.failures.append(f"soak: {totals['5xx']} 5xx and {totals['other']} other answers")
        if totals["socket_errors"] > 0.001 * max(1, totals["requests"]):
            self.failures.append(f"soak: {totals['socket_errors']} socket errors")
        if restarts:
            self.failures.append(f"soak: {restarts} worker restarts")
        answered = totals["2xx"] + totals["4xx"]
        if answered and abs(totals["4xx"] / answered - bad_share) > EXPECTED_SHARE_TOLERANCE:
            self.failures.append(
                f"soak: {totals['4xx'] / answered:.3f} of the answers were 4xx, "
                f"{bad_share:.3f} of the requests were bad"
            )
        judged = samples[-1]["requests"] - warmup if samples else 0
        report["growth_judged"] = judged >= MIN_JUDGED_REQUESTS
        if growth is None:
            self.failures.append("soak: too few samples after the warm-up to measure growth")
        elif not report["growth_judged"]:
            log(
                f"soak: growth {growth:+.3f} MiB per million requests is not judged: "
                f"{judged:,} requests after the warm-up, {MIN_JUDGED_REQUESTS:,} needed"
            )
        elif growth > GROWTH_LIMIT_MIB_PER_MILLION:
            self.failures.append(
                f"soak: memory grew {growth:.2f} MiB per million requests after the warm-up "
                f"(limit {GROWTH_LIMIT_MIB_PER_MILLION})"
            )
        return self.finish(report, load_start)

    def _check_mix(self, server: Any, factory: BodyFactory, kinds: list) -> None:
        """Every request of the mix gets its answer before the load: right predictions for
        the good ones, the expected 4xx for the bad ones."""
        self._check(
            "linkedge smoke vectors before the soak",
            lambda: verify.check_smoke(factory, server.kind, server.base_url),
        )
        for body, kind in kinds:
            if body is not None:
                self._check(
                    f"soak {body.key} answer before load",
                    lambda b=body: verify.check(server.kind, server.base_url, b),
                )
                continue
            request = urllib.request.Request(
                server.base_url + kind["path"],
                data=kind["file"].read_bytes(),
                headers={"Content-Type": kind["type"]},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            if status != kind["status"]:
                self.failures.append(
                    f"soak {kind['key']}: HTTP {status}, expected {kind['status']}"
                )

    def _wait_workers(self, server: Any, timeout: float = 60.0) -> set[int]:
        """The worker PIDs once all have booted (they start after the first is ready)."""
        deadline = time.monotonic() + timeout
        while True:
            workers = set(server.pids()) - {server.root_pid}
            if len(workers) >= server.workers or time.monotonic() > deadline:
                return workers
            time.sleep(0.1)

    @staticmethod
    def _sample(server: Any, requests: int, elapsed: float, workers: set[int]) -> dict[str, Any]:
        used = memory(server.pids())
        return {
            "requests": requests,
            "elapsed_s": round(elapsed, 1),
            "pss_mib": round(used.pss_kib / 1024, 3),
            "pss_anon_shmem_mib": round((used.pss_anon_kib + used.pss_shmem_kib) / 1024, 3),
            "pss_file_mib": round(used.pss_file_kib / 1024, 3),
            "rss_sum_mib": round(used.rss_kib / 1024, 3),
            "workers": sorted(workers),
            "processes": {
                str(process["pid"]): round(int(process["pss_kib"]) / 1024, 3)
                for process in used.processes
            },
        }


def growth_per_million(
    samples: list[dict[str, Any]], warmup: int, key: str = "pss_anon_shmem_mib"
) -> float | None:
    """Least-squares slope of ``key`` (MiB) over requests (millions), after the warm-up."""
    points = [(s["requests"] / 1e6, s[key]) for s in samples if s["requests"] >= warmup]
    if len(points) < 3 or points[-1][0] - points[0][0] <= 0:
        return None
    xs, ys = zip(*points, strict=True)
    slope = statistics.linear_regression(xs, ys).slope
    return round(slope, 3)

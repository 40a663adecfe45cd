"""The load generator of ``--case grpc``: ModelInfer over several gRPC channels, closed loop.

Run as its own process (``python -m bench.grpc_load``) so that the client has a Python
interpreter and a GIL of its own. ``--concurrency`` threads each keep one request in flight
with grpcio's synchronous generic call (``channel.unary_unary(METHOD)``, no stub and no
serializers): the request bytes are serialized once, before the load, and each answer is
kept as bytes. Thread ``i`` uses channel ``i % channels``; each channel has a subchannel pool
of its own, hence a TCP/HTTP2 connection of its own (grpcio would otherwise share one
connection between channels with the same target and options).

Every answer is verified under load: it must end with ``--tail``, the serialized
``raw_output_contents`` of an answer the bench checked against the model before the load
(the outputs are the last field of a ModelInferResponse; what comes before may differ, e.g.
MLServer's per-request id).

Requests that start in the window after ``--warmup`` seconds and before its end are counted;
CPU of the client (this process), of the server's processes (``--pids``) and of the whole
machine is read at both ends of the window. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from .procs import cpu_delta, cpu_seconds, system_busy_seconds

METHOD = "/inference.GRPCInferenceService/ModelInfer"
TIMEOUT_S = 10.0
READY_TIMEOUT_S = 10.0
MAX_MESSAGE = 64 << 20
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


@dataclass
class Window:
    start_ns: int
    end_ns: int


@dataclass
class Tally:
    """What one thread saw in the window."""

    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    mismatched: int = 0


def open_channel(target: str) -> grpc.Channel:
    channel = grpc.insecure_channel(
        target,
        options=[
            ("grpc.use_local_subchannel_pool", 1),  # a connection of its own
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )
    grpc.channel_ready_future(channel).result(timeout=READY_TIMEOUT_S)
    return channel


def drive(call: Any, request: bytes, tail: bytes, window: Window, tally: Tally) -> None:
    """One in-flight request at a time until the window ends."""
    clock = time.perf_counter_ns
    while True:
        started = clock()
        if started >= window.end_ns:
            return
        error = None
        matched = True
        try:
            answer = call(request, timeout=TIMEOUT_S)
            matched = answer.endswith(tail)
        except grpc.RpcError as exc:
            error = exc.code().name if exc.code() else "UNKNOWN"
        ended = clock()
        if started < window.start_ns:
            continue  # warm-up
        tally.latencies_ns.append(ended - started)
        if error is not None:
            tally.errors[error] += 1
        elif not matched:
            tally.mismatched += 1


def percentile(ordered: list[int], share: float) -> int:
    """Nearest rank of a sorted list (0 when empty)."""
    if not ordered:
        return 0
    rank = max(1, round(share / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_ms(latencies_ns: list[int]) -> dict[str, float]:
    ordered = sorted(latencies_ns)
    figures = {"mean": sum(ordered) / len(ordered) if ordered else 0.0}
    figures.update({name: percentile(ordered, share) for name, share in PERCENTILES.items()})
    figures["max"] = ordered[-1] if ordered else 0
    return {name: round(value / 1e6, 3) for name, value in figures.items()}


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sleep_until(deadline_ns: int) -> None:
    left = deadline_ns - time.perf_counter_ns()
    if left > 0:
        time.sleep(left / 1e9)


def run(args: argparse.Namespace) -> dict[str, Any]:
    request = Path(args.request).read_bytes()
    tail = Path(args.tail).read_bytes()
    pids = [int(pid) for pid in args.pids.split(",") if pid]
    channels = [open_channel(args.target) for _ in range(args.channels)]
    calls = [channel.unary_unary(METHOD) for channel in channels]
    begin = time.perf_counter_ns()
    window = Window(begin + int(args.warmup * 1e9), begin + int((args.warmup + args.seconds) * 1e9))
    tallies = [Tally() for _ in range(args.concurrency)]
    threads = [
        threading.Thread(
            target=drive, args=(calls[index % len(calls)], request, tail, window, tallies[index])
        )
        for index in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    sleep_until(window.start_ns)
    client0, server0, busy0 = own_cpu(), cpu_seconds(pids), system_busy_seconds()
    sleep_until(window.end_ns)
    client1, server1, busy1 = own_cpu(), cpu_seconds(pids), system_busy_seconds()
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    return summary(args, tallies, window, (client1 - client0, server0, server1, busy1 - busy0))


def summary(
    args: argparse.Namespace,
    tallies: list[Tally],
    window: Window,
    cpu: tuple[float, dict[int, float], dict[int, float], float],
) -> dict[str, Any]:
    client_cpu, server_before, server_after, busy = cpu
    seconds = (window.end_ns - window.start_ns) / 1e9
    latencies = [value for tally in tallies for value in tally.latencies_ns]
    errors: Counter[str] = Counter()
    for tally in tallies:
        errors.update(tally.errors)
    requests = len(latencies)
    server_cpu = cpu_delta(server_before, server_after)
    by_process = sorted(
        (value - server_before.get(pid, 0.0) for pid, value in server_after.items()), reverse=True
    )
    return {
        "concurrency": args.concurrency,
        "channels": args.channels,
        "duration_s": round(seconds, 2),
        "requests": requests,
        "requests_per_s": round(requests / seconds, 1),
        "latency_ms": latency_ms(latencies),
        "errors": dict(errors),
        "mismatched": sum(tally.mismatched for tally in tallies),
        "server_cpu_cores": round(server_cpu / seconds, 3),
        "server_cpu_us_per_request": round(server_cpu / requests * 1e6, 1) if requests else None,
        # The busiest processes' cores: with SO_REUSEPORT, how the connections fell on workers.
        "server_cpu_cores_by_process": [round(value / seconds, 3) for value in by_process[:4]],
        "client_cpu_cores": round(client_cpu / seconds, 3),
        "other_cpu_cores": round(max(0.0, busy - server_cpu - client_cpu) / seconds, 3),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_load", description=__doc__)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--request", required=True, help="file: a serialized ModelInferRequest")
    parser.add_argument("--tail", required=True, help="file: how every answer must end")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--channels", type=int, default=1, help="channels (connections)")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=0.5, help="before the window")
    parser.add_argument("--pids", default="", help="the server's processes, comma-separated")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except grpc.FutureTimeoutError:
        print(
            f"grpc_load: {args.target} not reachable within {READY_TIMEOUT_S:g} s", file=sys.stderr
        )
        return 2
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

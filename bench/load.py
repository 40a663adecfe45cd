"""One load measurement: wrk against one server with one body, plus the server's CPU."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from .bodies import Body
from .procs import cpu_delta, cpu_seconds, system_busy_seconds

POST_SCRIPT = Path(__file__).with_name("post.lua")
WRK_TIMEOUT = "10s"


class Server(Protocol):
    kind: str
    label: str
    base_url: str

    def pids(self) -> list[int]: ...


class LoadError(RuntimeError):
    """wrk failed or printed no figures."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    wrk: str, url: str, body: Body, body_file: Path, connections: int, seconds: float
) -> dict[str, Any]:
    return run_script(
        wrk,
        url,
        POST_SCRIPT,
        [str(body_file), body.content_type, *body.header_args()],
        connections,
        seconds,
    )


def run_script(
    wrk: str, url: str, script: Path, args: list[str], connections: int, seconds: float
) -> dict[str, Any]:
    """wrk with a Lua script that prints its figures as one ``BENCH_JSON {...}`` line."""
    command = [
        wrk,
        "--threads=1",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={WRK_TIMEOUT}",
        "--latency",
        f"--script={script}",
        url,
        "--",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            figures = json.loads(line.split(" ", 1)[1])
            figures["wrk_text"] = result.stdout
            return figures
    raise LoadError(f"wrk printed no figures (exit {result.returncode}):\n{result.stderr[-1000:]}")


def measure(
    wrk: str, server: Server, body: Body, body_file: Path, connections: int, seconds: float
) -> dict[str, Any]:
    """Drive ``server`` for ``seconds``; requests/s, rows/s, latency and CPU figures."""
    pids = server.pids()
    load_before = os.getloadavg()
    cpu_before = cpu_seconds(pids)
    busy_before = system_busy_seconds()
    wrk_before = _children_cpu()
    started = time.monotonic()
    figures = run_wrk(wrk, server.base_url + body.path, body, body_file, connections, seconds)
    wall = time.monotonic() - started
    wrk_cpu = _children_cpu() - wrk_before
    busy = system_busy_seconds() - busy_before
    server_cpu = cpu_delta(cpu_before, cpu_seconds(server.pids()))
    requests = figures["requests"]
    duration = figures["duration_us"] / 1e6
    latency = figures["latency_us"]
    errors = figures["errors"]
    rps = requests / duration if duration else 0.0
    return {
        "connections": connections,
        "duration_s": round(duration, 2),
        "requests": requests,
        "requests_per_s": round(rps, 1),
        "rows_per_s": round(rps * body.rows, 1),
        "latency_ms": {
            name: round(latency[name] / 1000, 3)
            for name in ("mean", "p50", "p90", "p95", "p99", "p999", "max")
        },
        "errors": errors,
        "non_2xx": errors["status"],
        "server_cpu_cores": round(server_cpu / wall, 3),
        "server_cpu_us_per_request": round(server_cpu / requests * 1e6, 1) if requests else None,
        "wrk_cpu_cores": round(wrk_cpu / wall, 3),
        # Everything else the machine ran meanwhile (other people's containers, the kernel's
        # work not charged to a process): the noise this figure was measured under.
        "other_cpu_cores": round(max(0.0, busy - server_cpu - wrk_cpu) / wall, 3),
        "load_1m_before": round(load_before[0], 2),
    }

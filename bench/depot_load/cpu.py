"""CPU of who did the work: nginx, the registry, this load generator and the machine, sampled
from /proc; and who limited a phase."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import defaultdict
from typing import Any

from ..procs import cpu_seconds, system_busy_seconds
from .servers import Nginx, Registry


class CpuWatch:
    """CPU seconds of nginx (master and workers), the registry, this load generator and the
    whole machine, sampled every second (from /proc)."""

    def __init__(self, nginx: Nginx, registry: Registry):
        self.nginx, self.registry = nginx, registry
        self.samples: list[tuple[float, dict[str, float]]] = []

    def sample(self) -> dict[str, float]:
        own = os.times()
        return {
            "nginx": sum(cpu_seconds(self.nginx.pids()).values()),
            "registry": sum(cpu_seconds(self.registry.pids()).values()),
            "load_generator": own.user + own.system,
            "cli_and_children": own.children_user + own.children_system,
            "machine": system_busy_seconds(),
        }

    def mark(self) -> None:
        self.samples.append((time.time(), self.sample()))

    async def run(self) -> None:
        while True:
            self.mark()
            await asyncio.sleep(1.0)

    def between(self, start: float, end: float) -> dict[str, Any]:
        inside = [(moment, sample) for moment, sample in self.samples if start <= moment <= end]
        if len(inside) < 2:
            return {}
        (first_at, first), (last_at, last) = inside[0], inside[-1]
        wall = max(last_at - first_at, 1e-6)
        used = {who: last[who] - first[who] for who in first}
        others = used["machine"] - sum(used[who] for who in used if who != "machine")
        cores = {f"{who}_cores": round(value / wall, 3) for who, value in used.items()}
        cores["everything_else_cores"] = round(max(others, 0.0) / wall, 3)
        peaks = defaultdict(float)
        for (t0, s0), (t1, s1) in itertools.pairwise(inside):
            for who in ("nginx", "registry", "load_generator"):
                peaks[who] = max(peaks[who], (s1[who] - s0[who]) / max(t1 - t0, 1e-6))
        cores["peak_1s_cores"] = {who: round(value, 3) for who, value in peaks.items()}
        cores["cpu_seconds"] = {who: round(value, 3) for who, value in used.items()}
        cores["wall_seconds"] = round(wall, 2)
        return cores


def bottleneck(cpu: dict[str, Any], lag_p99: float, cores: int, open_loop: bool) -> str:
    """Who limited the phase: the load generator (one Python thread), the depot, or nobody
    (in an open loop the timers set the pace; a burst was then bound by latency)."""
    if not cpu:
        return "unknown"
    client = cpu["peak_1s_cores"].get("load_generator", 0.0)
    depot = cpu["peak_1s_cores"].get("nginx", 0.0) + cpu["peak_1s_cores"].get("registry", 0.0)
    if client >= 0.85:
        return "load generator (its one Python thread was saturated)"
    if depot >= 0.85 * cores:
        return "depot (nginx + registry used the machine's cores)"
    if not open_loop:
        return "neither side saturated for a whole second (a burst: latency-bound)"
    if lag_p99 > 1.0:
        return "machine (timers ran late with neither side saturated: other work)"
    return "neither: the timers set the pace; both sides had headroom"

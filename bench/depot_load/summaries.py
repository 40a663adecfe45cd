"""Summaries: per phase (requests, bytes, rates, latencies, CPU), the update's convergence,
the model layer's fetches."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from typing import Any

from .cpu import CpuWatch, bottleneck
from .depot_logs import server_side
from .fleet import Fleet, Poller, SyncCost
from .http import Exchange
from .phases import Timeline
from .settings import CHANNEL, DEPOT_PREFIX, Settings
from .stats import latency_ms, per_second, percentile


def summarize_phase(
    records: list[Exchange], start: float, end: float, cpu: dict, lags: list[float], cores: int
) -> dict[str, Any]:
    """Requests, bytes, rates, latencies per kind, CPU, and who limited the phase (LAGS are
    the timers' delays: none for the herd, which is not timed)."""
    kinds: dict[str, list[Exchange]] = defaultdict(list)
    for record in records:
        kinds[record.kind].append(record)
    by_kind = {}
    for kind, group in sorted(kinds.items()):
        answered = [record for record in group if not record.error]
        by_kind[kind] = {
            "requests": len(group),
            "status": dict(sorted(Counter(str(r.status) for r in answered).items())),
            "errors": len(group) - len(answered),
            "bytes_down": sum(record.down for record in group),
            "bytes_up": sum(record.up for record in group),
            "latency_ms": latency_ms(record.seconds for record in answered),
        }
    ended = [record.ended for record in records]
    traffic = [record.up + record.down for record in records]
    lag_ordered = sorted(lags)
    lag_p99 = percentile(lag_ordered, 0.99)
    return {
        "wall_seconds": round(end - start, 2),
        "requests": len(records),
        "errors": sum(1 for record in records if record.error),
        "error_samples": sorted({record.error for record in records if record.error})[:5],
        "bytes_down": sum(record.down for record in records),
        "bytes_up": sum(record.up for record in records),
        "bytes_by_engine": {
            engine: sum(r.up + r.down for r in records if r.engine == engine)
            for engine in ("nginx", "registry")
        },
        **per_second(ended, traffic, start, end),
        "by_kind": by_kind,
        "timer_lag_ms": {
            "p99": round(lag_p99 * 1000, 1),
            "max": round((lag_ordered[-1] if lag_ordered else 0.0) * 1000, 1),
        },
        "cpu": cpu,
        "limited_by": bottleneck(cpu, lag_p99, cores, open_loop=bool(lags)),
    }


def stuck_reason(poller: Poller, timeline: Timeline) -> str:
    """Why a poller did not take the new pointer: the If-Modified-Since it sends is its own
    download time in whole seconds, and nginx answers 304 when that is not older than the
    file's mtime (in whole seconds) -- an old copy fetched in the second of the publish looks
    current for ever (until the next publish)."""
    path = f"{DEPOT_PREFIX}/channels/{CHANNEL}.json"
    pointer, signature = poller.cache.get(path), poller.cache.get(path + ".sig")
    if pointer is None or signature is None:
        return "no_cached_pointer"
    same_second = int(pointer.mtime) >= int(timeline.promoted_at) and int(signature.mtime) >= int(
        timeline.signature_at
    )
    if same_second:
        return "if_modified_since_same_second"
    return poller.failures[-1] if poller.failures else "not_polled_in_time"


def convergence(pollers: list[Poller], timeline: Timeline, settings: Settings) -> dict[str, Any]:
    done = sorted(p.converged_at - timeline.promoted_at for p in pollers if p.converged_at)
    stuck = Counter(stuck_reason(p, timeline) for p in pollers if p.converged_at is None)
    costs = [p.update_cost for p in pollers if p.update_cost]
    return {
        "pollers": len(pollers),
        "converged": len(done),
        "not_converged": dict(stuck),
        "seconds": {
            "p50": round(percentile(done, 0.5), 2),
            "p90": round(percentile(done, 0.9), 2),
            "p99": round(percentile(done, 0.99), 2),
            "max": round(done[-1] if done else 0.0, 2),
        },
        "simulated_minutes": {
            "p50": round(percentile(done, 0.5) * settings.scale / 60, 1),
            "p90": round(percentile(done, 0.9) * settings.scale / 60, 1),
            "max": round((done[-1] if done else 0.0) * settings.scale / 60, 1),
        },
        "promote_cli_seconds": timeline.promote_seconds,
        "pointer_mtime_fraction_of_second": round(timeline.promoted_at % 1.0, 3),
        "refetches_after_bad_signature": sum(p.refetches for p in pollers),
        "update_sync": _update_cost(costs),
    }


def _update_cost(costs: list[SyncCost]) -> dict[str, Any]:
    if not costs:
        return {}
    nginx = sorted(cost.bytes_nginx for cost in costs)
    registry = sorted(cost.bytes_registry for cost in costs)
    return {
        "bytes_from_nginx_median": int(percentile(nginx, 0.5)),
        "bytes_from_registry_median": int(percentile(registry, 0.5)),
        "bytes_total_median": int(percentile(nginx, 0.5) + percentile(registry, 0.5)),
        "requests_median": int(percentile(sorted(cost.requests for cost in costs), 0.5)),
    }


def layer_fetches(records: list[Exchange], model_digest_size: int) -> dict[str, Any]:
    layers = [r for r in records if r.kind == "registry_layer" and not r.error]
    per_poller = Counter(record.poller for record in layers)
    return {
        "model_layer_fetches": len(layers),
        "pollers_fetching_it_more_than_once": sum(1 for n in per_poller.values() if n > 1),
        "model_layer_bytes": model_digest_size,
    }


def fleet_report(
    settings: Settings,
    pollers: list[Poller],
    fleet: Fleet,
    timeline: Timeline,
    watch: CpuWatch,
    logs: dict[str, list],
) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    phases = {}
    for name in ("herd", "idle", "update"):
        start, end = getattr(timeline, name)
        records = [r for r in fleet.exchanges if start <= r.started < end]
        lags = [late for due, late in fleet.lags if start <= due < end]
        cpu = watch.between(start, end)
        phase = summarize_phase(records, start, end, cpu, lags, cores)
        phase["depot_logs"] = {
            engine: server_side(rows, start, end) for engine, rows in logs.items()
        }
        phase["syncs"] = sum(1 for r in records if r.kind == "pointer")
        phases[name] = phase
    return phases

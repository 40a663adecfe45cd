"""Numbers of a phase: percentiles, latencies in milliseconds, rates per second."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(ordered: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_ms(seconds: Iterable[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50": round(percentile(ordered, 0.50) * 1000, 2),
        "p99": round(percentile(ordered, 0.99) * 1000, 2),
        "max": round((ordered[-1] if ordered else 0.0) * 1000, 2),
    }


def busiest_second(moments: list[float], weights: list[int]) -> tuple[int, int]:
    """(requests, bytes) in the busiest 1-second window (sliding, on completion times)."""
    pairs = sorted(zip(moments, weights, strict=True))
    best_count = best_bytes = window_bytes = 0
    first = 0
    for last, (moment, weight) in enumerate(pairs):
        window_bytes += weight
        while pairs[first][0] <= moment - 1.0:
            window_bytes -= pairs[first][1]
            first += 1
        best_count = max(best_count, last - first + 1)
        best_bytes = max(best_bytes, window_bytes)
    return best_count, best_bytes


def per_second(moments: list[float], weights: list[int], start: float, end: float) -> dict:
    """Mean over the phase and the busiest second."""
    wall = max(end - start, 1e-6)
    peak_requests, peak_bytes = busiest_second(moments, weights)
    return {
        "requests_per_second_mean": round(len(moments) / wall, 2),
        "requests_per_second_peak": peak_requests,
        "bytes_per_second_mean": round(sum(weights) / wall),
        "bytes_per_second_peak": peak_bytes,
    }

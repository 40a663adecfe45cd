"""What the depot said: its own logs (nginx's access log, the registry's JSON log), per
phase."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
from collections import Counter
from pathlib import Path

from .stats import latency_ms


def nginx_log(path: Path) -> list[tuple[float, int, str, int, float]]:
    """(finished at, status, uri, bytes sent, request time) per request."""
    rows = []
    with contextlib.suppress(OSError), path.open() as lines:
        for line in lines:
            fields = line.split()
            if len(fields) == 7:
                rows.append(
                    (float(fields[0]), int(fields[1]), fields[3], int(fields[4]), float(fields[6]))
                )
    return rows


GO_DURATION = re.compile(r"([0-9.]+)(ns|µs|us|ms|s|m|h)")
GO_UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_time(text: str) -> float:
    """A logrus RFC 3339 time with nanoseconds ("2026-12-02T03:43:53.949762576Z")."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    moment = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return moment.timestamp() + (float("0." + fraction) if fraction else 0.0)


def go_seconds(text: str) -> float:
    return sum(float(value) * GO_UNITS[unit] for value, unit in GO_DURATION.findall(text))


def registry_log(path: Path) -> list[tuple[float, int, str, int, float]]:
    """(finished at, status, uri, body bytes written, duration) per request."""
    rows = []
    with contextlib.suppress(OSError), path.open() as lines:
        for line in lines:
            with contextlib.suppress(ValueError, KeyError):
                entry = json.loads(line)
                if "http.response.status" not in entry:
                    continue
                rows.append(
                    (
                        go_time(entry["time"]),
                        int(entry["http.response.status"]),
                        entry["http.request.uri"],
                        int(entry["http.response.written"]),
                        go_seconds(entry["http.response.duration"]),
                    )
                )
    return rows


def server_side(rows: list[tuple[float, int, str, int, float]], start: float, end: float) -> dict:
    inside = [row for row in rows if start <= row[0] < end]
    return {
        "requests": len(inside),
        "status": dict(sorted(Counter(str(row[1]) for row in inside).items())),
        "bytes": sum(row[3] for row in inside),
        "latency_ms": latency_ms(row[4] for row in inside),
    }

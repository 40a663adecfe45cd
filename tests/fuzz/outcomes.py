"""Counting fuzz cases and their outcomes, written to build/fuzz/summary.json at the end."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

SUMMARY_PATH = Path(__file__).resolve().parents[2] / "build" / "fuzz" / "summary.json"


class FuzzOutcomes:
    """Cases sent per target and the status codes they got (0: no HTTP answer)."""

    def __init__(self) -> None:
        self.statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.started = time.monotonic()

    def record(self, target: str, status: int) -> None:
        self.statuses[target][status] += 1

    def summary(self) -> dict[str, Any]:
        targets = {
            target: {
                "cases": sum(counts.values()),
                "status_counts": {str(code): n for code, n in sorted(counts.items())},
                "server_errors": sum(n for code, n in counts.items() if code >= 500),
            }
            for target, counts in sorted(self.statuses.items())
        }
        totals: Counter[int] = Counter()
        for counts in self.statuses.values():
            totals.update(counts)
        return {
            "total_cases": sum(totals.values()),
            "total_server_errors": sum(n for code, n in totals.items() if code >= 500),
            "status_counts": {str(code): n for code, n in sorted(totals.items())},
            "seconds": round(time.monotonic() - self.started, 1),
            "targets": targets,
        }

    def write(self, path: Path = SUMMARY_PATH) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path


OUTCOMES = FuzzOutcomes()

"""Plot a results document: throughput per case, and latency against connections.

Runs in the bench venv (matplotlib): ``build/bench-venv/bin/python bench/plot.py IN OUT``.
Standard library + matplotlib only, so it needs nothing from the project.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {"linkedge": "#1b7837", "mlserver": "#762a83", "mlserver-1t": "#af8dc3"}
LABELS = {"linkedge": "LinkEdge", "mlserver": "MLServer", "mlserver-1t": "MLServer 1 thread/worker"}


def plot(report: dict, out: Path) -> None:
    cases = [case for case in report["cases"] if not case["key"].startswith("single-v2-c")]
    sweep = [case for case in report["cases"] if case["key"].startswith("single-v2-c")]
    kinds = [kind for kind in COLOURS if any(kind in case["results"] for case in report["cases"])]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 6), width_ratios=(1.8, 1, 1))

    width = 0.8 / len(kinds)
    for index, kind in enumerate(kinds):
        xs, ys = [], []
        for position, case in enumerate(cases):
            figures = case["results"].get(kind)
            if figures:
                xs.append(position + (index - (len(kinds) - 1) / 2) * width)
                ys.append(figures["rows_per_s"])
        bars = left.bar(xs, ys, width, color=COLOURS[kind], label=LABELS[kind])
        left.bar_label(bars, [f"{y:,.0f}" for y in ys], fontsize=7, rotation=90, padding=2)
    left.set_yscale("log")
    left.set_xticks(range(len(cases)))
    left.set_xticklabels(
        [textwrap.fill(f"{case['title']}, {case['connections']} conn.", 18) for case in cases],
        fontsize=7,
    )
    left.set_ylabel("rows per second (log)")
    left.set_title("Throughput (1 row per request for the single-record cases)")
    left.legend(fontsize=8)

    for kind in kinds:
        points = [
            (
                case["connections"],
                case["results"][kind]["requests_per_s"],
                case["results"][kind]["latency_ms"]["p99"],
            )
            for case in sweep
            if kind in case["results"]
        ]
        if points:
            xs, rates, p99s = zip(*points, strict=True)
            middle.plot(xs, rates, "o-", color=COLOURS[kind], label=LABELS[kind])
            right.plot(xs, p99s, "o-", color=COLOURS[kind], label=LABELS[kind])
    middle.set_xscale("log", base=2)
    middle.set_yscale("log")
    middle.set_xlabel("connections")
    middle.set_ylabel("requests per second (log)")
    middle.set_title("1 record, V2 JSON: throughput by concurrency")
    middle.legend(fontsize=8)
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("connections")
    right.set_ylabel("p99 latency, ms (log)")
    right.set_title("1 record, V2 JSON: p99 latency by concurrency")
    right.legend(fontsize=8)

    load = report.get("load_average", {})
    machine = report.get("machine", {})
    figure.suptitle(
        f"LinkEdge vs MLServer, same model, same run - {machine.get('cpus')} cores, "
        f"load {load.get('min_1m_during')}-{load.get('max_1m_during')}, "
        f"{report.get('started', '')}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(out, dpi=110)


if __name__ == "__main__":
    plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))

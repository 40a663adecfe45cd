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


def plot_slow_clients(report: dict, out: Path) -> None:
    """Normal requests' p50 and p99, alone and beside the slow connections, per server."""
    results = report["results"]
    kinds = [kind for kind in COLOURS if "alone" in results.get(kind, {})]
    slow = report["settings"]["slow_connections"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    width = 0.8 / max(1, len(kinds))
    for ax, percentile in zip(axes, ("p50", "p99"), strict=True):
        for index, kind in enumerate(kinds):
            entry = results[kind]
            values = [
                entry["alone"]["latency_ms"][percentile],
                entry["beside_slow_clients"]["latency_ms"][percentile],
            ]
            xs = [x + (index - (len(kinds) - 1) / 2) * width for x in (0, 1)]
            bars = ax.bar(xs, values, width, color=COLOURS[kind], label=LABELS[kind])
            ax.bar_label(bars, [f"{v:.2f}" for v in values], fontsize=8, padding=2)
        if percentile == "p99":
            target = report["settings"]["p99_target_ms"]
            ax.axhline(target, color="#b2182b", linestyle="--", linewidth=1)
            ax.text(
                -0.45,
                target,
                f"target {target:g} ms",
                color="#b2182b",
                fontsize=8,
                ha="left",
                va="bottom",
            )
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["alone", f"beside {slow} slow connections"])
        ax.set_ylabel(f"{percentile} latency, ms")
        ax.set_title(f"Normal requests (1 record, 4 connections): {percentile}")
        ax.legend(fontsize=8)
    machine = report.get("machine", {})
    figure.suptitle(
        f"Slow clients (half slow heads, half slow bodies) - {machine.get('cpus')} cores, "
        f"{report.get('started', '')}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def plot_soak(report: dict, out: Path) -> None:
    """PSS against requests served (all pages, anonymous + shmem, file), with the growth
    fitted after the warm-up; throughput and p99 latency per segment underneath."""
    samples = report["samples"]
    settings = report["settings"]
    millions = [s["requests"] / 1e6 for s in samples]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8), height_ratios=(2, 1), sharex=True)
    series = (
        ("pss_mib", "PSS, all pages", COLOURS["linkedge"], "-"),
        ("pss_anon_shmem_mib", "PSS, anonymous + shmem (heap, metric files)", "#084081", "-"),
        (
            "pss_file_mib",
            "PSS, file pages (libraries, model; reclaimed as they cool)",
            "#7bccc4",
            "-",
        ),
    )
    for key, label, colour, style in series:
        top.plot(millions, [s[key] for s in samples], style, color=colour, label=label)
    warmup = settings["warmup_requests"] / 1e6
    top.axvline(warmup, color="grey", linestyle=":", linewidth=1)
    top.text(warmup, top.get_ylim()[1], " warm-up ends", fontsize=8, va="top", color="grey")
    growth = report.get("growth_mib_per_million")
    after = [
        (m, s["pss_anon_shmem_mib"]) for m, s in zip(millions, samples, strict=True) if m >= warmup
    ]
    if growth is not None and after:
        xs = [m for m, _ in after]
        mean_x = sum(xs) / len(xs)
        mean_y = sum(y for _, y in after) / len(after)
        top.plot(
            [xs[0], xs[-1]],
            [mean_y + growth * (x - mean_x) for x in (xs[0], xs[-1])],
            "--",
            color="#b2182b",
            label=f"fit after warm-up: {growth:+.3f} MiB per million requests",
        )
    top.set_ylim(bottom=0)
    top.set_ylabel("MiB")
    totals = report.get("totals", {})
    top.set_title(
        f"Soak: {totals.get('requests', 0):,} requests, {totals.get('5xx', 0)} 5xx, "
        f"{report.get('restarts')} worker restarts, {totals.get('4xx', 0):,} bad inputs refused"
    )
    top.legend(fontsize=8, loc="lower right")
    segments = report.get("segments", [])
    ends = millions[1 : len(segments) + 1]
    bottom.plot(
        ends, [s["requests_per_s"] for s in segments], "-", color=COLOURS["linkedge"], linewidth=0.8
    )
    bottom.set_ylabel("requests per second")
    bottom.set_xlabel("requests served, millions")
    twin = bottom.twinx()
    twin.plot(ends, [s["p99_ms"] for s in segments], "-", color="#762a83", linewidth=0.8)
    twin.set_ylabel("p99 latency, ms", color="#762a83")
    machine = report.get("machine", {})
    figure.suptitle(
        f"LinkEdge soak - {machine.get('cpus')} cores, {report.get('started', '')}", fontsize=10
    )
    figure.tight_layout()
    figure.savefig(out, dpi=110)


if __name__ == "__main__":
    document = json.loads(Path(sys.argv[1]).read_text())
    {"slow-clients": plot_slow_clients, "soak": plot_soak}.get(document.get("case"), plot)(
        document, Path(sys.argv[2])
    )

"""The Markdown summary of a results document (for the README)."""

from __future__ import annotations

from typing import Any

SERVER_ORDER = ("linkedge", "mlserver", "mlserver-1t")


def _rate(figures: dict[str, Any] | None, rows: int) -> str:
    if not figures:
        return "-"
    rate = f"{figures['requests_per_s']:,.0f}"
    if rows > 1:
        rate += f" ({figures['rows_per_s']:,.0f} rows/s)"
    return rate


def _latency(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "-"
    latency = figures["latency_ms"]
    return f"{latency['p50']:.1f} / {latency['p95']:.1f} / {latency['p99']:.1f}"


def markdown(report: dict[str, Any]) -> str:
    servers = report.get("servers", {})
    has_mlserver = "mlserver" in servers
    head = ["case", "conn.", "LinkEdge req/s", "LinkEdge p50 / p95 / p99 ms", "µs CPU/req"]
    if has_mlserver:
        head += [
            "MLServer req/s",
            "MLServer p99 ms",
            "MLServer 1-thread req/s",
            "MLServer 1-thread p99 ms",
            "LinkEdge ÷ best MLServer",
        ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cases = {case["key"]: case for case in report.get("cases", [])}
    for case in report.get("cases", []):
        results = case["results"]
        ours = results.get("linkedge")
        row = [
            case["title"],
            str(case["connections"]),
            _rate(ours, case["rows"]),
            _latency(ours),
            f"{ours['server_cpu_us_per_request']:,.0f}" if ours else "-",
        ]
        if has_mlserver:
            theirs_case = cases.get(case["compare_with"]) if case["compare_with"] else case
            theirs_results = theirs_case["results"] if theirs_case else {}
            note = " (JSON)" if case["compare_with"] else ""
            for kind in ("mlserver", "mlserver-1t"):
                figures = theirs_results.get(kind)
                row.append(_rate(figures, case["rows"]) + (note if figures else ""))
                row.append(f"{figures['latency_ms']['p99']:.1f}" if figures else "-")
            ratio = report.get("ratios", {}).get(case["key"], {})
            row.append(f"**{min(ratio.values()):.1f}x**" if ratio else "-")  # vs the faster one
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for key in SERVER_ORDER:
        server = servers.get(key)
        if not server:
            continue
        memory = server["memory_after_load"]
        processes = len(memory["processes"])
        text = (
            f"- {server['label']}: PSS {memory['pss_mib']:.0f} MiB in {processes} processes "
            f"(RSS summed {memory['rss_sum_mib']:.0f} MiB), ready {server['cold_start_s']:.2f} s "
            "after start"
        )
        if key == "linkedge":
            runs = server["cold_start_runs_s"]
            text += (
                f" (median of {len(runs) + 1} cold starts {server['cold_start_median_s']:.2f} s),"
                f" image {server['image_size_mb']:.0f} MB"
            )
        lines.append(text)
    load = report.get("load_average", {})
    machine = report.get("machine", {})
    git = report.get("git", {})
    lines.append(
        f"- {machine.get('cpus')} x {machine.get('cpu_model')}, wrk (1 thread) on the same "
        f"machine; per case and server {report['settings']['seconds_per_case']:.0f} s in "
        f"{report['settings'].get('rounds', 1)} rounds interleaved with the other servers "
        f"(median round shown) after {report['settings']['warmup_seconds']:.0f} s warm-up; "
        f"each case waited up to {report['settings'].get('quiet_wait_s', 0):.0f} s for other "
        "work on the machine to calm; 1-min load average "
        f"{load.get('min_1m_during')}-{load.get('max_1m_during')} during the run; commit "
        f"{(git.get('commit') or 'unknown')[:12]}{' (dirty)' if git.get('dirty') else ''}"
    )
    verification = report.get("verification", {})
    verdict = "all answers correct" if report.get("ok") else "FAILED"
    lines.append(
        f"- verification: {verification.get('checks')} checks (every body before its load, "
        f"smoke vectors before and after), {verdict}"
    )
    return "\n".join(lines) + "\n"

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
    if report["settings"].get("image_emulated"):
        lines[:0] = [
            f"**Emulated, not a hardware figure**: the image is "
            f"{report['settings'].get('image_architecture')}, run under QEMU user-mode "
            f"emulation on this {report.get('machine', {}).get('cpu_model')} machine.",
            "",
        ]
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


def _footer(report: dict[str, Any]) -> list[str]:
    machine = report.get("machine", {})
    git = report.get("git", {})
    load = report.get("load_average", {})
    verification = report.get("verification", {})
    verdict = "all answers correct" if report.get("ok") else "FAILED"
    lines = [
        f"- {machine.get('cpus')} x {machine.get('cpu_model')}, wrk (1 thread) on the same "
        f"machine; 1-min load average {load.get('start', ['?'])[0]} at the start, "
        f"{load.get('end', ['?'])[0]} at the end; image {report['settings'].get('image')}; "
        f"commit {(git.get('commit') or 'unknown')[:12]}{' (dirty)' if git.get('dirty') else ''}",
        f"- verification: {verification.get('checks')} checks, {verdict}",
    ]
    lines += [f"  - {failure}" for failure in verification.get("failures", [])]
    return lines


def slow_clients_markdown(report: dict[str, Any]) -> str:
    """The slow-clients case: normal latency alone and beside the slow connections."""
    settings = report["settings"]
    slow = settings["slow_connections"]
    head = [
        "server",
        "alone: req/s",
        "alone: p50 / p99 ms",
        f"beside {slow} slow: req/s",
        f"beside {slow} slow: p50 / p99 ms",
        "timeouts / errors",
        "slow connections ended",
        "closed (by reason)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in SERVER_ORDER:
        entry = report.get("results", {}).get(key)
        if not entry or "alone" not in entry:
            continue
        alone, beside = entry["alone"], entry["beside_slow_clients"]
        errors = beside["errors"]
        socket_errors = sum(v for k, v in errors.items() if k not in ("status", "timeout"))
        ended = ", ".join(f"{n} {what}" for what, n in entry["slow_clients"]["ended"].items())
        closed = ", ".join(f"{reason} {n}" for reason, n in entry["closures"].items() if n)
        p99 = beside["latency_ms"]["p99"]
        mark = "" if entry["p99_within_target"] else " (over the target)"
        lines.append(
            "| "
            + " | ".join(
                [
                    entry["label"],
                    f"{alone['requests_per_s']:,.0f}",
                    f"{alone['latency_ms']['p50']:.2f} / {alone['latency_ms']['p99']:.2f}",
                    f"{beside['requests_per_s']:,.0f}",
                    f"{beside['latency_ms']['p50']:.2f} / **{p99:.2f}**{mark}",
                    f"{errors['timeout']} / {socket_errors + beside['non_2xx']}",
                    ended or "none",
                    closed or "-",
                ]
            )
            + " |"
        )
    lines.append("")
    lines.append(
        f"- {settings['normal_connections']} wrk connections sending one record per request "
        f"for {settings['phase_seconds']:.0f} s alone, then {settings['phase_seconds']:.0f} s "
        f"beside {slow} slow connections (half trickle a head, half a body, one byte every "
        f"{settings['trickle_seconds']:g} s; each one that ends is replaced); target: p99 <= "
        f"{settings['p99_target_ms']:g} ms beside them"
    )
    return "\n".join(lines + _footer(report)) + "\n"


def soak_markdown(report: dict[str, Any]) -> str:
    """The soak case: requests, answers, restarts and memory growth."""
    settings = report["settings"]
    totals = report.get("totals", {})
    samples = report.get("samples", [])
    growth = report.get("growth_mib_per_million")
    first = samples[0]["pss_anon_shmem_mib"] if samples else None
    last = samples[-1]["pss_anon_shmem_mib"] if samples else None
    total = report.get("total_pss_growth_mib_per_million")
    mix = ", ".join(
        f"{kind['weight']}x {kind['key']}" + (f" ({kind['status']})" if "status" in kind else "")
        for kind in settings.get("mix", [])
    )
    lines = [
        "| requests | req/s | 2xx | 4xx | 5xx | socket errors | worker restarts | "
        "PSS anon+shmem start → end, MiB | its growth after warm-up, MiB per million "
        "requests |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {totals.get('requests', 0):,} | {totals.get('requests_per_s', 0):,.0f} | "
        f"{totals.get('2xx', 0):,} | {totals.get('4xx', 0):,} | {totals.get('5xx', 0):,} | "
        f"{totals.get('socket_errors', 0):,} | {report.get('restarts')} | "
        f"{first} → {last} | "
        + (
            f"**{growth:+.3f}** (limit {settings['growth_limit_mib_per_million']:g})"
            + (
                ""
                if report.get("growth_judged", True)
                else f", not judged: under {settings['min_judged_requests']:,} requests "
                "after the warm-up"
            )
            if growth is not None
            else "-"
        )
        + " |",
        "",
        f"- mix per cycle: {mix}; {settings['connections']} wrk connections, "
        f"{settings['slow_clients']} slow connections trickling beside them; PSS of the "
        f"container's processes after every {settings['segment_seconds']:g} s of load; "
        f"warm-up {settings['warmup_requests']:,} requests",
        "- growth: least-squares slope of the anonymous + shmem part of PSS (heap, metric "
        "files) after the warm-up; total PSS, file pages included (reclaimed and read back "
        "by the kernel as they cool), "
        + (f"{total:+.3f} MiB per million requests" if total is not None else "-")
        + (f", {samples[0]['pss_mib']} → {samples[-1]['pss_mib']} MiB" if samples else ""),
    ]
    closures = report.get("closures") or {}
    if closures:
        lines.append(
            "- connections closed: "
            + ", ".join(f"{reason} {int(n):,}" for reason, n in closures.items() if n)
        )
    return "\n".join(lines + _footer(report)) + "\n"

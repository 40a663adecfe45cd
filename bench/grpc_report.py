"""The Markdown table of ``--case grpc`` (bench/grpc_case.py): LinkEdge gRPC, MLServer gRPC
and LinkEdge HTTP V2 binary, case by case. No gRPC or numpy import: scripts/figures.py
renders it from bench/results/grpc.json.
"""

from __future__ import annotations

from typing import Any

# The results of a case, by what was measured: a server and a protocol.
LINKEDGE_GRPC = "linkedge-grpc"
MLSERVER_GRPC = "mlserver-1t-grpc"
LINKEDGE_HTTP = "linkedge-http"


def grpc_ratios(cases: list[dict[str, Any]]) -> dict[str, float]:
    """LinkEdge gRPC requests/s over MLServer gRPC's, case by case."""
    out = {}
    for case in cases:
        ours = case["results"].get(LINKEDGE_GRPC)
        theirs = case["results"].get(MLSERVER_GRPC)
        if ours and theirs and theirs["requests_per_s"]:
            out[case["key"]] = round(ours["requests_per_s"] / theirs["requests_per_s"], 2)
    return out


def _rate(figures: dict[str, Any] | None, rows: int) -> str:
    if not figures:
        return "-"
    text = f"{figures['requests_per_s']:,.0f}"
    return text + (f" ({figures['rows_per_s']:,.0f} rows/s)" if rows > 1 else "")


def _latency(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "-"
    return f"{figures['latency_ms']['p50']:.2f} / {figures['latency_ms']['p99']:.2f}"


def _cpu(figures: dict[str, Any] | None) -> str:
    if not figures or figures.get("server_cpu_us_per_request") is None:
        return "-"
    return f"{figures['server_cpu_us_per_request']:,.0f}"


def grpc_markdown(report: dict[str, Any]) -> str:
    """LinkEdge gRPC, MLServer gRPC and LinkEdge HTTP binary, case by case."""
    from .report import _footer

    head = [
        "rows",
        "in flight (channels)",
        "LinkEdge gRPC req/s",
        "p50 / p99 ms",
        "µs CPU/req",
        "MLServer gRPC req/s",
        "p50 / p99 ms",
        "µs CPU/req",
        "LinkEdge ÷ MLServer",
        "LinkEdge HTTP binary req/s (wrk)",
        "p50 / p99 ms",
        "client cores (LinkEdge / MLServer / wrk)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ratios = report.get("ratios", {})
    for case in report.get("grpc_cases", []):
        results = case["results"]
        ours, theirs = results.get(LINKEDGE_GRPC), results.get(MLSERVER_GRPC)
        http = results.get(LINKEDGE_HTTP)
        ratio = ratios.get(case["key"])
        clients = " / ".join(
            f"{f['client_cpu_cores']:.2f}" if f else "-" for f in (ours, theirs, http)
        )
        row = [
            case["title"],
            f"{case['concurrency']} ({case['channels']})",
            _rate(ours, case["rows"]),
            _latency(ours),
            _cpu(ours),
            _rate(theirs, case["rows"]),
            _latency(theirs),
            _cpu(theirs),
            f"**{ratio:.1f}x**" if ratio else "-",
            _rate(http, case["rows"]),
            _latency(http),
            clients,
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", *_notes(report), *_footer(report)]
    return "\n".join(lines) + "\n"


def _notes(report: dict[str, Any]) -> list[str]:
    settings = report["settings"]
    errors = sum(
        sum(f.get("errors", {}).values()) if f.get("client") != "wrk" else f["non_2xx"]
        for case in report.get("grpc_cases", [])
        for f in case["results"].values()
    )
    lines = [
        f"- gRPC client: {settings['grpc_client']}, the same for both servers, in a process of "
        "its own: it caps the absolute gRPC figures (its own cores are in the last column), "
        "not the comparison. HTTP: wrk (C), for reference; its figures are not capped alike.",
        "- request: ModelInfer with `raw_input_contents` FP32, as `tritonclient.grpc` sends it; "
        "LinkEdge answers probability + label, MLServer its one output; every answer under load "
        "carries the outputs of the answer checked against the model before the load, and "
        "LinkEdge's gRPC probabilities equal its `/predict` ones for the same rows",
        f"- {settings['seconds_per_case']:g} s per case and server in {settings['rounds']} "
        "interleaved rounds (median round shown), each gRPC round after "
        f"{settings['loader_warmup_s']:g} s of warm-up on its new channels; gRPC errors and "
        f"HTTP non-2xx under load, all cases: {errors}",
    ]
    for server in report.get("servers", {}).values():
        memory_after = server["memory_after_load"]
        lines.append(
            f"- {server['label']}: PSS {memory_after['pss_mib']:.0f} MiB in "
            f"{len(memory_after['processes'])} processes after the load"
            + (f", MLServer {server['mlserver_version']}" if "mlserver_version" in server else "")
        )
    return lines

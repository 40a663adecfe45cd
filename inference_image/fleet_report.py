"""The fleet report: one self-contained HTML page (no script, no file or network it loads)
with what each truck serves against its channel, the rollout history, drift per feature
against the training reference (a bar chart per truck), capture volume, shadow agreement and
the alerts firing. `linkedge-image fleet report` writes it from `fleet status --json`, the
rollout reports and the depot's Prometheus."""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .drift import MIN_VALUES_FOR_PSI
from .fleet_metrics import FleetMetrics

PSI_THRESHOLD = 0.25  # the alert rule's (roles/monitoring/files/linkedge-rules.yml)
TOP_FEATURES = 12
OVER, UNDER, ALERT = "#d32f2f", "#1976d2", "#c62828"  # the test looks for these colours


@dataclass
class ReportInputs:
    status: dict[str, Any] | None = None  # `linkedge-image fleet status --json`
    rollouts: list[dict[str, Any]] = field(default_factory=list)  # newest first
    metrics: FleetMetrics | None = None
    generated: float = field(default_factory=time.time)


def load_rollouts(directory: Path, limit: int = 20) -> list[dict[str, Any]]:
    """The rollout reports of DIRECTORY (linkedge.edge.rollout_report), newest first; check
    mode's (``<stamp>-check.json``) changed nothing and are left out."""
    reports = []
    paths = [p for p in Path(directory).glob("2*.json") if not p.stem.endswith("-check")]
    for path in sorted(paths, reverse=True)[:limit]:
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return reports


def _e(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def _size(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def _table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{classes[i] if classes else ""}">'
        + "".join(f"<td>{c}</td>" for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _trucks(status: dict[str, Any] | None) -> str:
    if not status or not status.get("trucks"):
        return "<p>No fleet status given (<code>fleet status --json</code>).</p>"
    rows, classes = [], []
    for row in status["trucks"]:
        flags = row.get("flags") or []
        age = row.get("age_seconds")
        rows.append(
            [
                _e(row.get("truck")),
                _e(row.get("channel")),
                _e(row.get("serving_version")),
                _e(row.get("channel_version")),
                _e(row.get("outcome")),
                _e(None if age is None else f"{age / 60:.0f} min"),
                _e(", ".join(flags) or "ok"),
            ]
        )
        classes.append("bad" if flags else "")
    summary = status.get("summary", {})
    counts = ", ".join(f"{_e(k)} {_e(v)}" for k, v in summary.items())
    headers = ["truck", "channel", "serving", "channel wants", "last", "age", "flags"]
    return f"<p>{counts}</p>" + _table(headers, rows, classes)


def _alerts(metrics: FleetMetrics | None) -> str:
    if metrics is None:
        return "<p>No Prometheus given.</p>"
    if not metrics.alerts:
        return '<p class="ok">No alert is firing.</p>'
    rows = [
        [
            f'<span class="badge">{_e(a.get("alertname"))}</span>',
            _e(a.get("truck")),
            _e(a.get("severity")),
        ]
        for a in metrics.alerts
    ]
    return _table(["alert", "truck", "severity"], rows, ["alert"] * len(rows))


def drift_chart(truck: str, psi: dict[str, float], rows: float | None) -> str:
    """An SVG bar chart of the truck's largest PSI values, the threshold as a line."""
    top = sorted(psi.items(), key=lambda item: item[1], reverse=True)[:TOP_FEATURES]
    scale_max = max([PSI_THRESHOLD * 2, *(value for _, value in top)])
    width, label_width, bar_height = 640, 90, 18
    plot = width - label_width - 60
    height = bar_height * len(top) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="drift of {_e(truck)}">'
    ]
    for index, (feature, value) in enumerate(top):
        y = 10 + index * bar_height
        length = max(1.0, plot * value / scale_max)
        colour = OVER if value > PSI_THRESHOLD else UNDER
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 13}" text-anchor="end" font-size="12">'
            f"{_e(feature)}</text>"
            f'<rect x="{label_width}" y="{y + 2}" width="{length:.1f}" height="{bar_height - 4}" '
            f'fill="{colour}"/>'
            f'<text x="{label_width + length + 4:.1f}" y="{y + 13}" font-size="11">'
            f"{value:.3f}</text>"
        )
    line = label_width + plot * PSI_THRESHOLD / scale_max
    parts.append(
        f'<line x1="{line:.1f}" y1="6" x2="{line:.1f}" y2="{height - 14}" stroke="#333" '
        'stroke-dasharray="4 3"/>'
        f'<text x="{line:.1f}" y="{height - 2}" font-size="11" text-anchor="middle">'
        f"PSI {PSI_THRESHOLD}</text></svg>"
    )
    over = [feature for feature, value in top if value > PSI_THRESHOLD]
    caption = (
        f"{_e(truck)}: {len(over)} feature(s) over {PSI_THRESHOLD}"
        + (f" ({_e(', '.join(over))})" if over else "")
        + ("" if rows is None else f", {rows:.0f} rows in the window")
    )
    return f"<figure><figcaption>{caption}</figcaption>{''.join(parts)}</figure>"


def _drift(metrics: FleetMetrics | None) -> str:
    if metrics is None:
        return "<p>No Prometheus given.</p>"
    if not metrics.psi:
        return (
            f"<p>No drift figures yet (a truck needs {MIN_VALUES_FOR_PSI} values of a feature).</p>"
        )
    return "".join(
        drift_chart(truck, metrics.psi[truck], metrics.window_rows.get(truck))
        for truck in sorted(metrics.psi)
    )


def _capture_and_shadow(metrics: FleetMetrics | None) -> str:
    if metrics is None:
        return "<p>No Prometheus given.</p>"
    trucks = sorted(set(metrics.capture) | set(metrics.shadow))
    if not trucks:
        return "<p>No truck captures data or runs a shadow model.</p>"
    rows = []
    for truck in trucks:
        capture = metrics.capture.get(truck, {})
        shadow = metrics.shadow.get(truck, {})
        agreement = (
            f"{shadow['agree'] / shadow['rows']:.1%} of {shadow['rows']:.0f} rows"
            if shadow.get("rows")
            else "-"
        )
        rows.append(
            [
                _e(truck),
                _e(None if "records" not in capture else f"{capture['records']:.0f}"),
                _e(_size(capture.get("bytes"))) + " / " + _e(_size(capture.get("budget"))),
                _e(
                    None
                    if "dropped_segments" not in capture
                    else f"{capture['dropped_segments']:.0f}"
                ),
                _e(agreement),
            ]
        )
    headers = ["truck", "rows captured", "spool / budget", "segments dropped", "shadow agreement"]
    return _table(headers, rows)


def _rollouts(rollouts: list[dict[str, Any]]) -> str:
    if not rollouts:
        return "<p>No rollout report given.</p>"
    rows = []
    for report in rollouts:
        counts = report.get("counts", {})
        outcomes = ", ".join(f"{_e(k)} {_e(v)}" for k, v in counts.items() if v)
        versions = sorted(
            {str(t.get("new_version")) for t in report.get("trucks", {}).values() if t}
        )
        rows.append(
            [
                _e(report.get("finished")),
                _e(report.get("playbook")),
                _e(", ".join(versions)),
                outcomes or "-",
                _e(report.get("duration_seconds")),
            ]
        )
    return _table(["finished", "playbook", "version", "outcomes", "seconds"], rows)


STYLE = f"""
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ background: #eee; text-align: left; }} tr.bad td {{ background: #fff3e0; }}
tr.alert td {{ background: #ffebee; }} p.ok {{ color: #2e7d32; }}
.badge {{ background: {ALERT}; color: #fff; padding: 2px 8px; border-radius: 3px; }}
figure {{ margin: 12px 0; }} figcaption {{ font-size: 13px; margin-bottom: 4px; }}
"""


def render(inputs: ReportInputs) -> str:
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(inputs.generated))
    source = inputs.metrics.source if inputs.metrics else "no Prometheus"
    sections = [
        ("Alerts firing", _alerts(inputs.metrics)),
        ("Trucks: serving against their channel", _trucks(inputs.status)),
        (
            f"Drift per feature against the training reference (PSI; over {PSI_THRESHOLD} in red)",
            _drift(inputs.metrics),
        ),
        ("Capture and shadow models", _capture_and_shadow(inputs.metrics)),
        ("Rollout history", _rollouts(inputs.rollouts)),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>LinkEdge fleet report</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>LinkEdge fleet report</h1><p>Generated {generated} from {html.escape(source)}.</p>"
        f"{body}</body></html>\n"
    )

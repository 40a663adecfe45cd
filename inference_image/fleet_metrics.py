"""What the depot's Prometheus knows about the fleet, for the fleet report: drift per truck and
feature, capture volume, shadow agreement, the alerts firing (its HTTP API, /api/v1/query)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any


class PrometheusError(RuntimeError):
    """The Prometheus API could not be read."""


@dataclass
class FleetMetrics:
    source: str
    psi: dict[str, dict[str, float]] = field(default_factory=dict)  # truck -> feature -> PSI
    window_rows: dict[str, float] = field(default_factory=dict)
    capture: dict[str, dict[str, float]] = field(default_factory=dict)  # truck -> figure
    shadow: dict[str, dict[str, float]] = field(default_factory=dict)  # truck -> agree, rows
    alerts: list[dict[str, str]] = field(default_factory=list)  # labels of firing alerts


def query(base_url: str, expression: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """An instant query's vector: [{"metric": {...labels}, "value": [time, "text"]}]."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            payload = json.loads(answer.read())
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"cannot query Prometheus at {base_url}: {exc}") from None
    if payload.get("status") != "success":
        raise PrometheusError(f"Prometheus refused {expression!r}: {payload.get('error')}")
    return payload["data"]["result"]


def _by_truck(results: list[dict[str, Any]]) -> dict[str, float]:
    return {
        item["metric"].get("truck", "?"): float(item["value"][1])
        for item in results
        if "truck" in item["metric"]
    }


def read_fleet_metrics(base_url: str, timeout: float = 10.0) -> FleetMetrics:
    metrics = FleetMetrics(source=base_url)
    for item in query(base_url, "max by (truck, feature) (linkedge_drift_psi)", timeout):
        labels = item["metric"]
        if "truck" in labels and "feature" in labels:
            truck_psi = metrics.psi.setdefault(labels["truck"], {})
            truck_psi[labels["feature"]] = float(item["value"][1])
    metrics.window_rows = _by_truck(
        query(base_url, "max by (truck) (linkedge_drift_window_rows)", timeout)
    )
    for name, expression in (
        ("bytes", "max by (truck) (linkedge_capture_spool_bytes)"),
        ("budget", "max by (truck) (linkedge_capture_spool_budget_bytes)"),
        ("records", "sum by (truck) (linkedge_capture_records_total)"),
        ("dropped_segments", "max by (truck) (linkedge_capture_dropped_segments_total)"),
    ):
        for truck, value in _by_truck(query(base_url, expression, timeout)).items():
            metrics.capture.setdefault(truck, {})[name] = value
    agree = 'sum by (truck) (linkedge_shadow_rows_total{model="pos",shadow="pos"}) + ' + (
        'sum by (truck) (linkedge_shadow_rows_total{model="neg",shadow="neg"})'
    )
    for name, expression in (
        ("agree", agree),
        ("rows", "sum by (truck) (linkedge_shadow_rows_total)"),
    ):
        for truck, value in _by_truck(query(base_url, expression, timeout)).items():
            metrics.shadow.setdefault(truck, {})[name] = value
    for item in query(base_url, 'ALERTS{alertstate="firing"}', timeout):
        metrics.alerts.append({k: v for k, v in item["metric"].items() if k != "__name__"})
    metrics.alerts.sort(key=lambda labels: (labels.get("truck", ""), labels.get("alertname", "")))
    return metrics

"""What the depot's Prometheus knows about the fleet, for the fleet report: drift per truck and
feature, capture volume, shadow agreement, the alerts firing (its HTTP API, /api/v1/query)."""

from __future__ import annotations

import base64
import json
import ssl
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


@dataclass(frozen=True)
class PrometheusAccess:
    """How to reach the depot's Prometheus: its URL, a user (the role monitoring's
    monitoring_remote_write_users) and the CA of its certificate."""

    base_url: str
    user: str | None = None
    password: str | None = None
    cafile: str | None = None

    def request(self, path: str) -> urllib.request.Request:
        headers = {}
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return urllib.request.Request(f"{self.base_url.rstrip('/')}{path}", headers=headers)

    def context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.cafile) if self.cafile else None


def query(
    access: PrometheusAccess | str, expression: str, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """An instant query's vector: [{"metric": {...labels}, "value": [time, "text"]}]."""
    if isinstance(access, str):
        access = PrometheusAccess(access)
    base_url = access.base_url
    request = access.request(f"/api/v1/query?{urllib.parse.urlencode({'query': expression})}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=access.context()) as answer:
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


def read_fleet_metrics(access: PrometheusAccess | str, timeout: float = 10.0) -> FleetMetrics:
    metrics = FleetMetrics(source=access if isinstance(access, str) else access.base_url)
    for item in query(access, "max by (truck, feature) (linkedge_drift_psi)", timeout):
        labels = item["metric"]
        if "truck" in labels and "feature" in labels:
            truck_psi = metrics.psi.setdefault(labels["truck"], {})
            truck_psi[labels["feature"]] = float(item["value"][1])
    metrics.window_rows = _by_truck(
        query(access, "max by (truck) (linkedge_drift_window_rows)", timeout)
    )
    for name, expression in (
        ("bytes", "max by (truck) (linkedge_capture_spool_bytes)"),
        ("budget", "max by (truck) (linkedge_capture_spool_budget_bytes)"),
        ("records", "sum by (truck) (linkedge_capture_records_total)"),
        ("dropped_segments", "max by (truck) (linkedge_capture_dropped_segments_total)"),
    ):
        for truck, value in _by_truck(query(access, expression, timeout)).items():
            metrics.capture.setdefault(truck, {})[name] = value
    agree = 'sum by (truck) (linkedge_shadow_rows_total{model="pos",shadow="pos"}) + ' + (
        'sum by (truck) (linkedge_shadow_rows_total{model="neg",shadow="neg"})'
    )
    for name, expression in (
        ("agree", agree),
        ("rows", "sum by (truck) (linkedge_shadow_rows_total)"),
    ):
        for truck, value in _by_truck(query(access, expression, timeout)).items():
            metrics.shadow.setdefault(truck, {})[name] = value
    for item in query(access, 'ALERTS{alertstate="firing"}', timeout):
        metrics.alerts.append({k: v for k, v in item["metric"].items() if k != "__name__"})
    metrics.alerts.sort(key=lambda labels: (labels.get("truck", ""), labels.get("alertname", "")))
    return metrics

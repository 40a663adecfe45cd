"""Per month and per fleet: a truck's idle bytes per month by scenario, and the measured
figures extrapolated to 10,000 and 100,000 trucks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .settings import BANDWIDTHS_MBIT, FLEETS, MONTH_SECONDS, TARGET_BYTES_PER_MONTH, Settings


def syncs_per_month(settings: Settings) -> float:
    return MONTH_SECONDS / settings.real_interval  # the nominal interval (an upper bound)


@dataclass(frozen=True)
class Scenario:
    """A way of running the fleet, for the idle cost per month."""

    label: str
    variant: str  # the idle sync's TLS variant; "": the pointer comes over the bridge
    keepalive: int = 60  # the bridge's keepalive_interval, s
    status_every: int = 1  # an unchanged status published every Nth sync


FIRST_SHIPPED = "ECDSA TLS 1.3, 2 requests, full handshakes"
# An idle sync asks for the pointer only (roles/edge_manager/tasks/sync_pointer.yml).
REQUESTS_PER_IDLE_SYNC = 1
ONE_REQUEST_NO_TICKETS = "ECDSA TLS 1.3, 1 request, full, server sends no tickets"
SCENARIOS = (
    Scenario("as first shipped: ECDSA cert, TLS 1.3, 2 requests with full handshakes, status "
             "every sync, bridge keep-alive 60 s", FIRST_SHIPPED),
    Scenario("the same with an RSA-2048 certificate", "RSA TLS 1.3, 2 requests, full handshakes"),
    Scenario("the same, bridge keep-alive 600 s", FIRST_SHIPPED, 600),
    Scenario("keep-alive 600 s + 1 request per idle sync",
             "ECDSA TLS 1.3, 1 request, full handshake", 600),
    Scenario("shipped now: keep-alive 600 s + 1 request per idle sync + the depot sends no "
             "session tickets (docs/operating-a-fleet.md)",
             ONE_REQUEST_NO_TICKETS, 600),
    Scenario("the above + an unchanged status only every 2nd sync (hourly)",
             ONE_REQUEST_NO_TICKETS, 600, 2),
    Scenario("keep-alive 600 s + 1 request resuming a persisted TLS session",
             "ECDSA TLS 1.3, 1 request, resumed", 600),
    Scenario("keep-alive 600 s + 1 plain-HTTP request (the pointer is signed)",
             "http, 1 request", 600),
    Scenario("keep-alive 600 s + the pointer retained on the bridge, not polled", "", 600),
)  # fmt: skip


def monthly_budget(settings: Settings, tls: dict, bridge: dict) -> dict[str, Any]:
    """Per truck and month, by cause, for each scenario (measured bytes above TCP, estimated
    IP/TCP headers)."""
    variants = {v["variant"]: v for v in tls.get("variants", [])}
    syncs = syncs_per_month(settings)
    rows = []
    for scenario in SCENARIOS:
        variant = variants.get(scenario.variant, {}) if scenario.variant else {"x": 0}
        if not variant or not bridge:
            continue
        polls = variant.get("bytes_on_wire_ipv4", 0) * syncs
        status = bridge["status_publish"]["bytes_on_wire_ipv4"] * syncs / scenario.status_every
        pings = bridge["ping_exchange"]["bytes_on_wire_ipv4"] * MONTH_SECONDS / scenario.keepalive
        total = polls + status + pings
        rows.append(
            {
                "scenario": scenario.label,
                "depot_polls": round(polls),
                "status_publishes": round(status),
                "bridge_keepalive": round(pings),
                "total": round(total),
                "under_target": total <= TARGET_BYTES_PER_MONTH,
            }
        )
    return {
        "syncs_per_month": round(syncs),
        "target_bytes": TARGET_BYTES_PER_MONTH,
        "assumptions": (
            f"30 days; a sync every {settings.real_interval / 60:g} min (the nominal interval; "
            "the randomized delay makes it ~14% fewer); IPv4 with TCP timestamps; the bridge "
            "stays connected (a NAT timeout or a lost link adds a TLS handshake and CONNECT "
            "each); no model updates; bytes above TCP and segments measured, 52 bytes of "
            "IPv4 + TCP headers per segment"
        ),
        "scenarios": rows,
    }


@dataclass(frozen=True)
class PerTruck:
    """The measured figures a fleet multiplies."""

    http_bytes_per_sync: float  # one idle sync over HTTP (both requests, both ways)
    https_bytes_per_sync: float  # the same over HTTPS (ECDSA, TLS 1.3, full handshakes)
    update_bytes: int  # one model-only update (median)
    update_bytes_1mib: int  # the same with a 1 MiB model layer
    registry_ms_per_update: float
    nginx_us: dict[str, float]  # per idle request: http (in the idle phase), ecdsa, rsa

    def row(self, settings: Settings, trucks: int, full_pull: int | None) -> dict[str, Any]:
        polls = trucks * REQUESTS_PER_IDLE_SYNC / settings.real_interval
        fleet_update, fleet_1mib = trucks * self.update_bytes, trucks * self.update_bytes_1mib
        return {
            "trucks": trucks,
            "poll_requests_per_second": round(polls, 1),
            "poll_bytes_per_second_http": round(
                trucks * self.http_bytes_per_sync / settings.real_interval
            ),
            "poll_bytes_per_second_https_ecdsa": round(
                trucks * self.https_bytes_per_sync / settings.real_interval
            ),
            "nginx_cores_http": round(polls * self.nginx_us["http"] / 1e6, 4),
            "nginx_cores_https_ecdsa_full": round(polls * self.nginx_us["ecdsa"] / 1e6, 4),
            "nginx_cores_https_rsa_full": round(polls * self.nginx_us["rsa"] / 1e6, 4),
            "update_bytes_fleet": fleet_update,
            "update_converge_minutes": converge_minutes(settings, fleet_update),
            "update_bytes_fleet_1mib_model": fleet_1mib,
            "update_converge_minutes_1mib_model": converge_minutes(settings, fleet_1mib),
            "registry_cores_during_rollout": round(
                trucks / settings.real_interval * self.registry_ms_per_update / 1000, 3
            ),
            "new_trucks_full_pull_bytes_each": full_pull,
        }


def per_truck(report: dict[str, Any], tls: dict[str, Any]) -> PerTruck:
    phases, converge = report["phases"], report["convergence"]
    idle = phases["idle"]
    https = {v["variant"]: v for v in tls.get("variants", [])}
    update = converge.get("update_sync", {}).get("bytes_total_median", 0)
    cpu = tls.get("nginx_cpu_us_per_idle_request", {})
    return PerTruck(
        http_bytes_per_sync=(idle["bytes_up"] + idle["bytes_down"]) / max(1, idle["syncs"]),
        https_bytes_per_sync=https.get(ONE_REQUEST_NO_TICKETS, {}).get("bytes_above_tcp", 0),
        update_bytes=update,
        update_bytes_1mib=update - report["image"]["model_layer_bytes"] + (1 << 20),
        registry_ms_per_update=_registry_ms_per_update(phases["update"], converge["converged"]),
        nginx_us={
            "http": _nginx_us_per_request(idle),
            "ecdsa": cpu.get("ecdsa_tls1.3", 0.0),
            "rsa": cpu.get("rsa_tls1.3", 0.0),
        },
    )


def fleet_extrapolation(
    settings: Settings, report: dict[str, Any], tls: dict[str, Any]
) -> dict[str, Any]:
    """10,000 and 100,000 trucks from the measured per-truck figures (linear: every truck
    does the same requests; the randomized delay spreads them evenly). Also for a 1 MiB
    model layer (a bigger model than the measured one): the same requests, more bytes."""
    truck = per_truck(report, tls)
    full_pull = report["full_pull"].get("bytes")
    return {
        "measured_at_equivalent_fleet": round(settings.pollers * settings.scale),
        "http_bytes_per_idle_sync": round(truck.http_bytes_per_sync, 1),
        "update_bytes_per_truck": truck.update_bytes,
        "update_bytes_per_truck_1mib_model": truck.update_bytes_1mib,
        "registry_cpu_ms_per_update": round(truck.registry_ms_per_update, 2),
        "nginx_cpu_us_per_idle_http_request": round(truck.nginx_us["http"], 1),
        "rows": [truck.row(settings, trucks, full_pull) for trucks in FLEETS],
        "converge_model": (
            "max(the timers' spread: interval + randomized delay, fleet bytes / bandwidth): "
            "arrivals are spread evenly over the interval + delay by the timers; when the "
            "depot's link cannot carry them as they come, the queue drains at its bandwidth"
        ),
    }


def _nginx_us_per_request(idle: dict) -> float:
    cpu = idle.get("cpu", {}).get("cpu_seconds", {})
    requests = idle.get("depot_logs", {}).get("nginx", {}).get("requests") or idle["requests"]
    return cpu.get("nginx", 0.0) / max(requests, 1) * 1e6


def _registry_ms_per_update(update: dict, converged: int) -> float:
    cpu = update.get("cpu", {}).get("cpu_seconds", {})
    return cpu.get("registry", 0.0) / max(converged, 1) * 1000


def converge_minutes(settings: Settings, fleet_bytes: int) -> dict[str, float]:
    """Per depot bandwidth: the timers' spread, or the transfer when it takes longer."""
    spread = settings.real_interval + settings.real_delay
    return {
        f"{mbit}_mbit": round(max(spread, fleet_bytes * 8 / (mbit * 1e6)) / 60, 1)
        for mbit in BANDWIDTHS_MBIT
    }

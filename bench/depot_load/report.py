"""The markdown of a run's report (``<out>/<name>.md``)."""

from __future__ import annotations

from typing import Any


def _n(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def markdown(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "# Pull mode at scale: depot load and idle cost (`python -m bench.depot_load`)",
        "",
        f"Measured {report['generated_at']}, commit `{(report['git']['commit'] or '')[:12]}`"
        f"{' (dirty)' if report['git']['dirty'] else ''}, {report['machine']['cpus']} x "
        f"{report['machine']['cpu_model']}; {report['machine'].get('nginx', 'nginx')}, "
        f"{report['machine'].get('registry', 'docker-registry')}. Command: `{report['command']}`"
        f" ({report['seconds']} s). Releases: {report['source']}. Verdict: "
        f"{'ok' if report['ok'] else 'NOT OK'}.",
        "",
        f"{settings['pollers']:,} pollers; the real {settings['real_interval_seconds'] / 60:g}-min "
        f"interval + up to {settings['real_randomized_delay_seconds'] / 60:g} min of randomized "
        f"delay simulated in {settings['interval_wall_seconds']:g} s + "
        f"{settings['randomized_delay_wall_seconds']:g} s (time scale "
        f"{settings['time_scale']:g}): the request rate of "
        f"{settings['equivalent_fleet_at_real_interval']:,} trucks at the real interval.",
        "",
        *_phase_table(report["phases"]),
        "",
        *_kind_table(report["phases"]),
        "",
        *_convergence_lines(report),
        "",
        *_tls_lines(report.get("tls_idle_sync") or {}),
        "",
        *_mqtt_lines(report.get("mqtt_bridge") or {}),
        "",
        *_monthly_lines(report["monthly_per_truck"]),
        "",
        *_fleet_lines(report["fleets"]),
    ]
    return "\n".join(lines) + "\n"


def _phase_table(phases: dict[str, Any]) -> list[str]:
    lines = [
        "## The depot under the simulated fleet",
        "",
        "| phase | wall s | requests | errors | req/s mean | req/s peak | bytes | bytes/s peak "
        "| nginx cores | registry cores | load generator cores (peak 1 s) | other cores "
        "| limited by |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, phase in phases.items():
        cpu = phase.get("cpu") or {}
        peak = cpu.get("peak_1s_cores", {})
        lines.append(
            f"| {name} | {_n(phase['wall_seconds'])} | {_n(phase['requests'])} | "
            f"{_n(phase['errors'])} | {_n(phase['requests_per_second_mean'])} | "
            f"{_n(phase['requests_per_second_peak'])} | "
            f"{_n(phase['bytes_down'] + phase['bytes_up'])} | "
            f"{_n(phase['bytes_per_second_peak'])} | {_n(cpu.get('nginx_cores'))} | "
            f"{_n(cpu.get('registry_cores'))} | {_n(cpu.get('load_generator_cores'))} "
            f"({_n(peak.get('load_generator'))}) | {_n(cpu.get('everything_else_cores'))} | "
            f"{phase['limited_by']} |"
        )
    return lines


def _kind_table(phases: dict[str, Any]) -> list[str]:
    lines = [
        "Per request kind (latency from connect to the last byte, at the poller):",
        "",
        "| phase | kind | requests | status | errors | bytes down | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, phase in phases.items():
        for kind, figures in phase["by_kind"].items():
            status = ", ".join(f"{code}: {count:,}" for code, count in figures["status"].items())
            latency = figures["latency_ms"]
            lines.append(
                f"| {name} | {kind} | {_n(figures['requests'])} | {status} | "
                f"{_n(figures['errors'])} | {_n(figures['bytes_down'])} | {latency['p50']} | "
                f"{latency['p99']} | {latency['max']} |"
            )
    return lines


def _convergence_lines(report: dict[str, Any]) -> list[str]:
    converge, model, pull = report["convergence"], report["model_layer"], report["full_pull"]
    check, update = report["idle_check"], converge.get("update_sync", {})
    return [
        "## The update",
        "",
        f"- idle polls answered 304: {check['answered_304']:,} of {check['poll_requests']:,}",
        f"- converged: {converge['converged']:,} of {converge['pollers']:,} pollers; not "
        f"converged: {converge['not_converged'] or 'none'}",
        f"- time to converge after the new pointer's mtime, wall s: p50 "
        f"{converge['seconds']['p50']}, p90 {converge['seconds']['p90']}, max "
        f"{converge['seconds']['max']} = simulated min p50 "
        f"{converge['simulated_minutes']['p50']}, p90 {converge['simulated_minutes']['p90']}, "
        f"max {converge['simulated_minutes']['max']}",
        f"- model layer ({model['model_layer_bytes']:,} bytes) fetched "
        f"{model['model_layer_fetches']:,} times; pollers fetching it more than once: "
        f"{model['pollers_fetching_it_more_than_once']}",
        f"- per updating truck (median): {_n(update.get('bytes_from_nginx_median'))} bytes from "
        f"nginx + {_n(update.get('bytes_from_registry_median'))} bytes from the registry in "
        f"{_n(update.get('requests_median'))} requests",
        f"- a new truck's full pull: {pull['bytes']:,} bytes in {pull['requests']} requests",
        f"- re-fetches after a pair that did not verify: "
        f"{converge['refetches_after_bad_signature']}",
        _probe_line(report["if_modified_since_probe"]),
    ]


def _probe_line(probe: dict[str, Any]) -> str:
    return (
        f"- If-Modified-Since probe: a pointer downloaded at "
        f".{probe['old_downloaded_at_fraction'] * 1000:03.0f} s, the next one written at "
        f".{probe['new_written_at_fraction'] * 1000:03.0f} s "
        f"({'the same' if probe['same_second'] else 'another'} second); the next poll as "
        f"get_url sends it: {probe['next_poll_as_get_url_sends_it']}, with the depot's "
        f"Last-Modified: {probe['next_poll_with_the_depots_last_modified']}"
    )


def _tls_lines(tls: dict[str, Any]) -> list[str]:
    if not tls:
        return ["(TLS measurement skipped)"]
    lines = [
        "## One idle sync on the truck's link",
        "",
        f"Server certificates (DER): {tls['server_certificate_der_bytes']}. {tls['note']}.",
        "",
        "| variant | statuses | resumed | TLS | up | down | above TCP | packets "
        "| on the wire (IPv4) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in tls["variants"]:
        lines.append(
            f"| {v['variant']} | {v['statuses']} | {v['resumed']} | "
            f"{', '.join(v['negotiated']).replace('None', '-')} | {_n(v['bytes_up'])} | "
            f"{_n(v['bytes_down'])} | {_n(v['bytes_above_tcp'])} | {v['packets']} | "
            f"{_n(v['bytes_on_wire_ipv4'])} |"
        )
    cpu = tls["nginx_cpu_us_per_idle_request"]
    described = ", ".join(
        f"{name.replace('_tls', ' TLS ')} {value:g}" for name, value in cpu.items()
    )
    lines += ["", f"nginx CPU per idle request (a new connection each), µs: {described}."]
    return lines


def _mqtt_lines(bridge: dict[str, Any]) -> list[str]:
    if not bridge:
        return ["(MQTT bridge measurement skipped)"]
    rows = [
        ("bridge connection (TLS handshake, CONNECT, CONNACK)", bridge["connect"]),
        (f"one keep-alive (PINGREQ + PINGRESP; {bridge['pings_seen']} seen)",
         bridge["ping_exchange"]),
        (f"one status publish (payload {bridge['status_payload_bytes']:,}) + PUBACK",
         bridge["status_publish"]),
    ]  # fmt: skip
    return [
        "## The MQTT bridge (Mosquitto, ECDSA certificate, through a counting proxy)",
        "",
        f"The role's settings (bridge_tls_version {bridge['tls_version_setting']}, QoS 1, "
        f"cleansession false, MQTT 3.1.1); TLS {bridge['negotiated_tls']} negotiated.",
        "",
        "| what | above TCP, bytes | packets | on the wire (IPv4) |",
        "|---|---|---|---|",
        *(
            f"| {label} | {_n(fig['above_tcp'])} | {_n(fig['packets'])} | "
            f"{_n(fig['bytes_on_wire_ipv4'])} |"
            for label, fig in rows
        ),
    ]


def _monthly_lines(monthly: dict[str, Any]) -> list[str]:
    lines = [
        "## Idle cost per truck and month",
        "",
        f"{monthly['syncs_per_month']:,} syncs; target {monthly['target_bytes']:,} bytes. "
        f"{monthly['assumptions']}.",
        "",
        "| scenario | depot polls | status publishes | bridge keep-alive | total | <= target |",
        "|---|---|---|---|---|---|",
    ]
    for row in monthly["scenarios"]:
        lines.append(
            f"| {row['scenario']} | {_n(row['depot_polls'])} | {_n(row['status_publishes'])} | "
            f"{_n(row['bridge_keepalive'])} | {_n(row['total'])} | "
            f"{'yes' if row['under_target'] else 'no'} |"
        )
    return lines


def _fleet_lines(fleets: dict[str, Any]) -> list[str]:
    lines = [
        "## Extrapolated to fleets (linear in trucks, from the figures above)",
        "",
        f"Measured at the request rate of {fleets['measured_at_equivalent_fleet']:,} trucks; "
        f"per truck: {fleets['http_bytes_per_idle_sync']:,} bytes per idle sync (HTTP), "
        f"{fleets['update_bytes_per_truck']:,} bytes per model-only update "
        f"({fleets['update_bytes_per_truck_1mib_model']:,} with a 1 MiB model layer), "
        f"{fleets['registry_cpu_ms_per_update']} ms of registry CPU per update, "
        f"{fleets['nginx_cpu_us_per_idle_http_request']} µs of nginx CPU per idle HTTP request.",
        "",
        "| trucks | poll req/s | poll bytes/s HTTP | poll bytes/s HTTPS (ECDSA, full) "
        "| nginx cores HTTP / ECDSA / RSA | registry cores in a rollout | update bytes (fleet) "
        "| converge min at 100 Mbit/s / 1 Gbit/s | with a 1 MiB model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in fleets["rows"]:
        minutes = row["update_converge_minutes"]
        bigger = row["update_converge_minutes_1mib_model"]
        lines.append(
            f"| {row['trucks']:,} | {_n(row['poll_requests_per_second'])} | "
            f"{_n(row['poll_bytes_per_second_http'])} | "
            f"{_n(row['poll_bytes_per_second_https_ecdsa'])} | {row['nginx_cores_http']} / "
            f"{row['nginx_cores_https_ecdsa_full']} / {row['nginx_cores_https_rsa_full']} | "
            f"{row['registry_cores_during_rollout']} | {_n(row['update_bytes_fleet'])} | "
            f"{minutes['100_mbit']} / {minutes['1000_mbit']} | "
            f"{_n(row['update_bytes_fleet_1mib_model'])} bytes: {bigger['100_mbit']} / "
            f"{bigger['1000_mbit']} |"
        )
    lines += ["", f"Convergence model: {fleets['converge_model']}."]
    return lines

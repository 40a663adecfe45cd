"""The fleet as the depot sees it: every truck's retained status against the depot's channels.

Every truck publishes its outcome record (plugins/module_utils/outcome.py), retained, on
``linkedge/<truck>/status``, after every push run and every pull-mode sync, and its broker's
bridge forwards it to the depot's broker whenever a link exists. ``linkedge-image fleet status``
reads those retained records from the depot's broker (no SSH to any truck), the channel pointers
from the depot directory, and flags each truck:

- ``stale``: its last record is older than ``--stale-after`` (off, out of reach, or its timer
  does not run); what it says may no longer be true;
- ``behind``: it follows a channel and serves another version than the channel names now;
- ``failed``: its last run failed or rolled back (the reason says why);
- ``deferred``: its guard put the last sync off.

The records are read as they are; a truck that never published is not in the broker and so not
in the table.
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import contract

STATUS_TOPICS = f"{contract.MQTT_ROOT}/+/{contract.MQTT_STATUS_LEAF}"
FLAG_ORDER = ("stale", "behind", "failed", "deferred")


class FleetStatusError(RuntimeError):
    """The depot's broker or directory cannot be read; the message says why and what to do."""


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    cafile: Path | None = None  # TLS, checking the broker's certificate against this CA
    quiet_seconds: float = 1.0  # retained messages come at once: stop after this long without
    timeout: float = 10.0


def read_statuses(settings: BrokerSettings) -> tuple[dict[str, dict[str, Any]], bool]:
    """Every truck's retained status record on the broker, by truck, and whether the records
    stopped coming before ``settings.timeout`` (False: there may be more)."""
    import paho.mqtt.client as mqtt

    where = f"{settings.host}:{settings.port}"
    records: dict[str, dict[str, Any]] = {}
    events: dict[str, Any] = {"connack": None, "suback": None, "last": time.monotonic()}

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        events["connack"] = reason

    def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        events["suback"] = list(reasons)
        events["last"] = time.monotonic()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        events["last"] = time.monotonic()
        parts = message.topic.split("/")
        if len(parts) != 3 or not message.payload:  # an empty retained message clears it
            return
        try:
            record = json.loads(message.payload)
        except ValueError:
            record = {"outcome": "unreadable", "reason": "the status is not JSON"}
        if isinstance(record, dict):
            records[parts[1]] = record

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.cafile is not None:
        client.tls_set(ca_certs=str(settings.cafile), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        what = (
            "check --cafile (the CA of the broker's certificate) and --broker-host (the name in it)"
            if isinstance(exc, ssl.SSLError)
            else "pass the right --broker-host and --broker-port"
        )
        raise FleetStatusError(
            f"cannot reach the depot's MQTT broker at {where} ({reason}): {what}"
        ) from None
    deadline = time.monotonic() + settings.timeout
    try:
        while time.monotonic() < deadline and events["connack"] is None:
            client.loop(0.05)
        if events["connack"] is None:
            raise FleetStatusError(f"the MQTT broker at {where} did not answer the connection")
        if events["connack"].is_failure:
            raise FleetStatusError(
                f"the MQTT broker at {where} refused the connection ({events['connack']}): "
                "check --username and --password-file"
            )
        client.subscribe(STATUS_TOPICS, qos=1)
        while time.monotonic() < deadline and events["suback"] is None:
            client.loop(0.05)
        refused = [r for r in events["suback"] or [] if r.is_failure]
        if events["suback"] is None or refused:
            raise FleetStatusError(
                f"the MQTT broker at {where} refused the subscription to {STATUS_TOPICS} "
                f"({refused[0] if refused else 'no answer'}): use a depot_observer user"
            )
        complete = False
        while time.monotonic() < deadline:
            client.loop(0.05)
            if time.monotonic() - events["last"] >= settings.quiet_seconds:
                complete = True
                break
    finally:
        client.disconnect()
    return records, complete


def channel_versions(depot: Path) -> dict[str, str]:
    """The version each channel in the depot names now."""
    from .channels import ChannelError, show

    if not (depot / contract.CHANNELS_DIR).is_dir():
        raise FleetStatusError(f"{depot} has no {contract.CHANNELS_DIR}/: pass the depot")
    try:
        channels = show(depot)["channels"]
    except ChannelError as exc:
        raise FleetStatusError(str(exc)) from None
    return {name: entry["pointer"]["version"] for name, entry in channels.items()}


def fleet_rows(
    records: dict[str, dict[str, Any]],
    channels: dict[str, str],
    now: float,
    stale_after: float,
) -> list[dict[str, Any]]:
    """One row per truck, sorted by truck, with its flags."""
    rows = []
    for truck in sorted(records):
        record = records[truck]
        finished = record.get("finished_at")
        age = now - float(finished) if isinstance(finished, (int, float)) else None
        channel = record.get("channel")
        wanted = channels.get(channel) if channel else None
        outcome = record.get("outcome")
        flags = {
            "stale": age is None or age > stale_after,
            "behind": wanted is not None and record.get("serving_version") != wanted,
            "failed": outcome in ("failed", "rolled_back", "unreadable"),
            "deferred": outcome == "deferred",
        }
        rows.append(
            {
                "truck": truck,
                "serving_version": record.get("serving_version"),
                "channel": channel,
                "channel_version": wanted,
                "outcome": outcome,
                "reason": record.get("reason"),
                "age_seconds": None if age is None else round(age, 1),
                "flags": [flag for flag in FLAG_ORDER if flags[flag]],
            }
        )
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"trucks": len(rows), **{flag: 0 for flag in FLAG_ORDER}}
    for row in rows:
        for flag in row["flags"]:
            counts[flag] += 1
    counts["ok"] = sum(1 for row in rows if not row["flags"])
    return counts


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def format_table(rows: list[dict[str, Any]]) -> str:
    line = "{:<18} {:<22} {:<10} {:<22} {:<12} {:>7}  {}"
    lines = [line.format("TRUCK", "SERVING", "CHANNEL", "CHANNEL WANTS", "LAST", "AGE", "FLAGS")]
    for row in rows:
        flags = ",".join(row["flags"]) or "ok"
        if row["reason"] and ("failed" in row["flags"] or "deferred" in row["flags"]):
            flags += f": {str(row['reason'])[:70]}"
        lines.append(
            line.format(
                row["truck"],
                row["serving_version"] or "-",
                row["channel"] or "(push)",
                row["channel_version"] or "-",
                row["outcome"] or "-",
                _age(row["age_seconds"]),
                flags,
            )
        )
    counts = summary(rows)
    lines.append(
        f"{counts['trucks']} trucks: {counts['ok']} ok, "
        + ", ".join(f"{counts[flag]} {flag}" for flag in FLAG_ORDER)
    )
    return "\n".join(lines)

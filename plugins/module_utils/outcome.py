# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""The one outcome record of a truck: what a rollout, a rollback, site.yml or a pull-mode sync
did to it.

Built on the truck by linkedge.edge.outcome_record from the results of the inference_service
role's steps (and, in pull mode, what the edge_manager's sync saw before the role: the guard,
the channel pointer, the download), kept there (the last attempt survives being offline),
published once with set_stats as ``linkedge_outcome`` and retained on the truck's MQTT status
topic, and read by the rollout_report callback and status.yml. Standard library only (the
callback imports it on the controller).
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.linkedge.edge.plugins.module_utils.channel_pointer import (
    write_atomically,
)

STATS_KEY = "linkedge_outcome"
# A play variable: this play applies releases, report it even when no truck made a record.
REPORT_PLAY_VAR = "linkedge_outcome_report"
DEFAULT_STATE_FILE = "/var/lib/linkedge/last-outcome.json"

# Every outcome a record can carry; the report counts them in this order.
OUTCOMES = (
    "updated",
    "unchanged",
    "rolled_back",
    "pending",
    "failed",
    "not_reached",
    "deferred",  # pull mode: the guard said not now; nothing was changed
    "would_update",
    "would_fail",
)

# The fields of a record, in one vocabulary for every operation.
FIELDS = (
    "truck",
    "operation",  # rollout | rollback
    "outcome",
    "reason",
    "previous_version",  # served before this run
    "new_version",  # the version this run asked for
    "serving_version",  # served after this run
    "image_id",  # image ID served after this run
    "key_id",  # the release key the signature was verified with
    "bytes_transferred",
    "delta",  # only the layers the truck lacked were sent
    "changed",
    "duration_seconds",
    "serving_gap_seconds",
    "cold_start_seconds",
    "smoke_vectors_checked",
    "finished_at",
    "serving_since",  # when serving_version started serving (as far as the records know)
    "channel",  # pull mode: the channel the truck follows (null: push)
    "sequence",  # pull mode: the signed pointer's sequence this run acted on (null: a pin)
)

# Why a step failed, by the prefix of the role's task names ("Verify | ...").
STAGE_REASONS = {
    "Preflight": "cannot read the truck's state",
    "Release": "release not usable",
    "Verify": "release refused",
    "Transfer": "transfer failed",
    "Switch": "switch failed",
    "Probe": "probe failed",
}

# What Ansible says when the connection to a host is lost mid-task (SSH, docker exec, local).
TRANSPORT_LOST = (
    "unreachable",
    "module result deserialization failed",
    "failed to connect to the host",
    "data could not be sent to remote host",
    "connection reset",
    "connection timed out",
    "connection refused",
    "shared connection to",
    "broken pipe",
    "is paused",
    "is not running",
    "no such container",
    "timeout (",
)


def transport_lost(result: dict | None) -> bool:
    """The result says the host could not be reached, rather than that a step failed on it."""
    if not result:
        return False
    if result.get("unreachable"):
        return True
    text = " ".join(str(result.get(key) or "") for key in ("msg", "module_stderr", "stderr"))
    text = text.lower()
    return any(pattern in text for pattern in TRANSPORT_LOST)


def unreachable_reason(result: dict | None) -> str:
    """'unreachable: <what the connection said>': the transport's own words (e.g. SSH's or the
    Docker engine's) rather than Ansible's "Module result deserialization failed"."""
    result = result or {}
    message = str(result.get("msg") or "no answer")
    if "deserialization failed" in message.lower():
        said = str(result.get("module_stderr") or result.get("stderr") or "").strip()
        message = said.splitlines()[-1] if said else message
    return "unreachable: " + " ".join(message.split())[:300]


# A machine-readable reason (``bad_signature``), not a sentence.
REASON_CODE = re.compile(r"[a-z][a-z0-9_]*")


def _version(facts: dict | None) -> str | None:
    return (facts or {}).get("model_version") or None


def _stage_reason(failed_task: str | None, message: str) -> str:
    stage = (failed_task or "").split(" | ", 1)[0].strip()
    prefix = STAGE_REASONS.get(stage)
    return f"{prefix}: {message}" if prefix else message


def _failure_message(failure: dict) -> str:
    """The failed module's own words: its ``reason`` when that is a sentence (the switch's, with
    no "rolled back: " prefix), else its ``msg`` (release_verify and channel_verify return a
    machine-readable ``reason`` such as ``bad_signature`` beside the sentence in ``msg``)."""
    reason = str(failure.get("reason") or "")
    if REASON_CODE.fullmatch(reason) and failure.get("msg"):
        reason = ""
    message = reason or failure.get("msg") or "failed"
    return " ".join(str(message).split())


def outcome_of(steps: dict, check_mode: bool) -> tuple[str, str | None]:
    """(outcome, reason) from the results of the role's steps."""
    deferred = (steps.get("pull") or {}).get("deferred")
    if deferred:
        return "deferred", str(deferred)
    failure = steps.get("failure") or {}
    switch = steps.get("switch") or {}
    transfer = steps.get("transfer") or {}
    load = steps.get("load") or {}
    if failure:
        # A module that answered with its own reason code ran on the truck: words such as
        # "connection refused" in its message are about what it reached (a registry), not the
        # truck.
        answered = bool(REASON_CODE.fullmatch(str(failure.get("reason") or "")))
        if failure.get("unreachable") or (transport_lost(failure) and not answered):
            return "pending", unreachable_reason(failure)
        message = _failure_message(failure)
        if failure.get("outcome") == "rolled_back" or failure.get("rolled_back"):
            return "rolled_back", message
        return "failed", _stage_reason(steps.get("failed_task"), message)
    if check_mode:
        for step in (transfer, load):
            if step.get("would_fail"):
                return "would_fail", (step.get("disk_space") or {}).get("msg") or step.get("msg")
        if transfer or switch.get("changed"):
            return "would_update", None
        return "unchanged", None
    if switch.get("outcome") == "rolled_back":
        return "rolled_back", switch.get("reason")
    if switch.get("outcome") == "updated" or switch.get("changed"):
        return "updated", None
    return "unchanged", None


def _serving_since(
    outcome: str, serving_version: str | None, last: dict | None, now: float
) -> float | None:
    """When the version serving after this run started serving: now for an update, else what
    the last record said, if it named the same version."""
    if serving_version is None:
        return None
    if outcome == "updated":
        return now
    last = last or {}
    if last.get("serving_version") == serving_version:
        since = last.get("serving_since")
        return float(since) if isinstance(since, (int, float)) else None
    return None


def build_record(params: dict, check_mode: bool, now: float, last: dict | None = None) -> dict:
    """The truck's record; `params` as linkedge.edge.outcome_record takes them, `last` the
    record this one replaces (for ``serving_since``)."""
    steps = params
    release = params.get("release") or {}
    pull = params.get("pull") or {}
    before = params.get("before") or {}
    transfer = params.get("transfer") or {}
    switch = params.get("switch") or {}
    probe = params.get("probe") or {}
    outcome, reason = outcome_of(steps, check_mode)
    previous_version = _version(before.get("serving"))
    serving_before = before.get("serving") or {}
    if outcome == "updated" or (outcome == "unchanged" and switch):
        serving_version = probe.get("model_version") or switch.get("model_version")
        image_id = switch.get("image_id") or release.get("image_id")
    elif outcome == "rolled_back":
        serving_version = switch.get("previous_model_version") or (
            (params.get("failure") or {}).get("previous_model_version") or previous_version
        )
        image_id = switch.get("previous_image_id") or (params.get("failure") or {}).get(
            "previous_image_id", serving_before.get("image_id")
        )
    else:
        serving_version, image_id = previous_version, serving_before.get("image_id")
    sent = 0 if check_mode else int(transfer.get("size_bytes") or 0)
    if pull.get("bytes_fetched") is not None:  # pull mode: what came from the depot...
        pulled = int(transfer.get("size_bytes") or 0) if "layers_pulled" in transfer else 0
        sent = 0 if check_mode else int(pull["bytes_fetched"]) + pulled  # ...and its registry
    started = params.get("started")
    record = {
        "truck": params.get("truck"),
        "operation": params.get("operation") or "rollout",
        "outcome": outcome,
        "reason": reason,
        "previous_version": previous_version,
        "new_version": release.get("version"),
        "serving_version": serving_version,
        "image_id": image_id,
        "key_id": release.get("key_id"),
        "bytes_transferred": sent,
        "delta": bool(transfer) and not transfer.get("full", True),
        "changed": outcome == "updated" or bool(switch.get("changed")),
        "duration_seconds": round(now - float(started), 2) if started else None,
        "serving_gap_seconds": switch.get("serving_gap_seconds"),
        "cold_start_seconds": switch.get("cold_start_seconds"),
        "smoke_vectors_checked": int(probe.get("smoke_vectors_checked") or 0),
        "finished_at": now,
        "serving_since": _serving_since(outcome, serving_version, last, now),
        "channel": pull.get("channel") or None,
        "sequence": int(pull["sequence"]) if pull.get("sequence") else None,
    }
    return {field: record[field] for field in FIELDS}


def write_state(path: str, record: dict) -> None:
    """Write the record atomically (a power cut leaves the old file or the new one)."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    write_atomically(path, text.encode())


def _label(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(record: dict) -> str:
    """The record as the node exporter's textfile collector reads it (linkedge_truck_*)."""
    lines = []

    def metric(name: str, kind: str, text: str, samples: list) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            inner = ",".join(f'{key}="{_label(v)}"' for key, v in labels.items())
            lines.append(f"{name}{{{inner}}} {value}" if inner else f"{name} {value}")

    metric(
        "linkedge_truck_serving_info",
        "gauge",
        "The version the truck serves and the one before it, from its last outcome record.",
        [
            (
                {
                    "version": record.get("serving_version"),
                    "previous": record.get("previous_version"),
                    "channel": record.get("channel"),
                },
                1,
            )
        ],
    )
    if record.get("new_version"):  # a run that learned no version (deferred, depot down) says none
        metric(
            "linkedge_truck_wanted_info",
            "gauge",
            "The version the truck's last run was asked to serve (its channel's, in pull mode).",
            [({"version": record.get("new_version"), "channel": record.get("channel")}, 1)],
        )
    metric(
        "linkedge_truck_last_outcome",
        "gauge",
        "1 for the outcome of the truck's last rollout, rollback or sync, 0 for the others.",
        [({"outcome": name}, int(record.get("outcome") == name)) for name in OUTCOMES],
    )
    for name, field, text in (
        (
            "linkedge_truck_last_attempt_timestamp_seconds",
            "finished_at",
            "When the last run ended.",
        ),
        (
            "linkedge_truck_serving_since_timestamp_seconds",
            "serving_since",
            "Since when the serving version serves.",
        ),
        (
            "linkedge_truck_last_attempt_duration_seconds",
            "duration_seconds",
            "How long the last run took.",
        ),
        (
            "linkedge_truck_last_attempt_bytes",
            "bytes_transferred",
            "Bytes the last run brought to the truck.",
        ),
        ("linkedge_truck_sequence_seen", "sequence", "The channel pointer's sequence acted on."),
    ):
        value = record.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metric(name, "gauge", text, [({}, value)])
    return "\n".join(lines) + "\n"


def write_textfile(path: str, record: dict) -> None:
    """The record's metrics for the node exporter's textfile collector, written atomically
    (the collector reads only ``*.prom``: the temporary name is not one)."""
    if not path.endswith(".prom"):
        raise ValueError(f"{path}: the node exporter's textfile collector reads only *.prom")
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    write_atomically(path, prometheus_text(record).encode())


def read_state(path: str) -> dict | None:
    """The last record written on this truck, or None (none yet, or unreadable)."""
    try:
        with open(path, encoding="utf-8") as stream:
            record = json.load(stream)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None

# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible plugins import after DOCUMENTATION:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
name: rollout_report
type: aggregate
short_description: Writes the fleet rollout report (build/rollout-reports/<timestamp>.json)
description:
  - Collects the per-truck outcome records the role C(linkedge.edge.inference_service)
    publishes with C(set_stats) (key C(linkedge_outcome), built by
    C(linkedge.edge.outcome_record)) in C(site.yml), C(rollout.yml) and C(rollback.yml) and, at
    the end of the run (also when the failure budget stopped it), writes C(<timestamp>.json) and
    C(latest.json) in the report directory and prints a summary.
  - Trucks of the play without a record are C(pending), with a reason that starts with
    C(unreachable), when the connection to them was lost (Ansible counted them unreachable,
    or a task failed because the connection broke), C(failed) with the last error when a task
    failed on them before their record was made, C(not_reached) otherwise (the rollout stopped
    before their wave).
  - Does nothing in runs that publish no C(linkedge_outcome), unless a play sets the variable
    C(linkedge_outcome_report), as site.yml, rollout.yml and rollback.yml do; then a run whose
    trucks were all out of coverage still gets its report, every truck C(pending).
  - In check mode the report is written as C(<timestamp>-check.json) and C(latest.json) is kept.
requirements:
  - enable it with C(callbacks_enabled = linkedge.edge.rollout_report) in ansible.cfg
    (or C(ANSIBLE_CALLBACKS_ENABLED))
options:
  report_dir:
    description: Directory of the reports (default C(build/rollout-reports) under the directory
      C(ansible-playbook) runs from).
    type: path
    env:
      - name: LINKEDGE_ROLLOUT_REPORT_DIR
"""

import datetime
import json
import os
import time

from ansible.plugins.callback import CallbackBase
from ansible_collections.linkedge.edge.plugins.module_utils.outcome import (
    OUTCOMES,
    REPORT_PLAY_VAR,
    STATS_KEY,
    transport_lost,
    unreachable_reason,
)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "linkedge.edge.rollout_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._basedir = os.getcwd()
        self._hosts: list[str] = []
        self._unreachable: dict[str, dict] = {}  # host -> the result that lost the connection
        self._failed: dict[str, dict] = {}  # host -> its last failed result
        self._reporting = False
        self._playbook = ""
        self._started = time.time()
        self._check = False

    def v2_runner_on_unreachable(self, result) -> None:
        self._unreachable[result._host.get_name()] = dict(result._result)

    def v2_runner_on_ok(self, result) -> None:
        # A connection check tolerated with failed_when: false (rollout.yml's ping).
        if result._result.get("failed_when_result") is False and transport_lost(result._result):
            self._unreachable[result._host.get_name()] = dict(result._result)

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        if not ignore_errors:
            self._failed[result._host.get_name()] = dict(result._result)

    def v2_playbook_on_start(self, playbook) -> None:
        self._playbook = os.path.basename(getattr(playbook, "_file_name", "") or "")
        self._started = time.time()

    def v2_playbook_on_play_start(self, play) -> None:
        # Plays that apply releases say so (site, rollout, rollback): they get a report even
        # when no truck could make a record (all out of coverage).
        play_vars = getattr(play, "vars", None) or {}
        self._reporting = self._reporting or bool(play_vars.get(REPORT_PLAY_VAR))
        self._check = bool(getattr(play, "check_mode", False))
        try:
            from ansible import context

            self._check = self._check or bool(context.CLIARGS.get("check"))
        except Exception:  # the report must never break a run
            pass
        inventory = play.get_variable_manager()._inventory
        for host in inventory.get_hosts(play.hosts, ignore_restrictions=True):
            if host.name not in self._hosts:
                self._hosts.append(host.name)

    def _report_dir(self) -> str:
        try:
            configured = self.get_option("report_dir")
        except KeyError:
            configured = None
        if configured:
            return configured
        return os.path.join(self._basedir, "build", "rollout-reports")

    def _without_record(self, host: str, stats) -> dict:
        """The record of a truck that made none: cut off, failed early, or never reached."""
        failed = self._failed.get(host)
        if host in self._unreachable or stats.summarize(host).get("unreachable"):
            reason = unreachable_reason(self._unreachable.get(host))
            return {"truck": host, "outcome": "pending", "reason": reason}
        if failed is not None and transport_lost(failed):
            return {
                "truck": host,
                "outcome": "pending",
                "reason": unreachable_reason(failed),
            }
        if failed is not None or stats.summarize(host).get("failures"):
            message = " ".join(str((failed or {}).get("msg") or "failed").split())[:500]
            return {"truck": host, "outcome": "failed", "reason": message}
        return {
            "truck": host,
            "outcome": "not_reached",
            "reason": "the rollout stopped before this truck's wave",
        }

    def v2_playbook_on_stats(self, stats) -> None:
        records = dict((stats.custom.get("_run") or {}).get(STATS_KEY) or {})
        if not records and not self._reporting:
            return
        trucks = {}
        for host in self._hosts or sorted(records):
            trucks[host] = dict(records.get(host) or {}) or self._without_record(host, stats)
        counts = {outcome: 0 for outcome in OUTCOMES}
        for record in trucks.values():
            outcome = record.get("outcome", "failed")
            counts[outcome] = counts.get(outcome, 0) + 1
        finished = time.time()
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        report = {
            "playbook": self._playbook,
            "started": datetime.datetime.fromtimestamp(self._started, datetime.UTC).isoformat(),
            "finished": datetime.datetime.fromtimestamp(finished, datetime.UTC).isoformat(),
            "duration_seconds": round(finished - self._started, 2),
            "check_mode": self._check,
            "counts": counts,
            "bytes_transferred": sum(int(r.get("bytes_transferred") or 0) for r in trucks.values()),
            "trucks": trucks,
        }
        directory = self._report_dir()
        try:
            os.makedirs(directory, exist_ok=True)
            name = f"{stamp}{'-check' if self._check else ''}.json"
            path = os.path.join(directory, name)
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(report, handle, indent=2, sort_keys=True)
            if not self._check:
                latest = os.path.join(directory, "latest.json")
                with open(latest + ".tmp", "w", encoding="utf-8") as handle:
                    json.dump(report, handle, indent=2, sort_keys=True)
                os.replace(latest + ".tmp", latest)
        except OSError as exc:
            self._display.warning(f"rollout report not written to {directory}: {exc}")
            path = None
        self._display.banner("LINKEDGE ROLLOUT REPORT")
        for host, record in trucks.items():
            line = (
                f"{host}: {record.get('outcome')} {record.get('previous_version') or '-'} -> "
                f"{record.get('new_version') or '-'}"
            )
            if record.get("bytes_transferred"):
                line += f", {int(record['bytes_transferred'])} bytes sent"
            if record.get("duration_seconds") is not None:
                line += f", {record['duration_seconds']} s"
            if record.get("reason") and record.get("outcome") not in ("updated", "unchanged"):
                line += f" ({record['reason']})"
            self._display.display(line)
        summary = ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count)
        self._display.display(f"{summary} in {report['duration_seconds']} s; report: {path}")

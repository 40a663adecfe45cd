# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Jinja filter alert_for: LinkEdge's alert rules with chosen `for:` durations, so a depot (or a
scenario that cannot wait ten minutes) changes how long a condition must hold without keeping a
second copy of the rules."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def alert_for(rules: Mapping, durations: Mapping) -> dict:
    if not isinstance(rules, Mapping) or not isinstance(rules.get("groups"), list):
        raise AnsibleFilterError(
            "linkedge.edge.alert_for: the input must be a Prometheus rule file (a mapping with "
            f"`groups`), not {type(rules).__name__}"
        )
    if not isinstance(durations, Mapping):
        raise AnsibleFilterError(
            "linkedge.edge.alert_for: give the durations as a mapping of alert name to "
            "duration, e.g. {LinkEdgeDriftAboveThreshold: 2m}"
        )
    changed = copy.deepcopy(dict(rules))
    known = set()
    for group in changed["groups"]:
        for rule in group.get("rules", []):
            name = rule.get("alert")
            if name is None:
                continue
            known.add(name)
            if name in durations:
                duration = str(durations[name])
                if not DURATION.match(duration):
                    raise AnsibleFilterError(
                        f"linkedge.edge.alert_for: {name}: {duration!r} is not a Prometheus "
                        "duration (e.g. 30s, 2m, 1h)"
                    )
                rule["for"] = duration
    unknown = sorted(set(durations) - known)
    if unknown:
        raise AnsibleFilterError(
            f"linkedge.edge.alert_for: no alert rule named {', '.join(unknown)}; the rules "
            f"are {', '.join(sorted(known))}"
        )
    return changed


class FilterModule:
    def filters(self) -> dict:
        return {"alert_for": alert_for}

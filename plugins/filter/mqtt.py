# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Jinja filter mqtt_topic: the roles' MQTT topic names, from the one contract module."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.linkedge.edge.plugins.module_utils.contract import mqtt_topic as _topic


def mqtt_topic(truck: str, leaf: str) -> str:
    try:
        return _topic(str(truck), str(leaf))
    except ValueError as exc:
        raise AnsibleFilterError(f"linkedge.edge.mqtt_topic: {exc}") from None


class FilterModule:
    def filters(self) -> dict:
        return {"mqtt_topic": mqtt_topic}

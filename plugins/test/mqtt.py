# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Jinja test mqtt_truck_id: a truck id fits one MQTT topic level (the contract's pattern)."""

from __future__ import annotations

import re

from ansible_collections.linkedge.edge.plugins.module_utils.contract import MQTT_TRUCK_PATTERN


def mqtt_truck_id(value) -> bool:
    return isinstance(value, str) and re.fullmatch(MQTT_TRUCK_PATTERN, value) is not None


class TestModule:
    def tests(self) -> dict:
        return {"mqtt_truck_id": mqtt_truck_id}

# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Jinja filter registry_reference: where a release's image is in a registry, from the contract
module, so the builder's push and a truck's pull name the same reference."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    DEFAULT_ARCHITECTURE,
)
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    registry_reference as contract_registry_reference,
)


def registry_reference(release: Mapping, registry: str) -> str:
    if not isinstance(release, Mapping) or not release.get("version"):
        raise AnsibleFilterError(
            "linkedge.edge.registry_reference: the input must be a release record with a "
            f"version (a release's manifest.json), not {release!r}"
        )
    if not str(registry).strip("/"):
        raise AnsibleFilterError(
            "linkedge.edge.registry_reference: name the registry as host:port "
            "(inference_service_registry or image_builder_registry)"
        )
    try:
        return contract_registry_reference(
            str(registry),
            str(release.get("image") or ""),
            str(release["version"]),
            str(release.get("architecture") or DEFAULT_ARCHITECTURE),
        )
    except ValueError as exc:
        raise AnsibleFilterError(f"linkedge.edge.registry_reference: {exc}") from None


class FilterModule:
    def filters(self) -> dict:
        return {"registry_reference": registry_reference}

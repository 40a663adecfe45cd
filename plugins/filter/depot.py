# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Jinja filter depot_path: where a depot keeps a channel's pointer, its signature and a
release's manifest, from the contract module that `linkedge-image channel` writes them with."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    SIGNATURE_SUFFIX,
    channel_pointer_path,
    release_manifest_path,
)

KINDS = {
    "pointer": channel_pointer_path,
    "signature": lambda channel: channel_pointer_path(channel) + SIGNATURE_SUFFIX,
    "manifest": release_manifest_path,
}


def depot_path(name: str, kind: str) -> str:
    if kind not in KINDS:
        raise AnsibleFilterError(
            f"linkedge.edge.depot_path: unknown kind {kind!r}; use one of {', '.join(KINDS)}"
        )
    if not str(name) or "/" in str(name):
        raise AnsibleFilterError(
            f"linkedge.edge.depot_path: {name!r} is not a channel name or a version"
        )
    return KINDS[kind](str(name))


class FilterModule:
    def filters(self) -> dict:
        return {"depot_path": depot_path}

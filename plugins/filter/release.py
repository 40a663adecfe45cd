# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Jinja filters release_for (a release record as a truck of one architecture reads it: its
image, archive and image ID those of that architecture's image) and image_tag (a release
image's tag for an architecture), from the contract module, so the builder, the controller, a
pulling truck and release_verify name and choose the same image."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    image_tag as contract_image_tag,
)
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    manifest_for_architecture,
    no_image_message,
)


def image_tag(version: str, architecture: str) -> str:
    try:
        return contract_image_tag(str(version), str(architecture or ""))
    except ValueError as exc:
        raise AnsibleFilterError(f"linkedge.edge.image_tag: {exc}") from None


def release_for(release: Mapping, architecture: str) -> dict:
    if not isinstance(release, Mapping) or not release.get("version"):
        raise AnsibleFilterError(
            "linkedge.edge.release_for: the input must be a release record with a version (a "
            f"release's manifest.json), not {release!r}"
        )
    try:
        chosen = manifest_for_architecture(dict(release), str(architecture or ""))
    except ValueError as exc:
        raise AnsibleFilterError(f"linkedge.edge.release_for: {exc}") from None
    if chosen is None:
        raise AnsibleFilterError(no_image_message(dict(release), architecture))
    return chosen


class FilterModule:
    def filters(self) -> dict:
        return {"release_for": release_for, "image_tag": image_tag}

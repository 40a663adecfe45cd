# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Jinja filters release_for (a release record as a truck of one architecture reads it: its
image, archive and image ID those of that architecture's image), no_image_reason (why a release
cannot go onto a truck of that architecture, '' when it can) and image_tag (a release
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


def _chosen(release: Mapping, architecture: str, caller: str) -> dict | None:
    if not isinstance(release, Mapping) or not release.get("version"):
        raise AnsibleFilterError(
            f"linkedge.edge.{caller}: the input must be a release record with a version (a "
            f"release's manifest.json), not {release!r}"
        )
    try:
        return manifest_for_architecture(dict(release), str(architecture or ""))
    except ValueError as exc:
        raise AnsibleFilterError(f"linkedge.edge.{caller}: {exc}") from None


def release_for(release: Mapping, architecture: str) -> dict:
    chosen = _chosen(release, architecture, "release_for")
    if chosen is None:
        raise AnsibleFilterError(no_image_message(dict(release), architecture))
    return chosen


def no_image_reason(release: Mapping, architecture: str) -> str:
    """'' when RELEASE has an image for ARCHITECTURE, else why not and what to do: an assert's
    fail_msg, so a refusal reads as the sentence alone (a filter's error is prefixed by
    Ansible's own words about the task's arguments)."""
    if _chosen(release, architecture, "no_image_reason") is not None:
        return ""
    return no_image_message(dict(release), architecture)


class FilterModule:
    def filters(self) -> dict:
        return {
            "release_for": release_for,
            "no_image_reason": no_image_reason,
            "image_tag": image_tag,
        }

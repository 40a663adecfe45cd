# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible plugins import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
name: release_key
short_description: A trusted release key given as its text or as a file on the controller
version_added: 0.5.0
description:
  - Returns the text of a trusted Ed25519 public key (C(release-signing.pub)) as the modules
    C(linkedge.edge.release_verify) and C(linkedge.edge.channel_verify) take it.
  - The term is either the key itself (PEM, or base64 of the 32 raw bytes) or the absolute
    path of a file holding it on the controller (as C(inference_service_release_public_key)
    may be set); a path is read, anything else is returned as it is; empty gives empty.
options:
  _terms:
    description: The key, or the absolute path of its file on the controller.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Verify a release with the key configured for the fleet
  linkedge.edge.release_verify:
    manifest: /var/lib/linkedge/releases/1.4.0/manifest.json
    public_key: "{{ lookup('linkedge.edge.release_key', inference_service_release_public_key) }}"
"""

RETURN = r"""
_raw:
  description: The key's text, one per term.
  type: list
  elements: str
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        keys = []
        for term in terms or []:
            text = str(term or "")
            if os.path.isabs(text) and os.path.isfile(text):
                try:
                    with open(text, encoding="utf-8") as handle:
                        text = handle.read().strip()
                except (OSError, UnicodeDecodeError) as exc:
                    raise AnsibleLookupError(
                        f"linkedge.edge.release_key: cannot read the key file {term}: {exc}"
                    ) from None
            keys.append(text)
        return keys

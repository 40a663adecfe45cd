# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible plugins import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
name: workdir
short_description: The directory ansible-playbook was started from, optionally joined with paths
version_added: 0.4.0
description:
  - Returns the controller's current working directory (where C(ansible-playbook) or
    C(ansible-runner) was started), joined with the given relative paths.
  - LinkEdge's controller-side defaults (releases, transfer cache) live there, so that a
    playbook of the installed collection keeps its files in the user's project, not inside the
    collection. Unlike C($PWD), it does not depend on the shell that started Ansible.
options:
  _terms:
    description: Relative paths to join to the working directory.
    type: list
    elements: str
    required: false
"""

EXAMPLES = r"""
- name: Where releases are looked for by default
  ansible.builtin.debug:
    msg: "{{ lookup('linkedge.edge.workdir', 'build/releases') }}"
"""

RETURN = r"""
_raw:
  description: One absolute path.
  type: list
  elements: str
"""

import os

from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [os.path.join(os.getcwd(), *[str(term) for term in terms or []])]

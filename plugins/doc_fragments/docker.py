# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""What every module that talks to the target's Docker engine shares in its documentation."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
requirements:
  - Docker SDK for Python >= 5.0 on the target (C(python3-docker) on Debian and Ubuntu)
  - a running Docker engine
attributes:
  diff_mode:
    description: Does not return a diff.
    support: none
"""

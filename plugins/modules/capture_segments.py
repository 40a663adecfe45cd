#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: capture_segments
short_description: List, receive and acknowledge the sealed segments of a capture spool
version_added: 0.6.0
description:
  - The serving container's data capture (option C(capture) of
    C(linkedge.edge.inference_container)) writes complete, immutable segments into
    C(<dir>/sealed/). This module is how C(playbooks/collect.yml) brings them home, so that no
    segment is collected twice and none partially.
  - On a truck, with O(dir) the spool, it lists the sealed segments (name, bytes, sha256) and
    the segments the spool dropped for its budget; with O(remove) it deletes the named ones,
    which the controller has received.
  - On the controller, with O(dir) a truck's collection and O(receive), it moves each fetched
    file from O(incoming) into O(dir) once its sha256 is the one the truck listed, by an
    atomic rename; a file that does not match is left in O(incoming) and reported.
options:
  dir:
    description: The spool (on a truck) or the truck's collection directory (on the controller).
    type: path
    required: true
  remove:
    description: Names of sealed segments to delete from the spool (received by the
      controller). A name that is not there is not an error (removed before).
    type: list
    elements: str
    default: []
  receive:
    description: The segments (C(name) and C(sha256), as this module listed them on the truck)
      to move from O(incoming) into O(dir).
    type: list
    elements: dict
    default: []
  incoming:
    description: Where the fetched files wait; required with O(receive).
    type: path
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Can run in check mode and report what would change without changing it.
    support: full
"""

EXAMPLES = r"""
- name: List the truck's sealed capture segments
  linkedge.edge.capture_segments:
    dir: /var/lib/linkedge/capture
  register: listing

- name: Receive the fetched segments on the controller
  linkedge.edge.capture_segments:
    dir: "build/capture/{{ inventory_hostname }}"
    incoming: "build/capture/{{ inventory_hostname }}/.incoming"
    receive: "{{ listing.segments }}"
  delegate_to: localhost
  register: received

- name: Delete the received segments from the truck
  linkedge.edge.capture_segments:
    dir: /var/lib/linkedge/capture
    remove: "{{ received.received }}"
"""

RETURN = r"""
segments:
  description: The sealed segments in O(dir)/C(sealed) (on a truck), oldest first.
  returned: when neither O(remove) nor O(receive) is set
  type: list
  elements: dict
  sample: [{"name": "01796243000000000000-4211-01796242700000000000.jsonl", "bytes": 1048612,
            "sha256": "9f2c..."}]
dropped:
  description: Segments and bytes the spool deleted, oldest first, to stay within its budget.
  returned: when neither O(remove) nor O(receive) is set
  type: dict
  sample: {"segments": 0, "bytes": 0}
removed:
  description: The names deleted from the spool (would be, in check mode).
  returned: with O(remove)
  type: list
  elements: str
received:
  description: The names now in O(dir) with the sha256 the truck listed (received now or before).
  returned: with O(receive)
  type: list
  elements: str
mismatched:
  description: Names whose fetched file does not have the listed sha256 (left in O(incoming)).
  returned: with O(receive)
  type: list
  elements: str
missing:
  description: Names with no fetched file in O(incoming) (the spool dropped them for its budget
    between the listing and the fetch).
  returned: with O(receive)
  type: list
  elements: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    CAPTURE_DROPPED_FILE,
    CAPTURE_SEALED_DIR,
    CAPTURE_SEGMENT_SUFFIX,
    sha256_file,
)


def segment_name(module: AnsibleModule, name: str) -> str:
    if not name.endswith(CAPTURE_SEGMENT_SUFFIX) or "/" in name or name.startswith("."):
        module.fail_json(
            msg=f"{name!r} is not a capture segment's name (<digits>-...{CAPTURE_SEGMENT_SUFFIX}, "
            "no directory): pass the names this module listed"
        )
    return name


def listing(directory: str) -> dict:
    sealed = os.path.join(directory, CAPTURE_SEALED_DIR)
    segments = []
    if os.path.isdir(sealed):
        for name in sorted(os.listdir(sealed)):
            path = os.path.join(sealed, name)
            if name.endswith(CAPTURE_SEGMENT_SUFFIX) and os.path.isfile(path):
                try:
                    segments.append(
                        {"name": name, "bytes": os.path.getsize(path), "sha256": sha256_file(path)}
                    )
                except FileNotFoundError:  # dropped for the budget meanwhile
                    continue
    try:
        with open(os.path.join(directory, CAPTURE_DROPPED_FILE)) as handle:
            counts = json.load(handle)
        dropped = {"segments": int(counts["segments"]), "bytes": int(counts["bytes"])}
    except (OSError, ValueError, KeyError, TypeError):
        dropped = {"segments": 0, "bytes": 0}
    return {"segments": segments, "dropped": dropped}


def remove(module: AnsibleModule, directory: str, names: list) -> dict:
    removed = []
    names = [segment_name(module, name) for name in names]  # all checked before any delete
    for name in names:
        path = os.path.join(directory, CAPTURE_SEALED_DIR, name)
        if os.path.exists(path):
            if not module.check_mode:
                os.unlink(path)
            removed.append(name)
    return {"changed": bool(removed), "removed": removed}


def receive(module: AnsibleModule, directory: str, incoming: str, wanted: list) -> dict:
    received, mismatched, missing, changed = [], [], [], False
    if not module.check_mode:
        os.makedirs(directory, exist_ok=True)
    for segment in wanted:
        name = segment_name(module, str(segment.get("name", "")))
        expected = str(segment.get("sha256", ""))
        target = os.path.join(directory, name)
        fetched = os.path.join(incoming, name)
        if os.path.isfile(target) and sha256_file(target) == expected:
            received.append(name)  # received before: never twice
            if os.path.exists(fetched) and not module.check_mode:
                os.unlink(fetched)  # fetched again before the truck deleted it
                changed = True
            continue
        if not os.path.isfile(fetched):
            missing.append(name)  # not fetched: dropped for the budget after it was listed
            continue
        if sha256_file(fetched) != expected:
            mismatched.append(name)
            continue
        if not module.check_mode:
            os.replace(fetched, target)  # same file system: atomic, never a partial segment
        received.append(name)
        changed = True
    return {
        "changed": changed,
        "received": received,
        "mismatched": mismatched,
        "missing": missing,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type="path", required=True),
            remove=dict(type="list", elements="str", default=[]),
            receive=dict(type="list", elements="dict", default=[]),
            incoming=dict(type="path"),
        ),
        mutually_exclusive=[("remove", "receive")],
        supports_check_mode=True,
    )
    params = module.params
    if params["receive"]:
        if not params["incoming"]:
            module.fail_json(msg="receive needs incoming: the directory the files were fetched to")
        module.exit_json(**receive(module, params["dir"], params["incoming"], params["receive"]))
    if params["remove"]:
        module.exit_json(**remove(module, params["dir"], params["remove"]))
    module.exit_json(changed=False, **listing(params["dir"]))


if __name__ == "__main__":
    main()

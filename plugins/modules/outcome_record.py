#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: outcome_record
short_description: Build and keep a truck's outcome record of a rollout, rollback or sync
version_added: 0.4.0
description:
  - Turns the results of the C(linkedge.edge.inference_service) role's steps (release
    verification, transfer, load, switch, probe, or the failure that stopped them) into the one
    outcome record LinkEdge reports per truck, in one vocabulary for C(site.yml),
    C(rollout.yml), C(rollback.yml) and the pull-mode sync (C(linkedge.edge.sync)).
  - The outcome is one of C(updated), C(unchanged), C(rolled_back), C(failed), C(pending) (the
    connection was lost mid-run, so the truck was not reached; a rerun catches it up),
    C(would_update) or C(would_fail) (check mode), and in pull mode C(deferred) (the truck's
    guard said not now; nothing changed).
  - C(serving_since) is carried over from the last record while the same version serves, so the
    record says how long the truck has served its version, not only when it was last checked.
  - Writes the record atomically to O(state_file) on the truck, so the last attempt and its
    outcome survive a lost link and are read back by C(linkedge.edge.edge_facts)
    (C(last_outcome)). Keeping that file is bookkeeping, not configuration, so the module never
    reports C(changed); the record's own C(changed) says whether the truck changed.
  - The role publishes the record once with C(set_stats) as C(linkedge_outcome); the callback
    C(linkedge.edge.rollout_report) and C(playbooks/status.yml) read it.
options:
  truck:
    description: The truck's name in the inventory.
    type: str
    required: true
  operation:
    description: What the run did.
    type: str
    choices: [rollout, rollback]
    default: rollout
  release:
    description: The release the run asked for, as C(linkedge.edge.release_verify) returned it
      (C(version), C(image_id), C(key_id)); for a rollback, the previous version and image ID.
    type: dict
    default: {}
  before:
    description: C(linkedge.edge.edge_facts) as read before the run (C(serving), C(previous)).
    type: dict
    default: {}
  transfer:
    description: The result of C(linkedge.edge.image_delta), when the image was sent.
    type: dict
    default: {}
  load:
    description: The result of C(linkedge.edge.image_load), when the image was loaded.
    type: dict
    default: {}
  switch:
    description: The result of C(linkedge.edge.inference_container).
    type: dict
    default: {}
  probe:
    description: The result of C(linkedge.edge.inference_probe).
    type: dict
    default: {}
  failure:
    description: The failed step's result (C(ansible_failed_result)), when a step failed.
    type: dict
    default: {}
  failed_task:
    description: The failed task's name (C(ansible_failed_task.name)); its prefix before
      C( | ) names the stage (C(Verify), C(Transfer), C(Switch), ...) in the reason.
    type: str
  started:
    description: When the run started on this truck (seconds since the epoch).
    type: float
  pull:
    description:
      - Set by the C(linkedge.edge.edge_manager) sync (pull mode); empty in push mode.
    type: dict
    default: {}
    suboptions:
      channel:
        description: The channel the truck follows (the record's C(channel)).
        type: str
      sequence:
        description: The signed pointer's sequence the sync acted on (the record's
          C(sequence)); none for a pinned version.
        type: int
      bytes_fetched:
        description: Bytes downloaded from the depot in this sync; the record's
          C(bytes_transferred) in pull mode.
        type: int
      deferred:
        description: Why the guard deferred the sync; the outcome is then C(deferred) with this
          as its reason.
        type: str
  state_file:
    description: Where the truck keeps its last record.
    type: path
    default: /var/lib/linkedge/last-outcome.json
  textfile:
    description:
      - Also write the record as metrics (C(linkedge_truck_serving_info) with the serving and
        previous versions and the channel, C(linkedge_truck_last_outcome), the last attempt's
        time, duration and bytes, C(linkedge_truck_serving_since_timestamp_seconds), the
        sequence seen) to this C(*.prom) file, atomically, for the node exporter's textfile
        collector (Debian's C(prometheus-node-exporter) reads
        C(/var/lib/prometheus/node-exporter/)). Omit for none.
    type: path
author:
  - LinkEdge developers (@linkedge)
seealso:
  - module: linkedge.edge.edge_facts
  - module: linkedge.edge.inference_container
attributes:
  check_mode:
    description: Builds the record (C(would_update), C(would_fail) or C(unchanged)) and writes
      nothing in check mode.
    support: full
  diff_mode:
    description: Does not return a diff.
    support: none
"""

EXAMPLES = r"""
- name: Record what the switch did
  linkedge.edge.outcome_record:
    truck: "{{ inventory_hostname }}"
    release: "{{ verified.manifest }}"
    before: "{{ ansible_facts.linkedge }}"
    switch: "{{ switched }}"
    probe: "{{ probed }}"
  register: outcome

- name: Publish it for the run's report
  ansible.builtin.set_stats:
    data:
      linkedge_outcome: "{{ {inventory_hostname: outcome.record} }}"
"""

RETURN = r"""
record:
  description: The truck's outcome record.
  type: dict
  returned: always
  sample:
    truck: truck-1
    operation: rollout
    outcome: updated
    reason: null
    previous_version: aps-xgb-1a2b3c4d5e6f
    new_version: aps-xgb-cc371a1c6355
    serving_version: aps-xgb-cc371a1c6355
    image_id: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    key_id: f2154f5cd3b3e8e9a1f8b1f7a3d0c1e2b4a5c6d7e8f90123456789abcdef0123
    bytes_transferred: 184320
    delta: true
    changed: true
    duration_seconds: 6.41
    serving_gap_seconds: 0.0
    cold_start_seconds: 0.31
    smoke_vectors_checked: 30
    finished_at: 1795000000.0
    serving_since: 1795000000.0
    channel: null
    sequence: null
state_file:
  description: Where the record was written (not written in check mode).
  type: str
  returned: always
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linkedge.edge.plugins.module_utils.outcome import (
    DEFAULT_STATE_FILE,
    build_record,
    read_state,
    write_state,
    write_textfile,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            truck=dict(type="str", required=True),
            operation=dict(type="str", choices=["rollout", "rollback"], default="rollout"),
            release=dict(type="dict", default={}),
            before=dict(type="dict", default={}),
            transfer=dict(type="dict", default={}),
            load=dict(type="dict", default={}),
            switch=dict(type="dict", default={}),
            probe=dict(type="dict", default={}),
            failure=dict(type="dict", default={}),
            failed_task=dict(type="str"),
            started=dict(type="float"),
            pull=dict(
                type="dict",
                default={},
                options=dict(
                    channel=dict(type="str"),
                    sequence=dict(type="int"),
                    bytes_fetched=dict(type="int"),
                    deferred=dict(type="str"),
                ),
            ),
            state_file=dict(type="path", default=DEFAULT_STATE_FILE),
            textfile=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    last = read_state(module.params["state_file"])
    record = build_record(module.params, module.check_mode, time.time(), last)
    if not module.check_mode:
        try:
            write_state(module.params["state_file"], record)
        except OSError as exc:
            module.warn(
                f"outcome not kept in {module.params['state_file']}: {exc}; the run's report "
                "still has it"
            )
        if module.params["textfile"]:
            try:
                write_textfile(module.params["textfile"], record)
            except (OSError, ValueError) as exc:
                module.warn(f"outcome metrics not written to {module.params['textfile']}: {exc}")
    module.exit_json(changed=False, record=record, state_file=module.params["state_file"])


if __name__ == "__main__":
    main()

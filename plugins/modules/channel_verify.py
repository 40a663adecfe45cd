#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: channel_verify
short_description: Verify a signed LinkEdge channel pointer on the target and refuse replays
version_added: 0.5.0
description:
  - Checks a channel pointer (C(<depot>/channels/<channel>.json), written by
    C(linkedge-image channel publish|promote|rollback)) and its detached signature
    (C(<channel>.json.sig), the release signature format) on the target, in this order - a
    trusted key that is not revoked signed the pointer's exact bytes; the pointer is well
    formed; it is for O(channel), the channel this truck follows; its C(sequence) is not lower
    than the highest this truck has accepted for that channel.
  - The highest accepted sequence of each channel is kept in O(state_file) on the target,
    replaced atomically, and only after every check passed and never in check mode. An equal
    sequence is accepted only when the pointer's bytes are identical to the accepted one's (the
    same pointer fetched again, C(changed=false)); an equal sequence with other content is
    refused.
  - The pointer names the release (RV(version), RV(manifest_path) relative to the depot's root,
    RV(manifest_sha256)); verify the release's manifest with M(linkedge.edge.release_verify)
    and its O(linkedge.edge.release_verify#module:manifest_sha256) set to RV(manifest_sha256).
  - Every refusal is a failure whose C(msg) says what was wrong and what to do and whose
    RV(reason) says it for machines - V(missing) (pointer or signature not on the target),
    V(malformed), V(bad_signature) (altered, or no trusted key verifies it), V(unknown_key)
    (signed by a key that is not trusted), V(revoked_key), V(bad_trust) (the trusted keys
    given are unusable), V(wrong_channel), V(replayed) (a lower sequence than one already
    accepted), V(sequence_conflict) (an accepted sequence with other content), V(bad_state)
    (O(state_file) unreadable).
options:
  pointer:
    description: Path on the target of the fetched channel pointer (C(<channel>.json)).
    type: path
    required: true
  signature:
    description: Path on the target of the pointer's signature file; default O(pointer) plus
      C(.sig).
    type: path
  channel:
    description: The channel this truck follows; a pointer for another channel is refused.
    type: str
    required: true
  state_file:
    description:
      - File on the target keeping, per channel, the highest sequence accepted (and the
        accepted pointer's sha256, version and signing key). Created with its directory when
        missing; a missing file means no pointer was accepted yet.
    type: path
    default: /var/lib/linkedge/channel-state.json
extends_documentation_fragment:
  - linkedge.edge.trust
notes:
  - In check mode every check runs, C(changed) says whether the state would change, and
    O(state_file) is not written. A pointer or signature that is not on the target yet (not
    fetched because the fetch task ran in check mode too) only gives a warning and
    RV(verified=false).
  - C(docs/channels.md) describes the pointer format, the depot layout and how to rotate and
    revoke keys.
seealso:
  - module: linkedge.edge.release_verify
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Verifies in check mode too; does not write the state file.
    support: full
  diff_mode:
    description: Does not return a diff.
    support: none
"""

EXAMPLES = r"""
- name: Fetch the channel pointer and its signature from the depot
  ansible.builtin.get_url:
    url: "https://depot.example.net/channels/stable.{{ item }}"
    dest: "/var/lib/linkedge/depot/stable.{{ item }}"
    mode: "0644"
    force: true
  loop: [json, json.sig]

- name: Verify it (signature, channel, no replay)
  linkedge.edge.channel_verify:
    pointer: /var/lib/linkedge/depot/stable.json
    channel: stable
    state_file: /var/lib/linkedge/channel-state.json
    public_keys:
      - "{{ lookup('ansible.builtin.file', 'keys/release-signing-2025.pub') }}"
      - "{{ lookup('ansible.builtin.file', 'keys/release-signing-2026.pub') }}"
    revoked_key_ids: []
  register: pointer

- name: Fetch the release's manifest the pointer names, then verify it against the pointer
  linkedge.edge.release_verify:
    manifest: "/var/lib/linkedge/releases/{{ pointer.version }}/manifest.json"
    public_keys: "{{ trusted_release_keys }}"
    manifest_sha256: "{{ pointer.manifest_sha256 }}"
"""

RETURN = r"""
verified:
  description: Whether the pointer was verified; false only in check mode when the pointer or
    its signature was not on the target yet.
  returned: always
  type: bool
channel:
  description: The pointer's channel (the one the truck follows).
  returned: when verified
  type: str
  sample: stable
version:
  description: The release version the channel points at.
  returned: when verified
  type: str
  sample: aps-xgb-1234
sequence:
  description: The pointer's sequence number.
  returned: when verified, and on a replay or sequence conflict
  type: int
  sample: 7
previous_sequence:
  description: The highest sequence this truck had accepted for the channel before this run;
    null when none.
  returned: when verified, and on a replay or sequence conflict
  type: int
  sample: 6
previous_version:
  description: The version of the pointer accepted before; null when none.
  returned: when verified
  type: str
manifest_sha256:
  description: sha256 of the release's C(manifest.json) bytes the channel points at.
  returned: when verified
  type: str
manifest_path:
  description: Path of the release's C(manifest.json) relative to the depot's root.
  returned: when verified
  type: str
  sample: releases/aps-xgb-1234/manifest.json
image_id:
  description: The release's image ID, as the pointer names it (the signed manifest decides).
  returned: when verified and the pointer names it
  type: str
pointer:
  description: Every field of the verified pointer (format, channel, sequence, version,
    manifest_sha256, manifest_path, published_at, action, previous_version, image, image_id,
    archive, archive_sha256, archive_bytes, bundle_sha256, ...).
  returned: when verified
  type: dict
pointer_sha256:
  description: sha256 of the pointer's bytes (what the signature covers).
  returned: when verified
  type: str
key_id:
  description: sha256 (hex) of the raw bytes of the trusted key that verified the signature.
  returned: when verified
  type: str
trusted_key_ids:
  description: Ids of the trusted keys that are not revoked, sorted.
  returned: when the trusted keys could be read
  type: list
  elements: str
state_file:
  description: The state file read (and written when the pointer is new).
  returned: always
  type: str
reason:
  description: Why the pointer was refused (see the description), for a later report.
  returned: on failure
  type: str
  sample: replayed
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.linkedge.edge.plugins.module_utils.channel_pointer import (
    REASON_BAD_STATE,
    accepted_state,
    is_new,
    last_accepted,
    read_state,
    verify_pointer,
    write_state,
)
from ansible_collections.linkedge.edge.plugins.module_utils.release_signature import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    REASON_MISSING,
    TRUST_ARGUMENT_SPEC,
    ReleaseRefused,
    trust_store_from_params,
)


def not_fetched_yet(module: AnsibleModule, paths: list, known: dict) -> None:
    """In check mode: warn and report unverified when the pointer or its signature was not
    fetched (the fetch ran in check mode too); never in a real run."""
    missing = [path for path in paths if not os.path.exists(path)]
    if module.check_mode and missing:
        module.warn(
            f"{', '.join(missing)} not on the target (not fetched in check mode?): "
            "the channel pointer was not verified"
        )
        module.exit_json(changed=False, verified=False, **known)


def pointer_result(pointer: dict, pointer_sha256: str, signer: str, last) -> dict:
    result = dict(
        channel=pointer["channel"],
        version=pointer["version"],
        sequence=pointer["sequence"],
        previous_sequence=last["sequence"] if last else None,
        previous_version=last.get("version") if last else None,
        manifest_sha256=pointer["manifest_sha256"],
        manifest_path=pointer["manifest_path"],
        pointer=pointer,
        pointer_sha256=pointer_sha256,
        key_id=signer,
    )
    if pointer.get("image_id"):
        result["image_id"] = pointer["image_id"]
    return result


def verify(module: AnsibleModule, known: dict) -> dict:
    """Every check in order; KNOWN collects what the failure result can report."""
    params = module.params
    signature_path = params["signature"] or params["pointer"] + ".sig"
    trust = trust_store_from_params(params)
    known["trusted_key_ids"] = trust.active_key_ids
    not_fetched_yet(module, [params["pointer"], signature_path], known)
    pointer, pointer_sha256, signer = verify_pointer(
        params["pointer"], signature_path, trust, params["channel"]
    )
    state = read_state(params["state_file"])
    last = last_accepted(state, params["channel"])
    known.update(sequence=pointer["sequence"], previous_sequence=last["sequence"] if last else None)
    changed = is_new(pointer, pointer_sha256, last, params["pointer"])
    if changed and not module.check_mode:
        accepted = accepted_state(state, pointer, pointer_sha256, signer)
        try:
            write_state(params["state_file"], accepted)
        except OSError as exc:
            raise ReleaseRefused(
                f"cannot write the channel state file {params['state_file']} ({exc}): free space "
                f"or fix its directory's permissions and sync again; the pointer was not applied",
                REASON_BAD_STATE,
            ) from None
    result = {**known, **pointer_result(pointer, pointer_sha256, signer, last)}
    result.update(changed=changed, verified=True)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            pointer=dict(type="path", required=True),
            signature=dict(type="path"),
            channel=dict(type="str", required=True),
            state_file=dict(type="path", default="/var/lib/linkedge/channel-state.json"),
            **TRUST_ARGUMENT_SPEC,
        ),
        mutually_exclusive=[("public_key", "public_key_path")],
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(
            msg=missing_required_lib("cryptography (python3-cryptography on Debian and Ubuntu)"),
            exception=CRYPTOGRAPHY_IMPORT_ERROR,
        )
    known = {"state_file": module.params["state_file"]}
    try:
        result = verify(module, known)
    except ReleaseRefused as exc:
        module.fail_json(msg=str(exc), verified=False, reason=exc.reason, **known)
    except OSError as exc:
        module.fail_json(
            msg=f"cannot read the channel pointer files: {exc}; fetch them again",
            verified=False,
            reason=REASON_MISSING,
            **known,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: release_verify
short_description: Verify a signed LinkEdge release on the target before anything is loaded
version_added: 0.3.0
description:
  - Checks the Ed25519 signature of a release's C(manifest.json) (signature file
    C(manifest.json.sig), written by C(python -m inference_image publish --signing-key) or
    C(sign)) with the trusted public keys, then the checksums of the release files present on
    the target against the signed manifest, and returns the signed manifest's fields.
  - The signature covers the exact bytes of C(manifest.json). The key id is the sha256 (hex)
    of the raw 32-byte public key; only the trusted keys decide, the key id named in the
    signature file only orders the attempts and is quoted in messages.
  - Several keys can be trusted at once, for key rotation (sign with the new key, trust both,
    retire the old one) - the signature verifies when one trusted key verifies it. A
    signature by a key listed in O(revoked_key_ids) is refused, even while that key is still
    among the trusted keys. See C(docs/channels.md) for the rotation and revocation procedure.
  - Checked against the signed manifest when given, in this order and before anything else
    reads them, O(archive) (size and sha256 against C(archive_bytes) and C(archive_sha256)) and
    O(bundle_dir) (C(SHA256SUMS) against C(bundle_sha256), then every file it lists).
  - With O(architecture), the signed manifest is returned as a truck of that architecture reads
    it - its C(image), C(image_id), C(archive), C(archive_sha256) and C(archive_bytes) those of
    that architecture's image (the manifest's C(architectures)) - and O(archive) is checked
    against that image; a release without an image for it is refused. C(linkedge.edge.release_for)
    chooses on the controller with the same code.
  - Any mismatch fails with a message saying what was wrong and what to do. The module only
    reads files, so it verifies in check mode too.
options:
  manifest:
    description: Path of the release's C(manifest.json) on the target.
    type: path
    required: true
  signature:
    description: Path of the signature file on the target; default O(manifest) plus C(.sig).
    type: path
  manifest_sha256:
    description:
      - The sha256 the manifest must have, from the channel pointer that named it
        (RV(linkedge.edge.channel_verify#module:manifest_sha256)); refused when it differs.
    type: str
  archive:
    description: Path on the target of the release's C(docker save) archive (full archive only).
    type: path
  bundle_dir:
    description: Path on the target of the release's model bundle directory (C(bundle/)).
    type: path
  architecture:
    description:
      - The truck's architecture, by any of its names (V(aarch64), V(arm64), V(linux/arm64),
        V(x86_64), V(amd64)); C(linkedge.edge.edge_facts) returns its Docker engine's.
      - Without it, the manifest's top-level image (amd64) is the one returned and checked.
    type: str
    version_added: 0.6.0
extends_documentation_fragment:
  - linkedge.edge.trust
notes:
  - Every refusal is a failure whose C(msg) says what was wrong and what to do, and whose
    C(reason) says it for machines - V(missing), V(malformed), V(bad_signature),
    V(unknown_key), V(revoked_key), V(bad_trust), V(manifest_mismatch), V(no_architecture) or
    V(altered).
  - In check mode a manifest, signature or archive that is not on the target yet (not copied
    because the copy task ran in check mode too) only gives a warning and RV(verified=false).
seealso:
  - module: linkedge.edge.image_load
  - module: linkedge.edge.channel_verify
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Read-only; verifies in check mode too.
    support: full
  diff_mode:
    description: Does not return a diff.
    support: none
"""

EXAMPLES = r"""
- name: Verify the signed manifest and the copied archive before loading it
  linkedge.edge.release_verify:
    manifest: /var/lib/linkedge/releases/aps-xgb-1234/manifest.json
    public_key: "{{ lookup('ansible.builtin.file', 'keys/release-signing.pub') }}"
    archive: /var/tmp/linkedge/linkedge_aps-classifier_aps-xgb-1234.tar
  register: verified

- name: Verify during a key rotation - trust the old and the new key, refuse a revoked one
  linkedge.edge.release_verify:
    manifest: /var/lib/linkedge/releases/aps-xgb-1234/manifest.json
    public_keys:
      - "{{ lookup('ansible.builtin.file', 'keys/release-signing-2025.pub') }}"
      - "{{ lookup('ansible.builtin.file', 'keys/release-signing-2026.pub') }}"
    revoked_key_ids:
      - 9b2e5c1d0f3a4b6c8d7e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4
    manifest_sha256: "{{ pointer.manifest_sha256 }}"

- name: Verify the release and choose this arm64 truck's image from it
  linkedge.edge.release_verify:
    manifest: /var/lib/linkedge/releases/aps-xgb-1234/manifest.json
    public_key: "{{ lookup('ansible.builtin.file', 'keys/release-signing.pub') }}"
    architecture: "{{ ansible_facts.linkedge.architecture }}"
  register: verified

- name: Load what the signed manifest names
  linkedge.edge.image_load:
    archive: /var/tmp/linkedge/{{ verified.manifest.archive }}
    sha256: "{{ verified.manifest.archive_sha256 }}"
    image_id: "{{ verified.manifest.image_id }}"
"""

RETURN = r"""
verified:
  description: Whether the signature (and the files given) were verified; false only in check
    mode when a file was not on the target yet.
  returned: always
  type: bool
key_id:
  description:
    - sha256 (hex) of the raw bytes of the trusted key that verified the signature.
    - When not verified (check mode), the id of the trusted key if only one is trusted, else
      empty.
  returned: always
  type: str
  sample: 3f1c0d5e9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e
trusted_key_ids:
  description: Ids of the trusted keys that are not revoked, sorted.
  returned: always
  type: list
  elements: str
reason:
  description: Why the release was refused (see the notes), for a later report.
  returned: on failure
  type: str
  sample: revoked_key
manifest:
  description: The signed manifest (version, image, image_id, archive, archive_sha256,
    archive_bytes, bundle_sha256, files, architectures, ...), with O(architecture) that
    architecture's image fields and C(architecture); empty when not verified.
  returned: always
  type: dict
manifest_sha256:
  description: sha256 of the manifest's bytes (what the signature covers).
  returned: when verified
  type: str
version:
  description: The signed model version.
  returned: when verified
  type: str
image_id:
  description: The signed image ID (C(sha256:...)) the archive must produce (of
    O(architecture)'s image, when given).
  returned: when verified
  type: str
architecture:
  description: The architecture whose image was chosen (V(amd64), V(arm64)).
  returned: when verified with O(architecture)
  type: str
archive_sha256:
  description: The archive's sha256, when O(archive) was checked.
  returned: when the archive was checked
  type: str
bundle_files:
  description: Bundle files checked (C(SHA256SUMS) first), when O(bundle_dir) was given.
  returned: when the bundle was checked
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    manifest_for_architecture,
    no_image_message,
)
from ansible_collections.linkedge.edge.plugins.module_utils.release_signature import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    REASON_MALFORMED,
    REASON_MISSING,
    REASON_NO_ARCHITECTURE,
    TRUST_ARGUMENT_SPEC,
    ReleaseRefused,
    check_manifest_digest,
    trust_store_from_params,
    verify_archive,
    verify_bundle,
    verify_signature,
)


def not_copied_yet(module: AnsibleModule, paths: list, trusted: list) -> None:
    """In check mode: warn and report unverified when a file was not copied (copy ran in check
    mode too); never in a real run."""
    missing = [path for path in paths if path and not os.path.exists(path)]
    if module.check_mode and missing:
        module.warn(
            f"{', '.join(missing)} not on the target (not copied in check mode?): "
            "the release was not verified"
        )
        key = trusted[0] if len(trusted) == 1 else ""
        module.exit_json(
            changed=False, verified=False, key_id=key, trusted_key_ids=trusted, manifest={}
        )


def for_architecture(manifest: dict, architecture: str) -> dict:
    """The signed manifest as a truck of ARCHITECTURE reads it (contract), or refused."""
    try:
        chosen = manifest_for_architecture(manifest, architecture)
    except ValueError as exc:
        raise ReleaseRefused(f"architecture: {exc}", REASON_MALFORMED) from None
    if chosen is None:
        raise ReleaseRefused(no_image_message(manifest, architecture), REASON_NO_ARCHITECTURE)
    return chosen


def verify(module: AnsibleModule) -> dict:
    params = module.params
    manifest_path = params["manifest"]
    signature_path = params["signature"] or manifest_path + ".sig"
    trust = trust_store_from_params(params)
    trusted = trust.active_key_ids
    not_copied_yet(module, [manifest_path, signature_path, params["archive"]], trusted)
    manifest, manifest_sha256, key = verify_signature(manifest_path, signature_path, trust)
    if params["manifest_sha256"]:
        check_manifest_digest(manifest_path, manifest_sha256, params["manifest_sha256"])
    if params["architecture"]:
        manifest = for_architecture(manifest, params["architecture"])
    result = dict(
        changed=False,
        verified=True,
        key_id=key,
        trusted_key_ids=trusted,
        manifest=manifest,
        manifest_sha256=manifest_sha256,
        version=manifest["version"],
        image_id=manifest["image_id"],
    )
    if params["architecture"]:
        result["architecture"] = manifest["architecture"]
    if params["archive"]:
        if not os.path.isfile(params["archive"]):
            raise ReleaseRefused(
                f"archive {params['archive']} is missing: copy it to the target first",
                REASON_MISSING,
            )
        result["archive_sha256"] = verify_archive(params["archive"], manifest)
    if params["bundle_dir"]:
        result["bundle_files"] = verify_bundle(params["bundle_dir"], manifest)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            manifest=dict(type="path", required=True),
            signature=dict(type="path"),
            manifest_sha256=dict(type="str"),
            archive=dict(type="path"),
            bundle_dir=dict(type="path"),
            architecture=dict(type="str"),
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
    try:
        result = verify(module)
    except ReleaseRefused as exc:
        module.fail_json(msg=str(exc), verified=False, reason=exc.reason)
    except OSError as exc:
        module.fail_json(
            msg=f"cannot read the release files: {exc}", verified=False, reason=REASON_MISSING
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()

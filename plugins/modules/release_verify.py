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
    C(sign)) with the trusted public key, then the checksums of the release files present on
    the target against the signed manifest, and returns the signed manifest's fields.
  - The signature covers the exact bytes of C(manifest.json). The key id is the sha256 (hex)
    of the raw 32-byte public key; only O(public_key) decides, the key id named in the
    signature file is only quoted in messages.
  - Checked against the signed manifest when given, in this order and before anything else
    reads them, O(archive) (size and sha256 against C(archive_bytes) and C(archive_sha256)) and
    O(bundle_dir) (C(SHA256SUMS) against C(bundle_sha256), then every file it lists).
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
  public_key:
    description:
      - The trusted Ed25519 public key, as the content of the C(release-signing.pub) written by
        C(python -m inference_image keygen) (PEM C(PUBLIC KEY)) or base64 of the 32 raw bytes.
      - Exactly one of O(public_key) and O(public_key_path) is required.
    type: str
  public_key_path:
    description: Path on the target of a file holding the trusted public key (as O(public_key)).
    type: path
  archive:
    description: Path on the target of the release's C(docker save) archive (full archive only).
    type: path
  bundle_dir:
    description: Path on the target of the release's model bundle directory (C(bundle/)).
    type: path
requirements:
  - Python cryptography >= 2.6 on the target (C(python3-cryptography) on Debian and Ubuntu)
notes:
  - In check mode a manifest, signature or archive that is not on the target yet (not copied
    because the copy task ran in check mode too) only gives a warning and RV(verified=false).
seealso:
  - module: linkedge.edge.image_load
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
  description: sha256 (hex) of the trusted public key's raw bytes.
  returned: always
  type: str
  sample: 3f1c0d5e9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e
manifest:
  description: The signed manifest (version, image, image_id, archive, archive_sha256,
    archive_bytes, bundle_sha256, files, ...); empty when not verified.
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
  description: The signed image ID (C(sha256:...)) the archive must produce.
  returned: when verified
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
from ansible_collections.linkedge.edge.plugins.module_utils.release_signature import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    ReleaseRefused,
    raw_public_key,
    verify_archive,
    verify_bundle,
    verify_signature,
)
from ansible_collections.linkedge.edge.plugins.module_utils.release_signature import (
    key_id as compute_key_id,
)


def trusted_key(module: AnsibleModule) -> str:
    path = module.params["public_key_path"]
    if not path:
        return module.params["public_key"]
    if not os.path.isfile(path):
        module.fail_json(msg=f"trusted public key file {path} not found on the target")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def not_copied_yet(module: AnsibleModule, paths: list, key: str) -> None:
    """In check mode: warn and report unverified when a file was not copied (copy ran in check
    mode too); never in a real run."""
    missing = [path for path in paths if path and not os.path.exists(path)]
    if module.check_mode and missing:
        module.warn(
            f"{', '.join(missing)} not on the target (not copied in check mode?): "
            "the release was not verified"
        )
        module.exit_json(changed=False, verified=False, key_id=key, manifest={})


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            manifest=dict(type="path", required=True),
            signature=dict(type="path"),
            public_key=dict(type="str", no_log=False),
            public_key_path=dict(type="path"),
            archive=dict(type="path"),
            bundle_dir=dict(type="path"),
        ),
        required_one_of=[("public_key", "public_key_path")],
        mutually_exclusive=[("public_key", "public_key_path")],
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(
            msg=missing_required_lib("cryptography (python3-cryptography on Debian and Ubuntu)"),
            exception=CRYPTOGRAPHY_IMPORT_ERROR,
        )
    params = module.params
    manifest_path = params["manifest"]
    signature_path = params["signature"] or manifest_path + ".sig"
    try:
        public_key = trusted_key(module)
        key = compute_key_id(raw_public_key(public_key))
        not_copied_yet(module, [manifest_path, signature_path, params["archive"]], key)
        manifest, manifest_sha256, key = verify_signature(manifest_path, signature_path, public_key)
        result = dict(
            changed=False,
            verified=True,
            key_id=key,
            manifest=manifest,
            manifest_sha256=manifest_sha256,
            version=manifest["version"],
            image_id=manifest["image_id"],
        )
        if params["archive"]:
            if not os.path.isfile(params["archive"]):
                raise ReleaseRefused(
                    f"archive {params['archive']} is missing: copy it to the target first"
                )
            result["archive_sha256"] = verify_archive(params["archive"], manifest)
        if params["bundle_dir"]:
            result["bundle_files"] = verify_bundle(params["bundle_dir"], manifest)
    except ReleaseRefused as exc:
        module.fail_json(msg=str(exc), verified=False)
    except OSError as exc:
        module.fail_json(msg=f"cannot read the release files: {exc}", verified=False)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

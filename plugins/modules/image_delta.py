#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: image_delta
short_description: Build the part of an image archive that a host lacks (on the controller)
version_added: 0.2.0
description:
  - Reads a C(docker save) archive O(archive) and drops the layer tarballs whose diff ID (the
    config's C(rootfs.diff_ids), same index as C(manifest.json) C(Layers)) is in O(have_layers),
    i.e. layers the target engine already holds. C(docker load) of such a delta on that engine
    gives the same image ID as the full archive (the engine checks every loaded layer against the
    config's diff IDs, and the image ID is the config's digest); check the loaded image ID against
    the release's C(image_id) after loading.
  - The delta is cached in O(cache_dir) under a name derived from the image and the layers kept,
    so trucks holding the same layers share one file. When the host has no layer in common, the
    full archive is returned as is (C(full=true)) with O(archive_sha256).
  - Meant to run on the controller (delegate it to C(localhost)); only the Python standard library.
options:
  archive:
    description: Path of the release's C(docker save) archive.
    type: path
    required: true
  archive_sha256:
    description: The release's archive digest (returned as C(sha256) when the full archive is used).
    type: str
    required: true
  have_layers:
    description: Diff IDs (C(sha256:...)) of every layer the target already has
      (C(docker image inspect) C(RootFS.Layers) of its images).
    type: list
    elements: str
    default: []
  cache_dir:
    description: Directory for the delta archives.
    type: path
    required: true
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Computes what would be sent without writing the delta.
    support: full
  diff_mode:
    description: Does not return a diff.
    support: none
"""

EXAMPLES = r"""
- name: Build the delta archive for this truck
  linkedge.edge.image_delta:
    archive: /srv/releases/v2/linkedge_aps-classifier_v2.tar
    archive_sha256: "{{ release.sha256 }}"
    have_layers: "{{ truck_layers }}"
    cache_dir: /srv/rollout-cache
  delegate_to: localhost
  register: delta
"""

RETURN = r"""
path:
  description: Archive to send (the delta, or the full archive when C(full)).
  returned: always
  type: str
sha256:
  description: Digest of RV(path) (null in check mode when the delta was not written yet).
  returned: always
  type: str
size_bytes:
  description: Size of RV(path) (estimated in check mode when not written yet).
  returned: always
  type: int
full:
  description: True when the host has no layer in common and the full archive is sent.
  returned: always
  type: bool
layers_total:
  description: Layers of the image.
  returned: always
  type: int
layers_sent:
  description: Layers in RV(path).
  returned: always
  type: int
"""

import hashlib
import json
import os
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule


def _read_member(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    if member is None:
        raise ValueError(f"{name} is not a file in the archive")
    return member.read()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plan(archive: str, have: set[str]) -> tuple[dict, list[str], list[str]]:
    """Return (manifest entry, layer members to keep, layer members to drop)."""
    with tarfile.open(archive, "r:") as tar:
        manifest = json.loads(_read_member(tar, "manifest.json"))
        if len(manifest) != 1:
            raise ValueError("the archive must hold exactly one image")
        entry = manifest[0]
        config = json.loads(_read_member(tar, entry["Config"]))
    diff_ids = config["rootfs"]["diff_ids"]
    layers = entry["Layers"]
    if len(diff_ids) != len(layers):
        raise ValueError("manifest.json Layers and the config's diff_ids differ in length")
    pairs = list(zip(layers, diff_ids))  # noqa: B905 - lengths checked above (Python 3.8: no strict)
    keep = [layer for layer, diff in pairs if diff not in have]
    drop = [layer for layer, diff in pairs if diff in have]
    return entry, keep, drop


def write_delta(archive: str, drop: set[str], dest: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".delta-")
    os.close(fd)
    try:
        with tarfile.open(archive, "r:") as src:  # noqa: SIM117 - Python 3.8 (ansible-test compile)
            with tarfile.open(tmp, "w:", format=tarfile.PAX_FORMAT) as out:
                for member in src:
                    if member.name in drop:
                        continue
                    data = src.extractfile(member) if member.isfile() else None
                    out.addfile(member, data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)  # atomic: concurrent forks building the same delta are harmless
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type="path", required=True),
            archive_sha256=dict(type="str", required=True),
            have_layers=dict(type="list", elements="str", default=[]),
            cache_dir=dict(type="path", required=True),
        ),
        supports_check_mode=True,
    )
    archive = module.params["archive"]
    have = set(module.params["have_layers"])
    try:
        entry, keep, drop = plan(archive, have)
    except (OSError, ValueError, KeyError, tarfile.TarError) as exc:
        module.fail_json(
            msg=f"cannot read {archive} as a docker save archive: {exc}: export it again"
        )
    result = dict(
        changed=False, full=not drop, layers_total=len(keep) + len(drop), layers_sent=len(keep)
    )
    if not drop:
        module.exit_json(
            path=archive,
            sha256=module.params["archive_sha256"].split()[0].split(":")[-1],
            size_bytes=os.path.getsize(archive),
            **result,
        )
    key = hashlib.sha256("\n".join([entry["Config"], *keep]).encode()).hexdigest()[:16]
    dest = os.path.join(module.params["cache_dir"], f"delta-{key}.tar")
    if not os.path.exists(dest):
        if module.check_mode:
            with tarfile.open(archive, "r:") as tar:
                size = sum(m.size for m in tar.getmembers() if m.name not in drop)
            module.exit_json(path=dest, sha256=None, size_bytes=size, **result)
        os.makedirs(module.params["cache_dir"], exist_ok=True)
        try:
            write_delta(archive, set(drop), dest)
        except (OSError, tarfile.TarError) as exc:
            module.fail_json(
                msg=f"cannot write {dest}: {exc}: check the free space on the controller"
            )
        result["changed"] = True
    module.exit_json(path=dest, sha256=_sha256(dest), size_bytes=os.path.getsize(dest), **result)


if __name__ == "__main__":
    main()

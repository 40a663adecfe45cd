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
  - Reads a C(docker save) archive O(archive) and drops the layer tarballs (the config's
    C(rootfs.diff_ids), same index as C(manifest.json) C(Layers)) the target engine already
    holds on top of the same layers, by chain ID (O(have_chains)); with diff IDs only
    (O(have_layers)), just the image's lowest layers held in a row. C(docker load) of such a
    delta on that engine gives the same image ID as the full archive (the engine checks every
    loaded layer against the config's diff IDs, and the image ID is the config's digest); check
    the loaded image ID against the release's C(image_id) after loading.
  - The delta is cached in O(cache_dir) under a name derived from the image and the layers kept,
    so trucks holding the same layers share one file. When the host has no layer in common, the
    full archive is returned as is (C(full=true)) with O(archive_sha256).
  - Meant to run on the controller (delegate it to C(localhost)); only the Python standard library.
  - With O(free_bytes) (the target's free space under its Docker root, as measured there, e.g.
    C(linkedge.edge.edge_facts) C(docker_root_free_bytes)), a target without room for the load is
    refused before the delta is written or anything is sent. C(docker load) unpacks the whole
    archive under the Docker root, then stores each missing layer, so the need is the archive's
    unpacked size plus the layers sent, plus O(min_free).
options:
  archive:
    description: Path of the release's C(docker save) archive.
    type: path
    required: true
  archive_sha256:
    description: The release's archive digest (returned as C(sha256) when the full archive is used).
    type: str
    required: true
  image_id:
    description:
      - The image ID (C(sha256:...)) the archive must hold, from the release's signed manifest
        (C(linkedge.edge.release_verify)). An archive whose config is another image fails before
        a delta is written or anything is sent; check the loaded image ID against it as well.
    type: str
  have_layers:
    description:
      - Diff IDs (C(sha256:...)) of every layer the target already has
        (C(docker image inspect) C(RootFS.Layers) of its images).
      - A diff ID alone does not say which layers sit below it, so only the image's lowest
        layers held in a row are dropped. Prefer O(have_chains).
    type: list
    elements: str
    default: []
  have_chains:
    description:
      - Chain IDs of every layer the target already has (C(linkedge.edge.edge_facts)
        C(chains)). A layer is dropped only when the target holds it on top of the same layers,
        as C(docker load) needs. When given, O(have_layers) is not used.
    type: list
    elements: str
    default: []
    version_added: 0.6.0
  cache_dir:
    description: Directory for the delta archives.
    type: path
    required: true
  free_bytes:
    description:
      - Free bytes under the target's Docker root (C(edge_facts) C(docker_root_free_bytes)).
      - Without it (or null) the space is not checked here; C(linkedge.edge.image_load) checks it
        again on the target before loading.
    type: int
  min_free:
    description:
      - Bytes that must stay free under the target's Docker root after the load (headroom for
        logs and containers). Accepts units, e.g. C(256M), C(1G).
    type: bytes
    default: 256M
  docker_root:
    description: The target's Docker root, only used in the refusal message.
    type: str
    default: /var/lib/docker
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Computes what would be sent without writing the delta; a target without
      room is reported (RV(would_fail)) instead of failing.
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
    have_chains: "{{ ansible_facts.linkedge.chains }}"
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
disk_space:
  description: The space check on the target (when O(free_bytes) was given).
  returned: when O(free_bytes) is given
  type: dict
  contains:
    docker_root:
      description: O(docker_root).
      type: str
    free_bytes:
      description: O(free_bytes).
      type: int
    needed_bytes:
      description: RV(disk_space.layer_bytes) + RV(disk_space.min_free_bytes).
      type: int
    layer_bytes:
      description: Peak bytes C(docker load) of RV(path) writes (unpacked archive + layers sent).
      type: int
    min_free_bytes:
      description: O(min_free).
      type: int
    enough:
      description: Whether the target has room.
      type: bool
    msg:
      description: The refusal when not RV(disk_space.enough), else null.
      type: str
would_fail:
  description: Check mode only, true when the target lacks room (a real run fails).
  returned: always
  type: bool
"""

import hashlib
import json
import os
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linkedge.edge.plugins.module_utils.disk_space import (
    check as check_space,
)
from ansible_collections.linkedge.edge.plugins.module_utils.disk_space import (
    load_need,
    read_archive,
)
from ansible_collections.linkedge.edge.plugins.module_utils.image_archive import chain_ids


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


def plan(
    archive: str, have: set[str], have_chains: set[str] | None = None
) -> tuple[dict, list[str], list[str]]:
    """Return (manifest entry, layer members to keep, layer members to drop). With HAVE_CHAINS,
    a layer is dropped when the target holds its chain ID; otherwise (diff IDs only) the
    lowest layers held in a row."""
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
    if have_chains:
        held = [chain in have_chains for chain in chain_ids(diff_ids)]
    else:
        held = []
        for diff_id in diff_ids:
            held.append(diff_id in have and all(held))
    keep = [layer for layer, dropped in zip(layers, held) if not dropped]  # noqa: B905
    drop = [layer for layer, dropped in zip(layers, held) if dropped]  # noqa: B905
    return entry, keep, drop


def _config_id(entry: dict) -> str:
    """The image ID named by a manifest entry's config (`<hex>.json` or `blobs/sha256/<hex>`)."""
    config = os.path.basename(entry.get("Config") or "")
    return "sha256:" + (config[: -len(".json")] if config.endswith(".json") else config)


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


def space_check(module: AnsibleModule, archive: str, drop: set, result: dict) -> None:
    """Refuse (or in check mode report) a target without room for loading what is sent."""
    try:
        sizes, layers, diff_ids = read_archive(archive)
    except (OSError, ValueError, KeyError, tarfile.TarError) as exc:
        module.fail_json(msg=f"cannot read {archive}: {exc}: export it again", **result)
    sent = {name: size for name, size in sizes.items() if name not in drop}
    # The engine stores every layer sent; the dropped ones it holds already (by chain ID).
    held = {chain for layer, chain in zip(layers, chain_ids(diff_ids)) if layer in drop}  # noqa: B905
    verdict = check_space(
        module.params["docker_root"],
        module.params["free_bytes"],
        load_need(sent, layers, diff_ids, held),
        module.params["min_free"],
    )
    result["disk_space"] = verdict
    if verdict["enough"]:
        return
    if module.check_mode:
        result["would_fail"] = True
        module.warn(verdict["msg"])
        return
    module.fail_json(msg=verdict["msg"], **result)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type="path", required=True),
            archive_sha256=dict(type="str", required=True),
            have_layers=dict(type="list", elements="str", default=[]),
            have_chains=dict(type="list", elements="str", default=[]),
            cache_dir=dict(type="path", required=True),
            image_id=dict(type="str"),
            free_bytes=dict(type="int"),
            min_free=dict(type="bytes", default="256M"),
            docker_root=dict(type="str", default="/var/lib/docker"),
        ),
        supports_check_mode=True,
    )
    archive = module.params["archive"]
    have = set(module.params["have_layers"])
    try:
        entry, keep, drop = plan(archive, have, set(module.params["have_chains"]))
    except (OSError, ValueError, KeyError, tarfile.TarError) as exc:
        module.fail_json(
            msg=f"cannot read {archive} as a docker save archive: {exc}: export it again"
        )
    expected = module.params["image_id"]
    if expected and _config_id(entry) != "sha256:" + expected.strip().lower().split(":")[-1]:
        module.fail_json(
            msg=f"{archive} holds image {_config_id(entry)}, the signed manifest says {expected}: "
            "the archive was altered or belongs to another release; republish the release"
        )
    result = dict(
        changed=False,
        full=not drop,
        layers_total=len(keep) + len(drop),
        layers_sent=len(keep),
        would_fail=False,
    )
    if module.params["free_bytes"] is not None:
        space_check(module, archive, set(drop), result)
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

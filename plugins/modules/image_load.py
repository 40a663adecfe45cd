#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: image_load
short_description: Load a verified C(docker save) archive when its image is absent
version_added: 0.1.0
description:
  - Loads a LinkEdge release image from a C(docker save) archive on the target, only when the
    image is not there yet, and only after the archive's sha256 matched the release's.
  - Presence is checked by O(image_id) when given, else by O(image), else by the image ID that
    the archive's C(manifest.json) names (read without loading anything).
  - A digest mismatch fails before anything is loaded.
  - So does a lack of room. Before loading, the free space under the engine's Docker root
    (C(docker info) C(DockerRootDir)) must cover what C(docker load) writes there (the archive
    unpacked, plus the layers the engine lacks) plus O(min_free); otherwise the module fails
    with the needed and free space and what to do, and nothing is loaded.
options:
  archive:
    description:
      - Path of the C(docker save) archive on the target (plain or gzip-compressed tar).
    type: path
    required: true
  sha256:
    description:
      - The expected sha256 of the archive, as published with the release.
      - Accepts C(<hex>), C(sha256:<hex>) or a C(sha256sum) line C(<hex>  <file>), so the
        content of the release's C(.sha256) file can be passed as it is.
    type: str
    required: true
  image_id:
    description:
      - The image ID (C(sha256:...)) the archive must produce. Presence is checked by it.
      - An archive that holds another image fails before it is loaded.
    type: str
  image:
    description:
      - Image name and tag (C(name:tag)) the loaded image must carry.
      - Presence is checked by it when O(image_id) is not given.
      - When the archive does not carry this tag, the loaded image is tagged with it.
    type: str
  remove_archive:
    description:
      - Delete the archive after a successful load.
    type: bool
    default: false
  timeout:
    description:
      - Seconds the Docker engine may take to answer, loading included.
    type: int
    default: 600
  min_free:
    description:
      - Bytes that must stay free under the Docker root after the load (headroom for logs and
        containers). Accepts units, e.g. C(256M), C(1G).
      - The check is skipped (with a warning) when the Docker root is not visible from the
        module, e.g. an engine on another host.
    type: bytes
    default: 256M
extends_documentation_fragment:
  - linkedge.edge.docker
notes:
  - In check mode the archive's digest is checked when the archive is there; a missing archive
    (not copied yet because the copy task ran in check mode too) only gives a warning.
  - In check mode a lack of room is reported (RV(would_fail)) instead of failing.
seealso:
  - module: linkedge.edge.inference_container
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Can run in check mode and report what would change without changing it.
    support: full
"""

EXAMPLES = r"""
- name: Load the release image
  linkedge.edge.image_load:
    archive: /var/lib/linkedge/images/linkedge_aps-classifier_1.4.0.tar
    sha256: "{{ release.sha256 }}"
    image_id: "{{ release.image_id }}"
    image: linkedge/aps-classifier:1.4.0
    remove_archive: true
  register: loaded
"""

RETURN = r"""
image_id:
  description: ID of the image (present or loaded); null in check mode when it would be loaded
    from an archive that is not there yet.
  returned: always
  type: str
  sample: sha256:4de97d635b8a0c2d9e7e4f5ab1f0c6e1f1b7f4a5e7c0a6d1b2c3d4e5f6a7b8c9d
tags:
  description: Tags of the image.
  returned: always
  type: list
  elements: str
  sample: [linkedge/aps-classifier:1.4.0]
loaded:
  description: Whether the archive was loaded by this run.
  returned: always
  type: bool
archive_sha256:
  description: The archive's sha256, when it was computed (the image was absent).
  returned: when computed
  type: str
  sample: 9f2c1e0c5e4b6a3d2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a
archive_removed:
  description: Whether the archive was deleted (O(remove_archive)).
  returned: always
  type: bool
disk_space:
  description: The space check made before loading.
  returned: when the image was absent and the archive there
  type: dict
  contains:
    docker_root:
      description: The engine's Docker root.
      type: str
    free_bytes:
      description: Free bytes under it before loading.
      type: int
    needed_bytes:
      description: RV(disk_space.layer_bytes) + RV(disk_space.min_free_bytes).
      type: int
    layer_bytes:
      description: Peak bytes C(docker load) writes (unpacked archive + layers the engine lacks).
      type: int
    min_free_bytes:
      description: O(min_free).
      type: int
    enough:
      description: Whether there is room.
      type: bool
    msg:
      description: The refusal when not RV(disk_space.enough), else null.
      type: str
would_fail:
  description: Check mode only, true when a real run would fail for lack of room.
  returned: always
  type: bool
"""

import os
import tarfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linkedge.edge.plugins.module_utils.contract import sha256_file
from ansible_collections.linkedge.edge.plugins.module_utils.disk_space import (
    check as check_space,
)
from ansible_collections.linkedge.edge.plugins.module_utils.disk_space import (
    docker_root_free,
    load_need,
    read_archive,
)
from ansible_collections.linkedge.edge.plugins.module_utils.docker_client import (
    DockerException,
    ImageNotFound,
    docker_error_message,
    get_docker_client,
)
from ansible_collections.linkedge.edge.plugins.module_utils.image_archive import (
    ArchiveError,
    held_chains,
    load_archive,
    normalize_image_id,
    normalize_sha256,
    read_manifest,
)


def find_image(client, reference: str | None):
    if not reference:
        return None
    try:
        return client.images.get(reference)
    except ImageNotFound:
        return None


def split_reference(name: str) -> tuple[str, str]:
    """(repository, tag) of `name:tag`; the tag defaults to latest like docker's."""
    if ":" in name.rsplit("/", 1)[-1]:
        repository, _sep, tag = name.rpartition(":")
        return repository, tag
    return name, "latest"


def ensure_tag(module: AnsibleModule, image, name: str | None) -> bool:
    """Tag `image` as `name` when it is not already; whether it did (or would)."""
    if not name or name.startswith("sha256:"):
        return False
    repository, tag = split_reference(name)
    if f"{repository}:{tag}" in image.tags:
        return False
    if not module.check_mode:
        image.tag(repository, tag)
    return True


def engine_chains(client) -> set[str]:
    """Chain IDs of every layer the engine's images hold."""
    return held_chains(
        (image.attrs.get("RootFS") or {}).get("Layers") for image in client.images.list(all=True)
    )


def check_room(module: AnsibleModule, client, archive: str, result: dict) -> None:
    """Raise ArchiveError when loading `archive` would eat the headroom (check mode: report
    would_fail and warn); fills result["disk_space"]."""
    root, free = docker_root_free(client, module.warn)
    if free is None:
        return
    try:
        sizes, layers, diff_ids = read_archive(archive)
    except (KeyError, ValueError, tarfile.TarError) as exc:
        raise ArchiveError(f"{archive} is not a `docker save` archive: {exc}") from exc
    verdict = check_space(
        root,
        free,
        load_need(sizes, layers, diff_ids, engine_chains(client)),
        module.params["min_free"],
    )
    result["disk_space"] = verdict
    if verdict["enough"]:
        return
    if not module.check_mode:
        raise ArchiveError(verdict["msg"])
    module.warn(verdict["msg"])
    result["would_fail"] = True


def ensure_loaded(
    module: AnsibleModule, client, expected: str, wanted_id: str | None, result: dict
) -> None:
    """Fill `result` (also when an exception leaves early). Raises ArchiveError, OSError or
    DockerException."""
    params = module.params
    archive = params["archive"]
    archive_there = os.path.isfile(archive)
    manifest = None
    if not wanted_id and not params["image"] and archive_there:
        manifest = read_manifest(archive)
    present = find_image(client, wanted_id or params["image"] or (manifest and manifest[0]))
    if present is not None:
        result["changed"] = ensure_tag(module, present, params["image"])
        present.reload()
        result.update(image_id=present.id, tags=present.tags)
        return
    if not archive_there:
        if not module.check_mode:
            raise ArchiveError(f"archive {archive} is not on the target: copy it there first")
        module.warn(f"{archive} is not on the target yet; it would be loaded")
        result["changed"] = True
        return
    check_room(module, client, archive, result)
    result["archive_sha256"] = actual = sha256_file(archive)
    if actual != expected:
        raise ArchiveError(
            f"archive {archive} has sha256 {actual}, the release says {expected}: "
            "copy it again; nothing was loaded"
        )
    image_id, tags = manifest or read_manifest(archive)
    if wanted_id and image_id != wanted_id:
        raise ArchiveError(
            f"archive {archive} holds image {image_id}, the release says {wanted_id}: "
            "check the release metadata; nothing was loaded"
        )
    result.update(changed=True, image_id=image_id, tags=tags)
    if module.check_mode:
        return
    load_archive(client, archive)
    image = find_image(client, image_id)
    if image is None:
        raise ArchiveError(f"docker load of {archive} did not produce {image_id}")
    ensure_tag(module, image, params["image"])
    image.reload()
    result.update(loaded=True, image_id=image.id, tags=image.tags)
    if params["remove_archive"]:
        os.remove(archive)
        result["archive_removed"] = True


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type="path", required=True),
            sha256=dict(type="str", required=True),
            image_id=dict(type="str"),
            image=dict(type="str"),
            remove_archive=dict(type="bool", default=False),
            timeout=dict(type="int", default=600),
            min_free=dict(type="bytes", default="256M"),
        ),
        supports_check_mode=True,
    )
    archive = module.params["archive"]
    try:
        expected = normalize_sha256(module.params["sha256"])
        image_id = module.params["image_id"]
        wanted_id = normalize_image_id(image_id) if image_id else None
    except ArchiveError as exc:
        module.fail_json(msg=f"{exc}: pass the digest published with the release")
    client = get_docker_client(module, timeout=module.params["timeout"])
    result = dict(
        changed=False,
        loaded=False,
        archive_removed=False,
        image_id=None,
        tags=[],
        would_fail=False,
    )
    try:
        ensure_loaded(module, client, expected, wanted_id, result)
    except ArchiveError as exc:
        module.fail_json(msg=str(exc), **result)
    except OSError as exc:
        module.fail_json(msg=f"cannot read or remove {archive}: {exc}", **result)
    except DockerException as exc:
        module.fail_json(msg=docker_error_message(f"loading {archive}", exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

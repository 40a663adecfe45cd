#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: image_prune
short_description: Remove LinkEdge release images that no container uses
version_added: 0.3.0
description:
  - Removes the images carrying the label C(io.linkedge.model.version) (the release images
    written by the LinkEdge builder) that no container on the host uses, in any state.
  - The image of the serving container O(name), of C(<name>-previous) (the version a rollback
    returns to without any transfer) and of any other existing container (a candidate, another
    service) are always kept, as are the images named in O(keep). So after a switch this keeps
    exactly the serving and the previous version.
  - Nothing is removed while O(name) does not exist (a first deploy that failed, a truck being
    repaired), because the images may be all the truck has to serve.
  - An image the engine refuses to remove (a container created meanwhile) is reported in
    RV(refused), not failed.
  - Other images (not labelled by the builder) are never touched.
options:
  name:
    description: Name of the serving inference container (the previous one is C(<name>-previous)).
    type: str
    default: linkedge-inference
  keep:
    description: Images to keep as well (IDs C(sha256:...), short IDs or C(name:tag)).
    type: list
    elements: str
    default: []
  labels:
    description:
      - Only consider images that also carry all these labels (label name to value), for
        example C(io.linkedge.model.name) set to C(aps-classifier) on a host serving several
        models.
    type: dict
    default: {}
  staging_dirs:
    description:
      - Directories where archives are staged before C(docker load) (the role's
        C(inference_service_staging_dir), C(rollout.yml)'s C(/var/tmp/linkedge)). C(*.tar) files
        left there by a transfer or load that a power cut or a killed run interrupted are removed
        too (the normal path removes them itself).
      - Only run it when no transfer to this host is in progress (the role runs it after its own
        switch).
    type: list
    elements: path
    default: []
  timeout:
    description: Seconds the Docker engine may take to answer.
    type: int
    default: 120
extends_documentation_fragment:
  - linkedge.edge.docker
seealso:
  - module: linkedge.edge.inference_container
  - module: linkedge.edge.edge_facts
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Reports what would be removed and an estimate of the bytes it would free.
    support: full
"""

EXAMPLES = r"""
- name: Remove release images beyond the serving and previous versions
  linkedge.edge.image_prune:
    name: linkedge-inference
  register: pruned

- name: Show what was freed
  ansible.builtin.debug:
    msg: >-
      removed {{ pruned.removed | map(attribute='model_version') | list }},
      {{ pruned.bytes_freed }} bytes freed
"""

RETURN = r"""
removed:
  description: Images removed (in check mode, that would be removed).
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Image ID.
      type: str
    tags:
      description: Its tags.
      type: list
      elements: str
    model_version:
      description: Its C(io.linkedge.model.version) label.
      type: str
    size:
      description: Image size (layers shared with kept images included).
      type: int
  sample:
    - id: sha256:4de97d635b8a0c2d9e7e4f5ab1f0c6e1f1b7f4a5e7c0a6d1b2c3d4e5f6a7b8c9d
      tags: [linkedge/aps-classifier:1.3.0]
      model_version: 1.3.0
      size: 182000000
kept:
  description: Release images kept, with the reason.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Image ID.
      type: str
    model_version:
      description: Its C(io.linkedge.model.version) label.
      type: str
    used_by:
      description: Containers using it (names), or C(keep) when named in O(keep).
      type: list
      elements: str
refused:
  description: Images the engine refused to remove, with its reason.
  returned: always
  type: list
  elements: dict
bytes_freed:
  description:
    - Bytes held only by the removed images (the engine's C(docker system df) unique size,
      read before removing; the same figure in check mode). Layers the removed images shared
      only with each other are not counted, so it is a lower bound.
  returned: always
  type: int
staging_removed:
  description: Archives removed from O(staging_dirs) (in check mode, that would be removed).
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
    size:
      description: Its size in bytes.
      type: int
docker_root_free_bytes_before:
  description: Free bytes under the Docker root before removing (null when not visible).
  returned: always
  type: int
docker_root_free_bytes:
  description: Free bytes under the Docker root after the run (null when not visible).
  returned: always
  type: int
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linkedge.edge.plugins.module_utils.contract import LABEL_MODEL_VERSION
from ansible_collections.linkedge.edge.plugins.module_utils.disk_space import free_bytes
from ansible_collections.linkedge.edge.plugins.module_utils.docker_client import (
    APIError,
    DockerException,
    ImageNotFound,
    NotFound,
    docker_error_message,
    get_docker_client,
)


def resolve(client, references: list[str]) -> set[str]:
    """Image IDs of the references that exist."""
    ids = set()
    for reference in references:
        try:
            ids.add(client.images.get(reference).id)
        except ImageNotFound:
            continue
    return ids


def used_images(client) -> dict[str, list[str]]:
    """Image ID -> names of the containers (any state) created from it."""
    used: dict[str, list[str]] = {}
    for container in client.containers.list(all=True):
        used.setdefault(container.attrs.get("Image", ""), []).append(container.name)
    return used


def unique_sizes(client) -> dict[str, int]:
    """Image ID -> bytes only that image holds (the engine's `docker system df` figure)."""
    try:
        usage = client.df()
    except DockerException:
        return {}
    sizes = {}
    for image in usage.get("Images") or []:
        size, shared = image.get("Size") or 0, image.get("SharedSize")
        sizes[image.get("Id")] = max(size - shared, 0) if shared is not None and shared >= 0 else 0
    return sizes


def remove(client, image) -> None:
    """Untag each tag, then remove the image by ID (no force: a container using it wins)."""
    for tag in image.tags:
        try:
            client.images.remove(tag, noprune=False)
        except ImageNotFound:
            continue
    try:
        client.images.remove(image.id, noprune=False)
    except ImageNotFound:
        return


def prune_staging(module: AnsibleModule, result: dict) -> None:
    """Remove the *.tar files an interrupted transfer or load left in the staging dirs."""
    seen: set[str] = set()
    for directory in module.params["staging_dirs"]:
        if os.path.realpath(directory) in seen:
            continue
        seen.add(os.path.realpath(directory))
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            if not name.endswith(".tar") or not os.path.isfile(path) or os.path.islink(path):
                continue
            size = os.path.getsize(path)
            if not module.check_mode:
                os.remove(path)
            result["staging_removed"].append(dict(path=path, size=size))
            result["changed"] = True


def describe(image) -> dict:
    return dict(
        id=image.id,
        tags=list(image.tags),
        model_version=(image.labels or {}).get(LABEL_MODEL_VERSION),
        size=image.attrs.get("Size"),
    )


def prune(module: AnsibleModule, client, result: dict) -> None:
    name = module.params["name"]
    try:
        client.containers.get(name)
    except NotFound:
        module.warn(f"no container {name} on this host: nothing pruned")
        return
    used = used_images(client)
    keep = resolve(client, module.params["keep"])
    wanted = [LABEL_MODEL_VERSION] + [f"{k}={v}" for k, v in module.params["labels"].items()]
    images = client.images.list(filters={"label": wanted})
    doomed = []
    for image in images:
        users = used.get(image.id, [])
        if users or image.id in keep:
            entry = describe(image)
            result["kept"].append(
                dict(
                    id=entry["id"],
                    model_version=entry["model_version"],
                    used_by=sorted(users) or ["keep"],
                )
            )
        else:
            doomed.append(image)
    if not doomed:
        return
    unique = unique_sizes(client)
    if module.check_mode:
        result["removed"] = [describe(image) for image in doomed]
        result["bytes_freed"] = sum(unique.get(image.id, 0) for image in doomed)
        result["changed"] = True
        return
    for image in doomed:
        try:
            remove(client, image)
        except APIError as exc:
            result["refused"].append(
                dict(describe(image), reason=docker_error_message("removing the image", exc))
            )
            continue
        result["removed"].append(describe(image))
        result["bytes_freed"] += unique.get(image.id, 0)
        result["changed"] = True


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", default="linkedge-inference"),
            keep=dict(type="list", elements="str", default=[]),
            labels=dict(type="dict", default={}),
            staging_dirs=dict(type="list", elements="path", default=[]),
            timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    client = get_docker_client(module, timeout=module.params["timeout"])
    result = dict(
        changed=False,
        removed=[],
        kept=[],
        refused=[],
        staging_removed=[],
        bytes_freed=0,
        docker_root_free_bytes_before=None,
        docker_root_free_bytes=None,
    )
    try:
        result["docker_root_free_bytes_before"] = free_bytes(client.info().get("DockerRootDir"))
        prune(module, client, result)
        prune_staging(module, result)
        result["docker_root_free_bytes"] = free_bytes(client.info().get("DockerRootDir"))
    except DockerException as exc:
        module.fail_json(msg=docker_error_message("pruning release images", exc), **result)
    except OSError as exc:
        module.fail_json(msg=f"cannot remove a staged archive: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

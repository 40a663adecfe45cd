#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: edge_facts
short_description: Facts about an edge host's inference service
version_added: 0.1.0
description:
  - Returns C(ansible_facts.linkedge) about the host's Docker engine, the serving inference
    container O(name), the previous one C(<name>-previous), the LinkEdge images present
    (images labelled C(io.linkedge.model.version)) and the free space for more.
  - Also returns the last outcome record the truck kept (C(linkedge.edge.outcome_record)), so
    a status view shows what the last rollout or rollback did even when it ended offline.
options:
  name:
    description: Name of the serving container.
    type: str
    default: linkedge-inference
  state_file:
    description: Where C(linkedge.edge.outcome_record) keeps the truck's last outcome record.
    type: path
    default: /var/lib/linkedge/last-outcome.json
extends_documentation_fragment:
  - linkedge.edge.docker
seealso:
  - module: linkedge.edge.inference_container
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Runs in check mode exactly as without it (it only reads).
    support: full
  facts:
    description: Returns C(ansible_facts.linkedge).
    support: full
"""

EXAMPLES = r"""
- name: Gather the inference service's facts
  linkedge.edge.edge_facts:

- name: Show what serves
  ansible.builtin.debug:
    msg: "{{ ansible_facts.linkedge.serving.model_version | default('nothing') }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: dict
  contains:
    linkedge:
      description: The inference service on this host.
      returned: always
      type: dict
      contains:
        docker_version:
          description: Version of the Docker engine.
          type: str
          returned: always
          sample: 20.10.24+dfsg1
        architecture:
          description:
            - The architecture the truck's Docker engine runs images for, as a release names it
              (V(amd64), V(arm64)); the engine's own name (for example V(armv7l), V(riscv64))
              when LinkEdge builds no image for it. C(linkedge.edge.release_for) and
              C(linkedge.edge.release_verify) choose the release's image with it.
          type: str
          returned: always
          sample: arm64
        docker_sdk_version:
          description: Version of the Docker SDK for Python on the target.
          type: str
          returned: always
          sample: 5.0.3
        serving:
          description: The container O(name); null when there is none.
          type: dict
          returned: always
          sample:
            container: linkedge-inference
            container_id: 0b1c...
            image: linkedge/aps-classifier:1.4.0
            image_id: sha256:4de9...
            model_version: aps-xgb-3f2a9c1d0b7e
            bundle_sha256: 5e1a...
            status: running
            health: healthy
            started_at: "2025-11-24T20:30:00.123456789Z"
        previous:
          description:
            - The container C(<name>-previous); null when there is none. C(available) says
              whether its image is still present, so that it can be rolled back to.
          type: dict
          returned: always
          sample:
            container: linkedge-inference-previous
            image_id: sha256:b864...
            model_version: aps-xgb-0c9d8e7f6a5b
            status: exited
            available: true
        images:
          description: Images labelled C(io.linkedge.model.version), newest first.
          type: list
          elements: dict
          returned: always
          sample:
            - id: sha256:4de9...
              tags: [linkedge/aps-classifier:1.4.0]
              model_version: aps-xgb-3f2a9c1d0b7e
              size: 230000000
              layers: ["sha256:4e3f..."]
        docker_root_free_bytes:
          description: Free bytes on the filesystem of Docker's root directory; null when it
            cannot be read from the target.
          type: int
          returned: always
        layers:
          description: The layer diff IDs the engine holds in LinkEdge images.
          type: list
          elements: str
          returned: always
        chains:
          description:
            - The chain IDs of those layers (each layer with the layers below it), which a delta
              transfer need not send (O(linkedge.edge.image_delta#module:have_chains)). The
              same layer bytes on other layers below (the model layer of an amd64 and of an
              arm64 image) are another chain.
          type: list
          elements: str
          returned: always
        last_outcome:
          description: The last outcome record kept on the truck (C(linkedge.edge.outcome_record)),
            or null when none was kept yet.
          type: dict
          returned: always
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    DEFAULT_SERVICE_NAME,
    LABEL_BUNDLE_SHA256,
    LABEL_MODEL_VERSION,
    architecture_named,
    previous_name,
)
from ansible_collections.linkedge.edge.plugins.module_utils.disk_space import free_bytes
from ansible_collections.linkedge.edge.plugins.module_utils.docker_client import (
    DockerException,
    NotFound,
    docker_error_message,
    get_docker_client,
    sdk_version,
)
from ansible_collections.linkedge.edge.plugins.module_utils.image_archive import held_chains
from ansible_collections.linkedge.edge.plugins.module_utils.outcome import (
    DEFAULT_STATE_FILE,
    read_state,
)


def labels_of(attrs: dict) -> dict:
    return (attrs.get("Config") or {}).get("Labels") or {}


def find_container(client, name: str):
    try:
        return client.containers.get(name)
    except NotFound:
        return None


def image_present(client, image_id: str) -> bool:
    try:
        client.images.get(image_id)
        return True
    except NotFound:
        return False


def serving_facts(container) -> dict | None:
    if container is None:
        return None
    labels = labels_of(container.attrs)
    state = container.attrs.get("State") or {}
    return {
        "container": container.name,
        "container_id": container.id,
        "image": (container.attrs.get("Config") or {}).get("Image"),
        "image_id": container.attrs.get("Image"),
        "model_version": labels.get(LABEL_MODEL_VERSION),
        "bundle_sha256": labels.get(LABEL_BUNDLE_SHA256),
        "status": state.get("Status"),
        "health": (state.get("Health") or {}).get("Status"),
        "started_at": state.get("StartedAt"),
    }


def previous_facts(client, container) -> dict | None:
    if container is None:
        return None
    image_id = container.attrs.get("Image")
    return {
        "container": container.name,
        "image_id": image_id,
        "model_version": labels_of(container.attrs).get(LABEL_MODEL_VERSION),
        "status": (container.attrs.get("State") or {}).get("Status"),
        "available": image_present(client, image_id),
    }


def image_facts(client) -> list[dict]:
    images = client.images.list(filters={"label": LABEL_MODEL_VERSION})
    images.sort(key=lambda image: image.attrs.get("Created") or "", reverse=True)
    return [
        {
            "id": image.id,
            "tags": image.tags,
            "model_version": labels_of(image.attrs).get(LABEL_MODEL_VERSION),
            "size": image.attrs.get("Size"),
            "layers": list((image.attrs.get("RootFS") or {}).get("Layers") or []),
        }
        for image in images
    ]


def engine_architecture(info: dict) -> str:
    """The engine's architecture as a release names it (its own name when LinkEdge has none)."""
    machine = info.get("Architecture") or os.uname().machine
    try:
        return architecture_named(machine)
    except ValueError:
        return machine


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", default=DEFAULT_SERVICE_NAME),
            state_file=dict(type="path", default=DEFAULT_STATE_FILE),
        ),
        supports_check_mode=True,
    )
    name = module.params["name"]
    client = get_docker_client(module)
    try:
        images = image_facts(client)
        info = client.info()
        facts = {
            "architecture": engine_architecture(info),
            "docker_version": client.version().get("Version"),
            "docker_sdk_version": sdk_version(),
            "serving": serving_facts(find_container(client, name)),
            "previous": previous_facts(client, find_container(client, previous_name(name))),
            "images": images,
            "docker_root_free_bytes": free_bytes(info.get("DockerRootDir")),
            "layers": sorted({layer for image in images for layer in image["layers"]}),
            "chains": sorted(held_chains(image["layers"] for image in images)),
            "last_outcome": read_state(module.params["state_file"]),
        }
    except DockerException as exc:
        module.fail_json(msg=docker_error_message("reading the Docker engine's state", exc))
    module.exit_json(changed=False, ansible_facts={"linkedge": facts})


if __name__ == "__main__":
    main()

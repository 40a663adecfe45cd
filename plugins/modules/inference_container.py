#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: inference_container
short_description: Make an image version the serving inference container, safely
version_added: 0.1.0
description:
  - Runs a LinkEdge serving image as the container O(name), hardened, and switches versions
    so that a version that does not serve correctly never replaces the one that does.
  - "Switch, when a container is serving: (1) a candidate C(<name>-candidate) from the new image
    starts on 127.0.0.1 with a free port, must become ready within O(ready_timeout) and
    reproduce every smoke vector of its bundle through C(/predict) and V2 infer; it is removed
    either way and the serving container is not touched. (2) Handover, with no failed request:
    the serving container is renamed C(<name>-previous) (replacing an older one) and keeps
    serving; the new C(<name>) binds the same port beside it (SO_REUSEPORT; restart policy
    C(no) until it passed) and is checked the same way through a check port of its own on
    127.0.0.1; only then is the old one retired
    (restart policy C(no), graceful stop: in-flight requests finish). On failure the new
    container is removed and the old one gets its name back; it never stopped serving."
  - "Connections still queued on the old server when it stops move to the new one only with the
    kernel setting C(net.ipv4.tcp_migrate_req=1) (Linux >= 5.14; the
    C(linkedge.edge.inference_service) role sets it); the module warns when it is off."
  - Step (1) is skipped when nothing is serving (first deployment, or a stopped container).
  - "An interrupted switch (power cut) is repaired on the next run: a running C(<name>-previous)
    with no running C(<name>) gets its name back; one still running beside the current
    C(<name>) is retired."
  - "Serving containers use the host's network namespace (no Docker port publishing, no NAT):
    the server listens on O(bind_address):O(published_port) itself."
  - Unchanged when O(name) runs the same image ID created with the same settings (a fingerprint
    of the settings is stored in the label C(io.linkedge.config.sha256)).
  - "Hardening is not optional: the image's non-root user (an image whose USER is root is
    refused), read-only root filesystem with a tmpfs on C(/tmp), all capabilities dropped,
    C(no-new-privileges), memory (swap included), CPU and pids limits, a restart policy."
  - Containers are labelled C(io.linkedge.service=<name>), C(io.linkedge.role=serving) (or
    C(candidate)) and with the image's model labels. Labels cannot change after creation, so a
    demoted container keeps C(io.linkedge.role=serving) and is recognised by its name
    C(<name>-previous); its restart policy is set to C(no) once it is retired.
options:
  name:
    description: Name of the serving container.
    type: str
    default: linkedge-inference
  image:
    description:
      - The serving image, C(name:tag) or image ID. It must already be on the host (see
        M(linkedge.edge.image_load)).
    type: str
    required: true
  published_port:
    description: Host port the API listens on.
    type: int
    default: 8080
  bind_address:
    description:
      - Host address the API listens on. Without O(api_token_file) the API has no
        authentication; keep it on 127.0.0.1 or an internal interface.
    type: str
    default: 127.0.0.1
  api_token_file:
    description:
      - "Path on the host of a file holding the API's bearer token (readable by the image's
        user, for example owner 10001 and mode 0400). It is mounted read-only at
        C(/run/secrets/linkedge-api-token) and the prediction endpoints then require
        C(Authorization: Bearer <token>); health, metadata and metrics stay open."
      - The module reads it to authenticate its own smoke checks. Never baked into the image.
    type: path
  grpc_port:
    description:
      - "Serve the Open Inference Protocol over gRPC (C(inference.GRPCInferenceService)) on
        O(bind_address):O(grpc_port) too, with the same model, the same O(api_token_file) (sent
        as the metadata C(authorization: Bearer <token>)) and the same handover: the new
        container binds the port beside the old one, which stops taking new connections, lets
        its clients reconnect to the new one, and only then stops."
      - A candidate serves gRPC on a free local port and must accept connections on it, so an
        image that cannot serve gRPC is rolled back before the serving container is touched.
      - Omit (null) for no gRPC endpoint (also for images built before LinkEdge served gRPC).
    type: int
    version_added: 0.5.0
  env:
    description:
      - Environment variables for the container (C(LINKEDGE_WORKERS) and others).
      - C(LINKEDGE_HOST), C(LINKEDGE_PORT), C(LINKEDGE_CHECK_PORT), C(LINKEDGE_REUSE_PORT),
        C(LINKEDGE_API_TOKEN_FILE), C(LINKEDGE_GRPC_PORT) and the C(LINKEDGE_MQTT_*) variables
        are set by the module and refused here.
    type: dict
    default: {}
  mqtt:
    description:
      - "Answer predictions on the truck's MQTT bus too: the serving container subscribes to
        C(linkedge/<truck>/aps/features) through the shared subscription
        C($share/linkedge-aps/...), so during a switch the old and the new container split the
        messages and the old one answers what it took before it stops."
      - The candidate never connects to the broker. Each serving container gets a client id of
        its own, kept across its restarts (it resumes its persistent session).
      - Omit for a container without MQTT.
    type: dict
    suboptions:
      truck:
        description: The truck's id in the topics (letters, digits, C(_), C(.), C(-)).
        type: str
        required: true
      host:
        description: The broker's address as seen from the host's network.
        type: str
        default: 127.0.0.1
      port:
        description: The broker's port.
        type: int
        default: 1883
      username:
        description: The container's broker user (the C(inference) client of the broker's ACL).
        type: str
      password_file:
        description:
          - Path on the host of a file holding that user's password, readable by the image's
            user (owner 10001, mode 0400); mounted read-only. Required with O(mqtt.username).
        type: path
      state_dir:
        description:
          - Directory on the host, writable by the image's user, where the container logs the
            ids it answered, so a message redelivered after a power cut is not answered twice.
        type: path
  shadow_bundle:
    description:
      - A candidate model's bundle (a directory on the host, as C(linkedge-image train) writes
        it), mounted read-only into the serving container, which then answers every request
        with its model and also with this shadow. The shadow's answers are never returned;
        their agreement with the model, the probability differences and the shadow's latency
        are on C(/metrics) (C(linkedge_shadow_*)). A shadow that cannot serve is reported
        there (C(linkedge_shadow_ready) 0) and never stops the model. See C(docs/api.md),
        "Shadow model".
      - Omit for none.
    type: path
  shadow_image:
    description:
      - The same as O(shadow_bundle), with the bundle taken from a release image already on
        this host's engine (its ID or a reference, such as a release loaded by an earlier
        rollout). Its bundle is copied once to O(shadow_dir)/<12 hex digits of the image ID>.
      - Mutually exclusive with O(shadow_bundle). Omit for none.
    type: str
  shadow_dir:
    description:
      - Where bundles taken from O(shadow_image) are kept on the host.
    type: path
    default: /var/lib/linkedge/shadow
  capture:
    description:
      - Data capture, for bringing what the truck sees back to training. The serving container
        writes every row it answers C(pos) and a sample of the others, with inputs, outputs,
        model version and time, to a bounded, crash-safe spool in O(capture.dir)
        (C(sealed/) holds the complete segments to collect). See C(docs/api.md), "Data
        capture".
      - The candidate never captures (its smoke checks are not data). Changing a setting
        replaces the serving container, as any other option does.
      - Omit for a container without capture.
    type: dict
    suboptions:
      dir:
        description: Directory on the host, writable by the image's user (10001), mounted
          read-write.
        type: path
        required: true
      rate:
        description: Share of the C(neg) answers captured, from 0 to 1 (every C(pos) is).
        type: float
        default: 0.01
      budget:
        description: The spool's size limit (Docker notation, such as C(256m)); the oldest
          sealed segments are deleted, and counted, to stay within it.
        type: str
        default: 256m
      segment:
        description: A segment is sealed (made collectable) at this size.
        type: str
        default: 1m
      segment_seconds:
        description: Or at this age.
        type: int
        default: 300
  memory:
    description: Memory limit (Docker notation, binary units such as C(512m) or C(1g)); swap is
      limited to the same value, so the container does not swap.
    type: str
    default: 512m
  cpus:
    description: CPU limit in cores.
    type: float
    default: 2.0
  pids_limit:
    description: Maximum number of processes in the container.
    type: int
    default: 256
  restart_policy:
    description: Docker restart policy of the serving container.
    type: str
    choices: ['no', always, unless-stopped, on-failure]
    default: unless-stopped
  tmpfs_size:
    description: Size of the tmpfs mounted on C(/tmp) (C(noexec), C(nosuid), C(nodev)).
    type: str
    default: 64m
  ready_timeout:
    description:
      - Seconds a new container (candidate or final) may take to become ready.
      - A container whose readiness endpoint keeps refusing with a reason for 3 seconds, or
        that exits, fails at once.
    type: int
    default: 60
  stop_timeout:
    description: Seconds the old container gets to finish its requests and stop before it is
      killed.
    type: int
    default: 10
  smoke_check:
    description:
      - Check every smoke vector of the image's bundle (C(/opt/linkedge/model/smoke_vectors.json))
        through C(/predict) and V2 infer (probabilities within 1e-6, labels exact), and the
        served model version against the image label, before a new version counts as serving.
      - Without it a new version only has to become ready.
    type: bool
    default: true
  keep_previous:
    description: Keep the replaced container, stopped, as C(<name>-previous) for a fast rollback.
    type: bool
    default: true
  fail_on_rollback:
    description:
      - Fail the task when the new version was rolled back (so it counts against
        C(max_fail_percentage)). The result fields are returned either way.
    type: bool
    default: true
extends_documentation_fragment:
  - linkedge.edge.docker
notes:
  - The module talks to the containers over HTTP from the target itself, on 127.0.0.1 (the
    candidate's port, the new container's check port).
  - Images built before LinkEdge 0.3 do not support the handover (they ignore
    C(LINKEDGE_CHECK_PORT) and never answer on it); rebuild them.
seealso:
  - module: linkedge.edge.image_load
  - module: linkedge.edge.inference_probe
  - module: linkedge.edge.edge_facts
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Can run in check mode and report what would change without changing it.
    support: full
"""

EXAMPLES = r"""
- name: Serve the release
  linkedge.edge.inference_container:
    image: linkedge/aps-classifier:1.4.0
    published_port: 8080
    env:
      LINKEDGE_WORKERS: "2"
  register: serving

- name: Serve the release over HTTP and the OIP gRPC protocol, with a token
  linkedge.edge.inference_container:
    image: linkedge/aps-classifier:1.4.0
    grpc_port: 8081
    api_token_file: /etc/linkedge/api-token

- name: Serve the release over HTTP and on the truck's MQTT bus
  linkedge.edge.inference_container:
    image: linkedge/aps-classifier:1.4.0
    mqtt:
      truck: truck-042
      username: linkedge-inference
      password_file: /etc/linkedge/mqtt-inference.password
      state_dir: /var/lib/linkedge/mqtt

- name: Serve the release and capture every pos answer and 1 % of the others
  linkedge.edge.inference_container:
    image: linkedge/aps-classifier:1.4.0
    capture:
      dir: /var/lib/linkedge/capture
      budget: 256m

- name: Report a rollback without failing the play
  linkedge.edge.inference_container:
    image: "{{ release.image_id }}"
    fail_on_rollback: false
  register: switch

- name: Show what happened
  ansible.builtin.debug:
    msg: "{{ switch.outcome }}: {{ switch.reason }} (gap {{ switch.serving_gap_seconds }} s)"
"""

RETURN = r"""
outcome:
  description: C(unchanged), C(updated) (the new version serves) or C(rolled_back).
  returned: always
  type: str
  sample: updated
rolled_back:
  description: Whether the new version was refused and the host left serving what it served.
  returned: always
  type: bool
reason:
  description: Why the outcome is what it is (the failure for a rollback); null when updated.
  returned: always
  type: str
  sample: "candidate linkedge-inference-candidate failed, ...: not ready within 60 s"
image_id:
  description: ID of the requested image; null in check mode when it is not on the host yet.
  returned: always
  type: str
model_version:
  description: The requested image's C(io.linkedge.model.version) label.
  returned: always
  type: str
  sample: aps-xgb-3f2a9c1d0b7e
bundle_sha256:
  description: The requested image's C(io.linkedge.bundle.sha256) label.
  returned: always
  type: str
previous_image_id:
  description:
    - Image ID of the container that was serving before (for C(unchanged), of
      C(<name>-previous) when there is one); null when there was none.
  returned: always
  type: str
previous_model_version:
  description: Model version of that container.
  returned: always
  type: str
container_id:
  description: ID of the container serving as O(name) after the task; null if none, and in
    check mode when it would switch.
  returned: always
  type: str
serving_gap_seconds:
  description:
    - Seconds the port had no server during the switch; C(0.0) when a container was serving
      (the old one serves until the new one passed its checks), null when none was.
  returned: always
  type: float
  sample: 0.0
handover_seconds:
  description: Seconds the old container took to finish its requests and stop after the new
    one took over.
  returned: when a serving container was replaced
  type: float
  sample: 0.61
cold_start_seconds:
  description: Seconds from starting the new serving container to it being ready.
  returned: always
  type: float
  sample: 2.3
candidate_cold_start_seconds:
  description: Seconds from starting the candidate to it being ready.
  returned: when a candidate became ready
  type: float
smoke_vectors_checked:
  description: Number of smoke vectors checked on each container.
  returned: always
  type: int
  sample: 33
steps:
  description: What the module did, with seconds since it started.
  returned: always
  type: list
  elements: str
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linkedge.edge.plugins.module_utils.container_spec import SpecError
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    DEFAULT_SERVICE_NAME,
)
from ansible_collections.linkedge.edge.plugins.module_utils.docker_client import (
    DockerException,
    ImageNotFound,
    docker_error_message,
    get_docker_client,
)
from ansible_collections.linkedge.edge.plugins.module_utils.image_files import (
    ImageFileError,
    export_bundle,
)
from ansible_collections.linkedge.edge.plugins.module_utils.inference_switch import (
    InferenceSwitch,
    RollbackFailed,
    SwitchFailed,
    handover_warning,
)

ARGUMENT_SPEC = dict(
    name=dict(type="str", default=DEFAULT_SERVICE_NAME),
    image=dict(type="str", required=True),
    published_port=dict(type="int", default=8080),
    bind_address=dict(type="str", default="127.0.0.1"),
    api_token_file=dict(type="path"),
    grpc_port=dict(type="int"),
    env=dict(type="dict", default={}),
    mqtt=dict(
        type="dict",
        options=dict(
            truck=dict(type="str", required=True),
            host=dict(type="str", default="127.0.0.1"),
            port=dict(type="int", default=1883),
            username=dict(type="str"),
            password_file=dict(type="path", no_log=False),
            state_dir=dict(type="path"),
        ),
    ),
    shadow_bundle=dict(type="path"),
    shadow_image=dict(type="str"),
    shadow_dir=dict(type="path", default="/var/lib/linkedge/shadow"),
    capture=dict(
        type="dict",
        options=dict(
            dir=dict(type="path", required=True),
            rate=dict(type="float", default=0.01),
            budget=dict(type="str", default="256m"),
            segment=dict(type="str", default="1m"),
            segment_seconds=dict(type="int", default=300),
        ),
    ),
    memory=dict(type="str", default="512m"),
    cpus=dict(type="float", default=2.0),
    pids_limit=dict(type="int", default=256),
    restart_policy=dict(
        type="str",
        default="unless-stopped",
        choices=["no", "always", "unless-stopped", "on-failure"],
    ),
    tmpfs_size=dict(type="str", default="64m"),
    ready_timeout=dict(type="int", default=60),
    stop_timeout=dict(type="int", default=10),
    smoke_check=dict(type="bool", default=True),
    keep_previous=dict(type="bool", default=True),
    fail_on_rollback=dict(type="bool", default=True),
)

EMPTY_RESULT = dict(
    outcome="updated",
    rolled_back=False,
    reason=None,
    image_id=None,
    model_version=None,
    bundle_sha256=None,
    previous_image_id=None,
    previous_model_version=None,
    container_id=None,
    serving_gap_seconds=None,
    cold_start_seconds=None,
    smoke_vectors_checked=0,
    steps=[],
)


def shadow_bundle_of(module: AnsibleModule, client) -> str:
    """The host directory of O(shadow_image)'s bundle (copied out of the image once)."""
    params = module.params
    try:
        shadow = client.images.get(params["shadow_image"])
    except ImageNotFound:
        module.fail_json(
            msg=f"shadow_image {params['shadow_image']} is not on this host: roll the release "
            "out to the truck once (or load it with linkedge.edge.image_load), or omit "
            "shadow_image",
            **EMPTY_RESULT,
        )
    except DockerException as exc:
        module.fail_json(msg=docker_error_message(f"looking up {params['shadow_image']}", exc))
    existing = os.path.join(params["shadow_dir"], shadow.id.split(":", 1)[-1][:12])
    if module.check_mode:
        return existing  # a check writes nothing; a new bundle shows as a changed mount
    try:
        return export_bundle(client, shadow.id, params["shadow_dir"])
    except (ImageFileError, OSError) as exc:
        module.fail_json(msg=f"shadow_image {params['shadow_image']}: {exc}", **EMPTY_RESULT)
    except DockerException as exc:
        module.fail_json(
            msg=docker_error_message(f"copying the bundle out of {params['shadow_image']}", exc),
            **EMPTY_RESULT,
        )
    raise AssertionError("unreachable")


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        mutually_exclusive=[("shadow_bundle", "shadow_image")],
    )
    params = module.params
    if not 0 < params["published_port"] < 65536:
        module.fail_json(msg=f"published_port {params['published_port']} is not a TCP port")
    client = get_docker_client(module)
    try:
        image = client.images.get(params["image"])
    except ImageNotFound:
        if module.check_mode:
            module.warn(f"image {params['image']} is not on the host yet; it would be deployed")
            result = dict(EMPTY_RESULT)
            result.update(changed=True, reason="check mode: would deploy")
            module.exit_json(**result)
        module.fail_json(
            msg=f"image {params['image']} is not on this host: load it first "
            "(linkedge.edge.image_load) or check the name",
            **EMPTY_RESULT,
        )
    except DockerException as exc:
        module.fail_json(msg=docker_error_message(f"looking up {params['image']}", exc))

    if params["shadow_image"]:
        params["shadow_bundle"] = shadow_bundle_of(module, client)
    warning = handover_warning()
    if warning:
        module.warn(warning)
    switch = InferenceSwitch(client, params)
    try:
        result = switch.run(image, module.check_mode)
    except (SpecError, SwitchFailed, RollbackFailed) as exc:
        module.fail_json(msg=str(exc), steps=switch.steps)
    except DockerException as exc:
        module.fail_json(
            msg=docker_error_message(f"switching {params['name']} to {params['image']}", exc)
            + f"; see `docker ps -a --filter name={params['name']}`",
            steps=switch.steps,
            exception=traceback.format_exc(),
        )
    result["steps"] = switch.steps
    if result["rolled_back"] and params["fail_on_rollback"]:
        module.fail_json(msg=f"rolled back: {result['reason']}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

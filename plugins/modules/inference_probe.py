#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: inference_probe
short_description: Probe a LinkEdge inference endpoint (read-only)
version_added: 0.1.0
description:
  - Checks liveness, readiness and the served model version of an inference endpoint and,
    with O(smoke_vectors_from), that it reproduces the smoke vectors of a container's or an
    image's model bundle through C(/predict) and V2 infer (probabilities within 1e-6, labels
    exact).
  - Never changes anything. The Docker SDK is only needed with O(smoke_vectors_from).
options:
  url:
    description: Base URL of the endpoint, as seen from the target.
    type: str
    default: http://127.0.0.1:8080
  wait_ready:
    description: Seconds to wait for the endpoint to become ready; 0 asks once.
    type: int
    default: 0
  smoke_vectors_from:
    description:
      - Name of a container, or an image (C(name:tag) or ID), whose model bundle provides the
        smoke vectors and the expected model version. A container is looked for first.
      - Without it only health and metadata are checked.
    type: str
  timeout:
    description: Seconds per HTTP request.
    type: int
    default: 5
  api_token_file:
    description:
      - Path on the target of a file holding the API's bearer token, sent with the smoke vector
        requests (the health and metadata endpoints are open).
    type: path
  fail_on_mismatch:
    description:
      - Fail when RV(mismatches) is not empty.
      - C(mismatches) lists smoke vectors answered wrongly and a served model version other than
        the expected one; when O(wait_ready) is above 0 or O(smoke_vectors_from) is given, an
        endpoint that is not ready is a mismatch too.
    type: bool
    default: true
requirements:
  - Docker SDK for Python >= 5.0 on the target, only with O(smoke_vectors_from)
seealso:
  - module: linkedge.edge.inference_container
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Runs in check mode exactly as without it (it only reads).
    support: full
  diff_mode:
    description: Does not return a diff.
    support: none
"""

EXAMPLES = r"""
- name: The truck serves the release and reproduces its smoke vectors
  linkedge.edge.inference_probe:
    url: http://127.0.0.1:8080
    wait_ready: 30
    smoke_vectors_from: linkedge-inference
  register: probe

- name: Just look
  linkedge.edge.inference_probe:
    fail_on_mismatch: false
  register: probe
"""

RETURN = r"""
live:
  description: Whether C(/v2/health/live) answered 200.
  returned: always
  type: bool
ready:
  description: Whether C(/v2/health/ready) answered 200 (within O(wait_ready)).
  returned: always
  type: bool
not_ready_reason:
  description: Why the endpoint is not ready, as it or the connection said; null when ready.
  returned: always
  type: str
model_version:
  description: The version in the V2 model metadata; null when it did not answer.
  returned: always
  type: str
  sample: aps-xgb-3f2a9c1d0b7e
expected_model_version:
  description: The C(io.linkedge.model.version) label of O(smoke_vectors_from).
  returned: when O(smoke_vectors_from) is given
  type: str
smoke_vectors_checked:
  description: Number of smoke vectors sent (through each API); 0 when none were.
  returned: always
  type: int
  sample: 33
mismatches:
  description: What was wrong; empty when everything matched.
  returned: always
  type: list
  elements: str
latency_ms:
  description: Round trip of one readiness request, in milliseconds; null without an answer.
  returned: always
  type: float
  sample: 1.8
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    LABEL_MODEL_VERSION,
    LIVE_PATH,
    TokenFileError,
    read_token_file,
)
from ansible_collections.linkedge.edge.plugins.module_utils.docker_client import (
    DockerException,
    NotFound,
    docker_error_message,
    get_docker_client,
)
from ansible_collections.linkedge.edge.plugins.module_utils.image_files import (
    ImageFileError,
    smoke_vectors_from_container,
    smoke_vectors_from_image,
)
from ansible_collections.linkedge.edge.plugins.module_utils.inference_http import (
    HttpFailure,
    NotReady,
    check_ready,
    check_smoke_vectors,
    http_json,
    served_model_version,
    wait_ready,
)


def expected_from(module: AnsibleModule, reference: str) -> tuple[list, list, str | None]:
    """(smoke vectors, feature names, model version) of a container, else of an image."""
    client = get_docker_client(module)
    try:
        try:
            container = client.containers.get(reference)
        except NotFound:
            container = None
        if container is not None:
            vectors, features = smoke_vectors_from_container(container)
            labels = container.attrs["Config"].get("Labels") or {}
        else:
            try:
                image = client.images.get(reference)
            except NotFound:
                module.fail_json(msg=f"no container or image named {reference} on this host")
            vectors, features = smoke_vectors_from_image(client, image.id)
            labels = image.attrs["Config"].get("Labels") or {}
    except ImageFileError as exc:
        module.fail_json(msg=f"cannot read the smoke vectors of {reference}: {exc}")
    except DockerException as exc:
        module.fail_json(msg=docker_error_message(f"reading the bundle of {reference}", exc))
    return vectors, features, labels.get(LABEL_MODEL_VERSION)


def timed_ready(url: str, timeout: float) -> tuple[bool, str | None, float | None]:
    """(ready, why not, latency in ms or None) from one readiness request."""
    started = time.monotonic()
    ready, why = check_ready(url, timeout)
    answered = why is None or "answered" in why
    return ready, why, round((time.monotonic() - started) * 1000, 1) if answered else None


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", default="http://127.0.0.1:8080"),
            wait_ready=dict(type="int", default=0),
            smoke_vectors_from=dict(type="str"),
            timeout=dict(type="int", default=5),
            fail_on_mismatch=dict(type="bool", default=True),
            api_token_file=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    url = params["url"].rstrip("/")
    token = None
    if params["api_token_file"]:
        try:
            token = read_token_file(params["api_token_file"], allow_empty=True)
        except TokenFileError as exc:
            module.fail_json(msg=str(exc))
    expected = (
        expected_from(module, params["smoke_vectors_from"])
        if params["smoke_vectors_from"]
        else None
    )
    mismatches = []
    waited = None
    if params["wait_ready"] > 0:
        try:
            wait_ready(url, params["wait_ready"], request_timeout=params["timeout"])
        except NotReady as exc:
            waited = str(exc)
    ready, why, latency_ms = timed_ready(url, params["timeout"])
    why = waited if waited and not ready else why
    try:
        live = http_json(url + LIVE_PATH, timeout=params["timeout"])[0] == 200
    except HttpFailure:
        live = False
    model_version = served_model_version(url, params["timeout"]) if live else None
    result = dict(
        changed=False,
        live=live,
        ready=ready,
        not_ready_reason=why,
        model_version=model_version,
        smoke_vectors_checked=0,
        mismatches=mismatches,
        latency_ms=latency_ms,
    )
    if not ready and (params["wait_ready"] > 0 or expected):
        mismatches.append(f"{url} is not ready: {why}")
    if expected:
        vectors, features, version = expected
        result["expected_model_version"] = version
        if version and model_version != version:
            mismatches.append(f"{url} serves model {model_version}, expected {version}")
        if ready:
            mismatches.extend(
                check_smoke_vectors(url, vectors, features, params["timeout"] * 2, token=token)
            )
            result["smoke_vectors_checked"] = len(vectors)
    if mismatches and params["fail_on_mismatch"]:
        module.fail_json(msg=f"{url}: {'; '.join(mismatches[:5])}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

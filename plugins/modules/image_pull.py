#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: image_pull
short_description: Pull a release image from a registry and keep it only if it is the signed one
version_added: 0.5.0
description:
  - Has the target's Docker engine pull O(reference) from a Docker Distribution registry (the
    depot's, or a regional mirror), only when the engine lacks the image O(image_id). The engine
    fetches only the layers it does not hold.
  - The registry is not trusted. After the pull the image the reference names must have exactly
    O(image_id), the ID from the release's signed manifest (an image ID is the digest of the
    image's configuration, which names every layer by its digest). Another image is untagged
    again and the module fails with RV(reason) C(image_mismatch); nothing else was changed.
  - A registry that cannot be reached, or that drops the connection mid-pull, is tried again
    O(retries) times with a delay that doubles from O(delay); the engine discards what it had
    not finished. What another try cannot mend fails at once, without retries; a reference
    the registry does not have (C(not_in_registry)), credentials it refuses
    (C(registry_refused)), a registry whose TLS certificate the engine does not trust
    (C(registry_untrusted)), a full disk (C(no_room)).
  - Before pulling, the free space under the engine's Docker root must be at least O(min_free).
    How much the pull itself needs is not known before it runs (the registry's sizes are
    compressed); the engine stops a pull that fills the disk, and the serving container is
    untouched either way.
options:
  reference:
    description:
      - What to pull, C(registry/repository:tag) or C(registry/repository@sha256:...). The engine
        must trust the registry (its TLS certificate in C(/etc/docker/certs.d), or an
        C(insecure-registries) entry; C(127.0.0.0/8) is trusted by default).
    type: str
    required: true
  image_id:
    description:
      - The image ID (C(sha256:...)) from the release's signed manifest. Presence is checked by
        it, and the pulled image must have it.
    type: str
    required: true
  retries:
    description: Attempts after the first when the registry cannot be reached or drops the pull.
    type: int
    default: 3
  delay:
    description: Seconds before the first retry; doubled before each further one.
    type: float
    default: 5
  timeout:
    description:
      - Seconds the Docker engine may take to answer a call. The pull's own stream is not cut
        off by it (the Docker SDK reads it without a timeout); a stalled pull ends with the run
        that started it (the edge_manager's sync unit has C(TimeoutStartSec)).
    type: int
    default: 900
  min_free:
    description:
      - Bytes that must be free under the Docker root before the pull starts. Accepts units,
        e.g. C(256M), C(1G). Skipped (with a warning) when the Docker root is not visible from
        the module.
    type: bytes
    default: 256M
extends_documentation_fragment:
  - linkedge.edge.docker
seealso:
  - module: linkedge.edge.image_load
  - module: linkedge.edge.release_verify
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Reports whether the image would be pulled; pulls nothing.
    support: full
"""

EXAMPLES = r"""
- name: Fetch the release image from the depot's registry (only the layers the truck lacks)
  linkedge.edge.image_pull:
    reference: depot.example.net:5000/linkedge/aps-classifier:{{ release.version }}
    image_id: "{{ release.image_id }}"
  register: pulled
"""

RETURN = r"""
image_id:
  description: The image ID now on the engine (null when nothing was pulled in check mode).
  returned: always
  type: str
  sample: sha256:4de97d635b8a0c2d9e7e4f5ab1f0c6e1f1b7f4a5e7c0a6d1b2c3d4e5f6a7b8c9d
pulled:
  description: Whether the image was pulled by this run.
  returned: always
  type: bool
size_bytes:
  description: Bytes the engine downloaded (compressed layers), as its pull progress reported
    them; a layer so small that it arrived before any progress report (a few kB) counts 0.
  returned: always
  type: int
layers_pulled:
  description: Layers the engine downloaded.
  returned: always
  type: int
layers_present:
  description: Layers the engine already held (not downloaded).
  returned: always
  type: int
full:
  description: Whether every layer was downloaded (the engine held none of them).
  returned: always
  type: bool
attempts:
  description: Pull attempts made.
  returned: always
  type: int
reason:
  description: C(image_mismatch), C(registry_unavailable), C(not_in_registry),
    C(registry_refused), C(registry_untrusted) or C(no_room) when the module failed; null
    otherwise.
  returned: always
  type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linkedge.edge.plugins.module_utils.disk_space import (
    docker_root_free,
)
from ansible_collections.linkedge.edge.plugins.module_utils.docker_client import (
    APIError,
    DockerException,
    ImageNotFound,
    docker_error_message,
    get_docker_client,
)
from ansible_collections.linkedge.edge.plugins.module_utils.image_archive import (
    ArchiveError,
    normalize_image_id,
)

try:  # the pull's stream is read from urllib3 directly: an engine gone mid-pull raises this
    from urllib3.exceptions import HTTPError as StreamError
except ImportError:  # pragma: no cover - docker-py depends on urllib3

    class StreamError(Exception):  # type: ignore[no-redef]
        pass


# What another try cannot mend, by the engine's words: (words, reason, what to do).
PERMANENT = (
    (
        ("manifest unknown", "not found", "invalid reference"),
        "not_in_registry",
        "push the release's image to the registry (playbooks/build.yml with "
        "image_builder_registry) or fix the registry address",
    ),
    (
        ("unauthorized", "denied", "authentication required"),
        "registry_refused",
        "give the truck's engine credentials for the registry (docker login as root)",
    ),
    (
        ("x509", "certificate", "http response to https client"),
        "registry_untrusted",
        "make the truck's engine trust the registry: its CA in "
        "/etc/docker/certs.d/<host:port>/ca.crt (role docker_engine: "
        "docker_engine_registry_ca_certs), or insecure-registries for a lab",
    ),
    (
        ("no space left on device",),
        "no_room",
        "free space under the Docker root (docker image prune)",
    ),
)


class PullFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def split_reference(reference: str) -> tuple[str, str | None]:
    """(repository, tag or digest) as the Docker API's pull takes them."""
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        return repository, digest
    if ":" in reference.rsplit("/", 1)[-1]:
        repository, _sep, tag = reference.rpartition(":")
        return repository, tag
    return reference, "latest"


def find_image(client, reference: str):
    try:
        return client.images.get(reference)
    except ImageNotFound:
        return None


def pull_once(client, reference: str, progress: dict) -> None:
    """One pull through the engine, counting layers and bytes; raises PullFailed or
    DockerException."""
    repository, tag = split_reference(reference)
    for event in client.api.pull(repository, tag=tag, stream=True, decode=True):
        if "error" in event:  # the registry's words, not the engine's: no engine hint
            raise APIError(str(event.get("error")))
        layer, status = event.get("id"), event.get("status") or ""
        if not layer:
            continue
        if status == "Already exists":
            progress["present"].add(layer)
        elif status in ("Downloading", "Extracting"):  # their total: the compressed size
            total = (event.get("progressDetail") or {}).get("total")
            if total:
                progress["sizes"][layer] = int(total)
        elif status in ("Download complete", "Pull complete"):
            progress["pulled"].add(layer)


def pull(module: AnsibleModule, client, result: dict) -> None:
    """Pull with retries into `result`; raises PullFailed."""
    params = module.params
    reference = params["reference"]
    progress: dict = {"present": set(), "pulled": set(), "sizes": {}}
    delay = params["delay"]
    for attempt in range(params["retries"] + 1):
        result["attempts"] = attempt + 1
        try:
            pull_once(client, reference, progress)
            break
        except (DockerException, OSError, StreamError) as exc:  # requests' errors are OSErrors
            message = docker_error_message(f"pulling {reference}", exc)
            said = str(exc).lower()
            for words, reason, advice in PERMANENT:
                if any(word in said for word in words):
                    raise PullFailed(
                        reason, f"{message}: {advice}; the serving container is untouched"
                    ) from exc
            if attempt == params["retries"]:
                raise PullFailed(
                    "registry_unavailable",
                    f"{message} ({attempt + 1} attempts): the registry is down or unreachable; "
                    "the serving container is untouched and the next run tries again",
                ) from exc
            time.sleep(delay)
            delay *= 2
    result.update(
        pulled=True,
        layers_pulled=len(progress["pulled"] - progress["present"]),
        layers_present=len(progress["present"]),
        size_bytes=sum(progress["sizes"].values()),
        full=not progress["present"],
    )


def check_room(module: AnsibleModule, client) -> None:
    root, free = docker_root_free(client, module.warn)
    if free is None:
        return
    if free < module.params["min_free"]:
        raise PullFailed(
            "no_room",
            f"only {free} bytes are free under {root}, less than min_free "
            f"({module.params['min_free']}): free space on the truck (docker image prune); "
            "nothing was pulled",
        )


def ensure_pulled(module: AnsibleModule, client, wanted_id: str, result: dict) -> None:
    reference = module.params["reference"]
    present = find_image(client, wanted_id)
    if present is not None:
        result["image_id"] = present.id
        return
    result["changed"] = True
    if module.check_mode:
        return
    check_room(module, client)
    pull(module, client, result)
    image = find_image(client, reference)
    if image is None or image.id != wanted_id:
        got = image.id if image is not None else "nothing"
        removed = "it was removed again"
        if image is not None:
            try:
                client.images.remove(reference, noprune=False)  # the tag it put there
            except DockerException as exc:
                removed = f"removing it failed ({exc}): docker rmi {reference}"
        raise PullFailed(
            "image_mismatch",
            f"{reference} in the registry is {got}, the signed release says {wanted_id}: the "
            f"registry holds another image under that name; {removed}; nothing else changed",
        )
    result["image_id"] = image.id


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            reference=dict(type="str", required=True),
            image_id=dict(type="str", required=True),
            retries=dict(type="int", default=3),
            delay=dict(type="float", default=5),
            timeout=dict(type="int", default=900),
            min_free=dict(type="bytes", default="256M"),
        ),
        supports_check_mode=True,
    )
    try:
        wanted_id = normalize_image_id(module.params["image_id"])
    except ArchiveError as exc:
        module.fail_json(msg=f"{exc}: pass the image_id of the signed release manifest")
    if module.params["retries"] < 0 or module.params["delay"] < 0:
        module.fail_json(msg="retries and delay must not be negative")
    client = get_docker_client(module, timeout=module.params["timeout"])
    result = dict(
        changed=False,
        image_id=None,
        pulled=False,
        size_bytes=0,
        layers_pulled=0,
        layers_present=0,
        full=False,
        attempts=0,
        reason=None,
    )
    try:
        ensure_pulled(module, client, wanted_id, result)
    except PullFailed as exc:
        result["reason"] = exc.reason
        module.fail_json(msg=str(exc), **result)
    except DockerException as exc:
        message = docker_error_message(f"pulling {module.params['reference']}", exc)
        module.fail_json(msg=message, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

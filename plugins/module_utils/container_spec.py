# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""The hardened container settings of the inference service, and their fingerprint.

The fingerprint (label io.linkedge.config.sha256) is how inference_container decides that a
running container already is what was asked for, like docker compose's config-hash label.
"""

from __future__ import annotations

import hashlib
import json
import re

from ansible_collections.linkedge.edge.plugins.module_utils.constants import (
    CONTAINER_PORT,
    IMAGE_LABELS,
    LABEL_CONFIG_SHA256,
    LABEL_ROLE,
    LABEL_SERVICE,
    ROLE_CANDIDATE,
    ROLE_SERVING,
)

PORT_KEY = f"{CONTAINER_PORT}/tcp"
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_ROOT_USERS = ("", "0", "root")


class SpecError(ValueError):
    """An option or the image cannot give a hardened container."""


def parse_bytes(text) -> int:
    """Docker's size notation: 512m, 1g, 65536k, 1048576 (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*", str(text).lower())
    if not match:
        raise SpecError(f"{text!r} is not a size such as 512m or 1g")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def image_user(image) -> str:
    """The image's non-root user, or SpecError: the serving container never runs as root."""
    user = (image.attrs.get("Config") or {}).get("User") or ""
    if user.split(":")[0] in _ROOT_USERS:
        raise SpecError(
            f"image {image.id} runs as root (USER {user or 'unset'}): LinkEdge serves only "
            "images that set a non-root USER; rebuild it with `python -m inference_image build`"
        )
    return user


def desired_spec(params: dict, image) -> dict:
    """Everything that defines the serving container; its sha256 is the config label."""
    memory = parse_bytes(params["memory"])
    tmpfs = parse_bytes(params["tmpfs_size"])
    if memory < 6 << 20:
        raise SpecError(f"memory {params['memory']} is below Docker's minimum of 6m")
    if params["cpus"] <= 0:
        raise SpecError(f"cpus must be positive, got {params['cpus']}")
    return {
        "image_id": image.id,
        "user": image_user(image),
        "bind_address": params["bind_address"],
        "published_port": params["published_port"],
        "env": {str(key): str(value) for key, value in (params["env"] or {}).items()},
        "memory": memory,
        "nano_cpus": round(params["cpus"] * 1e9),
        "pids_limit": params["pids_limit"],
        "restart_policy": params["restart_policy"],
        "tmpfs_bytes": tmpfs,
    }


def config_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def model_labels(image) -> dict[str, str]:
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return {key: labels[key] for key in IMAGE_LABELS if key in labels}


def create_kwargs(
    spec: dict, image, image_ref: str, name: str, service: str, candidate: bool = False
) -> dict:
    """Keyword arguments for client.containers.create (Docker SDK >= 5.0)."""
    labels = model_labels(image)
    labels.update(
        {
            LABEL_SERVICE: service,
            LABEL_ROLE: ROLE_CANDIDATE if candidate else ROLE_SERVING,
            LABEL_CONFIG_SHA256: config_hash(spec),
        }
    )
    binding = ("127.0.0.1", None) if candidate else (spec["bind_address"], spec["published_port"])
    return {
        "image": image_ref,
        "name": name,
        "user": spec["user"],
        "environment": spec["env"],
        "labels": labels,
        "ports": {PORT_KEY: binding},
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={spec['tmpfs_bytes']}"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": spec["memory"],
        "memswap_limit": spec["memory"],
        "nano_cpus": spec["nano_cpus"],
        "pids_limit": spec["pids_limit"],
        "restart_policy": {"Name": "no" if candidate else spec["restart_policy"]},
    }


def is_current(container, spec: dict) -> bool:
    """Running, from the same image ID, created with the same settings."""
    labels = container.attrs["Config"].get("Labels") or {}
    return (
        container.status == "running"
        and container.attrs.get("Image") == spec["image_id"]
        and labels.get(LABEL_CONFIG_SHA256) == config_hash(spec)
    )


def published_binding(container) -> tuple:
    """(host address, host port) the container's port 8080 is published on, or (None, None)."""
    ports = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in ports.get(PORT_KEY) or []:
        if binding.get("HostPort"):
            return binding.get("HostIp") or "127.0.0.1", int(binding["HostPort"])
    configured = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    for binding in configured.get(PORT_KEY) or []:
        if binding.get("HostPort"):
            return binding.get("HostIp") or "127.0.0.1", int(binding["HostPort"])
    return None, None

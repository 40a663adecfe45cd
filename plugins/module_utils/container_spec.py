# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""The hardened container settings of the inference service, and their fingerprint.

The fingerprint (label io.linkedge.config.sha256) is how inference_container decides that a
running container already is what was asked for, like docker compose's config-hash label.

Serving containers use the host's network: the server binds the service port itself with
SO_REUSEPORT (LINKEDGE_REUSE_PORT=1), so a new container can bind it while the old one still
serves, and it answers on a check port of its own on 127.0.0.1 (LINKEDGE_CHECK_PORT) so the
module can check exactly the new container. No port is published through Docker.

With ``mqtt`` set, the serving container (never the candidate, which only proves the image)
also answers on the truck's MQTT bus: its settings go into LINKEDGE_MQTT_* variables, the
password file and the answered-ids directory are mounted, and each container gets a client id
of its own (kept across its restarts, so it resumes its broker session after a power cut).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket

from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    API_TOKEN_MOUNT,
    CAPTURE_ENV,
    CAPTURE_MOUNT,
    ENV_CAPTURE_BUDGET,
    ENV_CAPTURE_DIR,
    ENV_CAPTURE_RATE,
    ENV_CAPTURE_SEGMENT,
    ENV_CAPTURE_SEGMENT_SECONDS,
    ENV_CHECK_PORT,
    ENV_GRPC_PORT,
    ENV_HOST,
    ENV_MQTT_CLIENT_ID,
    ENV_MQTT_HOST,
    ENV_MQTT_PASSWORD_FILE,
    ENV_MQTT_PORT,
    ENV_MQTT_STATE_DIR,
    ENV_MQTT_TRUCK,
    ENV_MQTT_USERNAME,
    ENV_PORT,
    ENV_REUSE_PORT,
    ENV_SHADOW_BUNDLE,
    ENV_TOKEN_FILE,
    HARDENED_RUN,
    IMAGE_LABELS,
    LABEL_CONFIG_SHA256,
    LABEL_ROLE,
    LABEL_SERVICE,
    MQTT_PASSWORD_MOUNT,
    MQTT_STATE_MOUNT,
    MQTT_TRUCK_PATTERN,
    ROLE_CANDIDATE,
    ROLE_SERVING,
    SHADOW_MOUNT,
    TMPFS_OPTIONS,
)

MQTT_ENV = (
    ENV_MQTT_HOST,
    ENV_MQTT_PORT,
    ENV_MQTT_TRUCK,
    ENV_MQTT_USERNAME,
    ENV_MQTT_PASSWORD_FILE,
    ENV_MQTT_CLIENT_ID,
    ENV_MQTT_STATE_DIR,
)
MANAGED_ENV = (
    *CAPTURE_ENV,
    ENV_SHADOW_BUNDLE,
    ENV_HOST,
    ENV_PORT,
    ENV_CHECK_PORT,
    ENV_REUSE_PORT,
    ENV_TOKEN_FILE,
    ENV_GRPC_PORT,
    *MQTT_ENV,
)
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
    spec = {
        "image_id": image.id,
        "user": image_user(image),
        "bind_address": params["bind_address"],
        "published_port": params["published_port"],
        "env": user_env(params["env"]),
        "api_token_file": params.get("api_token_file") or None,
        "memory": memory,
        "nano_cpus": round(params["cpus"] * 1e9),
        "pids_limit": params["pids_limit"],
        "restart_policy": params["restart_policy"],
        "tmpfs_bytes": tmpfs,
    }
    if params.get("shadow_bundle"):  # absent otherwise, as mqtt
        spec["shadow_bundle"] = str(params["shadow_bundle"])
    capture = capture_spec(params.get("capture"))
    if capture is not None:  # absent otherwise, as mqtt
        spec["capture"] = capture
    mqtt = mqtt_spec(params.get("mqtt"))
    if mqtt is not None:  # absent otherwise: the fingerprint of a container without MQTT stays
        spec["mqtt"] = mqtt
    grpc_port = params.get("grpc_port")
    if grpc_port is not None:  # absent otherwise, as mqtt
        if not 0 < grpc_port < 65536 or grpc_port == params["published_port"]:
            raise SpecError(
                f"grpc_port {grpc_port} must be a TCP port other than published_port "
                f"({params['published_port']}), or null for no gRPC endpoint"
            )
        spec["grpc_port"] = grpc_port
    return spec


def capture_spec(capture: dict | None) -> dict | None:
    """The data capture settings of the serving container, checked; None: no capture."""
    if not capture or not capture.get("dir"):
        return None
    rate = float(capture.get("rate", 0.01) if capture.get("rate") is not None else 0.01)
    if not 0 <= rate <= 1:
        raise SpecError(f"capture.rate must be between 0 and 1, got {rate}")
    budget = parse_bytes(capture.get("budget") or "256m")
    segment = parse_bytes(capture.get("segment") or "1m")
    if segment < 1024 or budget < 2 * segment:
        raise SpecError(
            f"capture.budget ({budget} B) must hold two capture.segment ({segment} B) of at "
            "least 1k"
        )
    seconds = int(capture.get("segment_seconds") or 300)
    if seconds < 1:
        raise SpecError(f"capture.segment_seconds must be at least 1, got {seconds}")
    return {
        "dir": str(capture["dir"]),
        "rate": rate,
        "budget": budget,
        "segment": segment,
        "segment_seconds": seconds,
    }


def capture_env_and_mounts(capture: dict) -> tuple[dict[str, str], dict[str, dict]]:
    """LINKEDGE_CAPTURE_* and the spool's mount (read-write) of a serving container."""
    env = {
        ENV_CAPTURE_DIR: CAPTURE_MOUNT,
        ENV_CAPTURE_RATE: repr(capture["rate"]),
        ENV_CAPTURE_BUDGET: str(capture["budget"]),
        ENV_CAPTURE_SEGMENT: str(capture["segment"]),
        ENV_CAPTURE_SEGMENT_SECONDS: str(capture["segment_seconds"]),
    }
    return env, {capture["dir"]: {"bind": CAPTURE_MOUNT, "mode": "rw"}}


def mqtt_spec(mqtt: dict | None) -> dict | None:
    """The MQTT settings of the serving container, checked; None: no MQTT adapter."""
    if not mqtt:
        return None
    truck = str(mqtt.get("truck") or "")
    if not re.fullmatch(MQTT_TRUCK_PATTERN, truck):
        raise SpecError(
            f"mqtt.truck {truck!r} is not a truck id for MQTT topics: letters, digits, "
            "'_', '.', '-' (up to 64, no '/', '+' or '#')"
        )
    port = int(mqtt.get("port") or 1883)
    if not 0 < port < 65536:
        raise SpecError(f"mqtt.port {port} is not a TCP port")
    if bool(mqtt.get("username")) != bool(mqtt.get("password_file")):
        raise SpecError("mqtt.username and mqtt.password_file go together: set both or neither")
    return {
        "host": str(mqtt.get("host") or "127.0.0.1"),
        "port": port,
        "truck": truck,
        "username": mqtt.get("username") or None,
        "password_file": mqtt.get("password_file") or None,
        "state_dir": mqtt.get("state_dir") or None,
    }


def mqtt_env_and_mounts(mqtt: dict, name: str) -> tuple[dict[str, str], dict[str, dict]]:
    """LINKEDGE_MQTT_* and the mounts of one new serving container. The client id is this
    container's own (its name and a random suffix): not part of the settings' fingerprint."""
    env = {
        ENV_MQTT_HOST: mqtt["host"],
        ENV_MQTT_PORT: str(mqtt["port"]),
        ENV_MQTT_TRUCK: mqtt["truck"],
        ENV_MQTT_CLIENT_ID: f"{name}-{secrets.token_hex(4)}",
    }
    mounts: dict[str, dict] = {}
    if mqtt["username"]:
        env[ENV_MQTT_USERNAME] = mqtt["username"]
        env[ENV_MQTT_PASSWORD_FILE] = MQTT_PASSWORD_MOUNT
        mounts[mqtt["password_file"]] = {"bind": MQTT_PASSWORD_MOUNT, "mode": "ro"}
    if mqtt["state_dir"]:
        env[ENV_MQTT_STATE_DIR] = MQTT_STATE_MOUNT
        mounts[mqtt["state_dir"]] = {"bind": MQTT_STATE_MOUNT, "mode": "rw"}
    return env, mounts


def user_env(env: dict | None) -> dict[str, str]:
    """The caller's environment variables; the ones the module sets itself are refused."""
    env = {str(key): str(value) for key, value in (env or {}).items()}
    managed = sorted(set(env) & set(MANAGED_ENV))
    if managed:
        raise SpecError(
            f"env must not set {', '.join(managed)}: the module sets them from bind_address, "
            "published_port, grpc_port, api_token_file, mqtt, capture and shadow_bundle"
        )
    return env


def free_local_port() -> int:
    """A TCP port nothing listens on right now, on 127.0.0.1 (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def model_labels(image) -> dict[str, str]:
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return {key: labels[key] for key in IMAGE_LABELS if key in labels}


def create_kwargs(
    spec: dict, image, image_ref: str, name: str, service: str, candidate: bool = False
) -> dict:
    """Keyword arguments for client.containers.create (Docker SDK >= 5.0).

    A candidate listens on 127.0.0.1 on free ports (HTTP, and gRPC when set) and nowhere else;
    a serving container on bind_address:published_port and bind_address:grpc_port (shared
    with its predecessor during a switch) and on its own check port on 127.0.0.1."""
    labels = model_labels(image)
    labels.update(
        {
            LABEL_SERVICE: service,
            LABEL_ROLE: ROLE_CANDIDATE if candidate else ROLE_SERVING,
            LABEL_CONFIG_SHA256: config_hash(spec),
        }
    )
    env = dict(spec["env"])
    grpc_port = spec.get("grpc_port")
    if candidate:
        env.update({ENV_HOST: "127.0.0.1", ENV_PORT: str(free_local_port())})
        # A port of its own, so a new image that cannot serve gRPC fails as a candidate.
        env[ENV_GRPC_PORT] = "" if grpc_port is None else str(free_local_port())
    else:
        env.update(
            {
                ENV_HOST: spec["bind_address"],
                ENV_PORT: str(spec["published_port"]),
                ENV_REUSE_PORT: "1",
                ENV_CHECK_PORT: str(free_local_port()),
                # Empty: no gRPC, whatever the image's default (8081).
                ENV_GRPC_PORT: "" if grpc_port is None else str(grpc_port),
            }
        )
    mounts = {}
    if spec.get("api_token_file"):
        env[ENV_TOKEN_FILE] = API_TOKEN_MOUNT
        mounts[spec["api_token_file"]] = {"bind": API_TOKEN_MOUNT, "mode": "ro"}
    if spec.get("shadow_bundle") and not candidate:  # beside the model, never answering
        env[ENV_SHADOW_BUNDLE] = SHADOW_MOUNT
        mounts[spec["shadow_bundle"]] = {"bind": SHADOW_MOUNT, "mode": "ro"}
    if spec.get("capture") and not candidate:  # a candidate's smoke checks are not data
        capture_env, capture_mounts = capture_env_and_mounts(spec["capture"])
        env.update(capture_env)
        mounts.update(capture_mounts)
    if spec.get("mqtt") and not candidate:
        mqtt_env, mqtt_mounts = mqtt_env_and_mounts(spec["mqtt"], name)
        env.update(mqtt_env)
        mounts.update(mqtt_mounts)
    return {
        "image": image_ref,
        "name": name,
        "user": spec["user"],
        "environment": env,
        "labels": labels,
        "network_mode": "host",
        "volumes": mounts,
        "tmpfs": {"/tmp": f"{TMPFS_OPTIONS},size={spec['tmpfs_bytes']}"},
        **HARDENED_RUN,
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


def container_env(container) -> dict[str, str]:
    pairs = (container.attrs.get("Config") or {}).get("Env") or []
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def service_address(container) -> tuple:
    """(address, port) the container serves the API on (shared during a switch)."""
    env = container_env(container)
    port = env.get(ENV_PORT)
    return env.get(ENV_HOST) or "127.0.0.1", int(port) if port else None


def grpc_address(container) -> tuple | None:
    """(host, port) of a container's gRPC endpoint, or None when it has none."""
    env = container_env(container)
    port = env.get(ENV_GRPC_PORT)
    return (env.get(ENV_HOST) or "127.0.0.1", int(port)) if port else None


def check_address(container) -> tuple:
    """(address, port) only this container answers on: its check port, or for a candidate
    (which has none) its service address."""
    port = container_env(container).get(ENV_CHECK_PORT)
    return ("127.0.0.1", int(port)) if port else service_address(container)

# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""A Docker SDK client for the modules, with failures that say what to do.

Works with the Docker SDK for Python >= 5.0 (Debian 12 and Ubuntu 22.04 ship 5.0.3 as
python3-docker): only APIs that exist in 5.0.3 are used here and by the other module_utils.
"""

from __future__ import annotations

import sys
import traceback

try:
    import docker
    from docker.errors import APIError, DockerException, ImageNotFound, NotFound

    HAS_DOCKER_SDK = True
    DOCKER_SDK_IMPORT_ERROR = None
except ImportError:  # reported by get_docker_client(), not at import time
    docker = None
    HAS_DOCKER_SDK = False
    DOCKER_SDK_IMPORT_ERROR = traceback.format_exc()

    class DockerException(Exception):  # type: ignore[no-redef]
        pass

    class APIError(DockerException):  # type: ignore[no-redef]
        pass

    class NotFound(APIError):  # type: ignore[no-redef]
        pass

    class ImageNotFound(NotFound):  # type: ignore[no-redef]
        pass


MIN_SDK_VERSION = (5, 0)
INSTALL_HINT = "install python3-docker (or pip install docker) on the target"

__all__ = [
    "APIError",
    "DockerException",
    "ImageNotFound",
    "NotFound",
    "docker_error_message",
    "get_docker_client",
    "sdk_version",
]


def sdk_version() -> str | None:
    return getattr(docker, "__version__", None) if HAS_DOCKER_SDK else None


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def engine_hint(error: Exception) -> str:
    text = str(error)
    if "Permission denied" in text or "PermissionError" in text:
        return "run the task as root (become: true) or add the user to the docker group"
    return "start the docker service (systemctl start docker) and check `docker info`"


def docker_error_message(action: str, error: Exception) -> str:
    """One line for fail_json: what failed, the engine's words, and what to do."""
    explanation = getattr(error, "explanation", None)
    detail = explanation.decode() if isinstance(explanation, bytes) else explanation
    if not detail:
        detail = str(error)
    if isinstance(error, APIError):
        return f"{action} failed: {detail}"
    return f"{action} failed: {detail}: {engine_hint(error)}"


def get_docker_client(module, timeout: int = 60):
    """A connected docker.DockerClient for the engine of DOCKER_HOST (default: local socket).

    Fails the module with a message that says what to install or start.
    """
    if not HAS_DOCKER_SDK:
        module.fail_json(
            msg=f"the Docker SDK for Python is missing for {sys.executable} on the target: "
            f"{INSTALL_HINT} (or point ansible_python_interpreter at a Python that has it)",
            exception=DOCKER_SDK_IMPORT_ERROR,
        )
    version = sdk_version() or "0"
    if _version_tuple(version) < MIN_SDK_VERSION:
        module.fail_json(
            msg=f"the Docker SDK for Python on the target is {version}, 5.0 or newer is needed: "
            + INSTALL_HINT
        )
    try:
        client = docker.from_env(version="auto", timeout=timeout)
        client.ping()
    except Exception as exc:  # DockerException, or a requests/urllib3 error it does not wrap
        module.fail_json(
            msg=f"cannot talk to the Docker engine: {exc}: {engine_hint(exc)}",
            exception=traceback.format_exc(),
        )
    return client

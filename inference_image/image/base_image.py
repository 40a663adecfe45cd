"""Resolve the base image: the one asked for, else a pull, else a local debootstrap build."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import docker
import docker.errors

LOCAL_BASE_IMAGE = "linkedge/debian-base:bookworm"
MAKE_BASE_SCRIPT = Path(__file__).with_name("make-base-image.sh")
log = logging.getLogger(__name__)


class BaseImageError(RuntimeError):
    """No usable base image could be found, pulled or built."""


def _present(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def build_local_base(name: str = LOCAL_BASE_IMAGE) -> str:
    """debootstrap a minimal bookworm and `docker import` it (needs only a Debian mirror)."""
    result = subprocess.run(
        ["bash", str(MAKE_BASE_SCRIPT), name],
        env={"LINKEDGE_TRY_PULL": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BaseImageError(
            f"could not build the local base image {name} with debootstrap:\n"
            + result.stderr[-2000:]
        )
    return name


def resolve_base_image(client: docker.DockerClient, requested: str, allow_pull: bool = True) -> str:
    """Use `requested` if present or pullable; otherwise fall back to a local base image."""
    if _present(client, requested):
        return requested
    if allow_pull:
        try:
            client.images.pull(requested)
            return requested
        except docker.errors.APIError as exc:
            log.warning("cannot pull %s (%s); falling back to %s", requested, exc, LOCAL_BASE_IMAGE)
    if _present(client, LOCAL_BASE_IMAGE):
        return LOCAL_BASE_IMAGE
    log.warning("building %s with debootstrap (about 30 s)", LOCAL_BASE_IMAGE)
    return build_local_base(LOCAL_BASE_IMAGE)

"""Resolve the base image: the one asked for, else a pull, else a local debootstrap build.

The local build is a Debian bookworm: it stands in for any image whose pull failed (the
documented fallback), but without pulling (--no-pull) only for a Debian bookworm image."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import docker
import docker.errors

LOCAL_BASE_IMAGE = "linkedge/debian-base:bookworm"
# What LOCAL_BASE_IMAGE can replace when pulling is disabled.
BOOKWORM_IMAGES = ("debian:bookworm-slim", "debian:bookworm")
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
    """`requested` if present or pullable; otherwise the local debootstrap base image.

    Without pulling, only a Debian bookworm image is replaced by the local base (with a
    warning); any other absent image is a BaseImageError, never silently another image."""
    if _present(client, requested):
        return requested
    if allow_pull:
        try:
            client.images.pull(requested)
            return requested
        except docker.errors.APIError as exc:
            log.warning("cannot pull %s (%s); falling back to %s", requested, exc, LOCAL_BASE_IMAGE)
    elif requested in BOOKWORM_IMAGES:
        log.warning("%s is absent and pulling is disabled: using %s", requested, LOCAL_BASE_IMAGE)
    elif requested != LOCAL_BASE_IMAGE:
        raise BaseImageError(
            f"base image {requested} does not exist locally and pulling is disabled (--no-pull): "
            "pull or build it first, or drop --no-pull"
        )
    if _present(client, LOCAL_BASE_IMAGE):
        return LOCAL_BASE_IMAGE
    log.warning("building %s with debootstrap (about 30 s)", LOCAL_BASE_IMAGE)
    return build_local_base(LOCAL_BASE_IMAGE)

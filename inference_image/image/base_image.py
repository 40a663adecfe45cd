"""Resolve the base image: the one asked for, else a pull, else a local debootstrap build.

The local build is a Debian bookworm: it stands in for any image whose pull failed (the
documented fallback), but without pulling (--no-pull) only for a Debian bookworm image."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import docker
import docker.errors

from .architecture import ArchitectureError, set_architecture
from .platforms import Platform, host_platform

LOCAL_BASE_IMAGE = "linkedge/debian-base:bookworm"
# What LOCAL_BASE_IMAGE can replace when pulling is disabled.
BOOKWORM_IMAGES = ("debian:bookworm-slim", "debian:bookworm")
DEFAULT_BOOKWORM = BOOKWORM_IMAGES[0]
MAKE_BASE_SCRIPT = Path(__file__).with_name("make-base-image.sh")
log = logging.getLogger(__name__)


class BaseImageError(RuntimeError):
    """No usable base image could be found, pulled or built."""


def local_base_image(platform: Platform | None = None) -> str:
    """The local debootstrap base's name: LOCAL_BASE_IMAGE for the host's architecture, with
    the architecture's suffix for another (linkedge/debian-base:bookworm-arm64)."""
    platform = platform or host_platform()
    return LOCAL_BASE_IMAGE if platform == host_platform() else LOCAL_BASE_IMAGE + platform.suffix


def _present(client: docker.DockerClient, name: str, platform: Platform | None = None) -> bool:
    """NAME is in the engine (for PLATFORM's architecture, when given)."""
    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return platform is None or image.attrs.get("Architecture") == platform.debian_arch


def build_local_base(
    name: str = LOCAL_BASE_IMAGE,
    platform: Platform | None = None,
    client: docker.DockerClient | None = None,
) -> str:
    """debootstrap a minimal bookworm for PLATFORM (default: the host's) and `docker import`
    it (needs only a Debian mirror; another architecture also needs QEMU, which
    ensure-binfmt.sh sets up or refuses with its reason)."""
    platform = platform or host_platform()
    result = subprocess.run(
        ["bash", str(MAKE_BASE_SCRIPT), name, platform.debian_arch],
        env={"LINKEDGE_TRY_PULL": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BaseImageError(
            f"could not build the local {platform.name} base image {name} with debootstrap:\n"
            + result.stderr[-2000:]
        )
    try:
        set_architecture(client or docker.from_env(timeout=600), name, platform)
    except (ArchitectureError, docker.errors.DockerException) as exc:
        raise BaseImageError(
            f"{name}: its config cannot say {platform.debian_arch}: {exc}"
        ) from exc
    return name


def resolve_base_image(
    client: docker.DockerClient,
    requested: str,
    allow_pull: bool = True,
    platform: Platform | None = None,
) -> str:
    """`requested` if present or pullable; otherwise the local debootstrap base image.

    Without pulling, only a Debian bookworm image is replaced by the local base (with a
    warning); any other absent image is a BaseImageError, never silently another image.
    For another architecture than the host's (PLATFORM), `requested` counts only when the
    engine holds it for that architecture; it is never pulled (a pull would retag the host's
    image under the same name), and the local base is built for that architecture."""
    platform = platform or host_platform()
    foreign = platform != host_platform()
    local = local_base_image(platform)
    if _present(client, requested, platform if foreign else None):
        return requested
    if foreign:
        if requested not in (*BOOKWORM_IMAGES, LOCAL_BASE_IMAGE, local):
            raise BaseImageError(
                f"base image {requested} is not in this engine for {platform.name}: build or "
                f"load it for {platform.name}, or use {DEFAULT_BOOKWORM}"
            )
        log.warning("%s for %s: using the local base %s", requested, platform.name, local)
    elif allow_pull:
        try:
            client.images.pull(requested)
            return requested
        except docker.errors.APIError as exc:
            log.warning("cannot pull %s (%s); falling back to %s", requested, exc, local)
    elif requested in BOOKWORM_IMAGES:
        log.warning("%s is absent and pulling is disabled: using %s", requested, local)
    elif requested != LOCAL_BASE_IMAGE:
        raise BaseImageError(
            f"base image {requested} does not exist locally and pulling is disabled (--no-pull): "
            "pull or build it first, or drop --no-pull"
        )
    if _present(client, local, platform):
        return local
    log.warning("building %s with debootstrap (about 30 s; another architecture's: minutes)", local)
    return build_local_base(local, platform, client)

"""The architectures a serving image is built for, and their names in each tool's language.

Docker says ``linux/arm64``, Debian ``arm64``, the kernel (``uname -m``, Ansible's
``ansible_architecture``) ``aarch64``, and pip's wheel tags ``manylinux_2_28_aarch64``: one
record per architecture keeps them together. The architectures themselves, and their Debian
and kernel names, are the collection's (``contract.ARCHITECTURE_MACHINES``): a truck picks its
image from a release by the same names.
"""

from __future__ import annotations

import platform as host
from dataclasses import dataclass

from ..contract import ARCHITECTURE_MACHINES, architecture_named


@dataclass(frozen=True)
class Platform:
    name: str  # Docker's: linux/arm64
    debian_arch: str  # Debian's and the image config's architecture: arm64
    machine: str  # the kernel's (uname -m, ansible_architecture): aarch64
    wheel_platforms: tuple[str, ...]  # pip download --platform, best first

    @property
    def suffix(self) -> str:
        """What tags and file names carry for this architecture: -arm64."""
        return f"-{self.debian_arch}"


AMD64 = Platform(
    "linux/amd64",
    "amd64",
    ARCHITECTURE_MACHINES["amd64"],
    ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
)
ARM64 = Platform(
    "linux/arm64",
    "arm64",
    ARCHITECTURE_MACHINES["arm64"],
    ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
)
PLATFORMS = (AMD64, ARM64)


def platform_named(name: str) -> Platform:
    """The platform for any of its names (linux/arm64, arm64, aarch64); ValueError naming the
    known ones otherwise."""
    known = ", ".join(candidate.name for candidate in PLATFORMS)
    try:
        architecture = architecture_named(name)
    except ValueError:
        raise ValueError(f"unknown platform {name!r}: LinkEdge builds for {known}") from None
    for candidate in PLATFORMS:
        if candidate.debian_arch == architecture:
            return candidate
    raise ValueError(f"no platform record for {architecture}: LinkEdge builds for {known}")


def host_platform() -> Platform:
    """This machine's platform (its Docker engine runs this one without emulation)."""
    return platform_named(host.machine())

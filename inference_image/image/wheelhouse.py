"""Download the serving image's wheels on the host, for builds that cannot reach PyPI.

One wheelhouse per architecture: the host's in the wheelhouse directory itself, another's in
its subdirectory named for it (``build/wheelhouse/arm64/``), since a wheel's name and version
alone do not say which machine it runs on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .platforms import Platform, host_platform

REQUIREMENTS = Path(__file__).with_name("requirements-runtime.txt")
PYTHON_VERSION = "3.11"  # Debian bookworm's python3, the image's interpreter


class WheelhouseError(RuntimeError):
    """A wheel could not be downloaded or is missing."""


def pinned_requirements(path: Path = REQUIREMENTS) -> dict[str, str]:
    """name -> version for every `name==version` line."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheelhouse_for(root: Path, platform: Platform | None = None) -> Path:
    """Where PLATFORM's wheels live under the wheelhouse ROOT (ROOT itself for the host's)."""
    platform = platform or host_platform()
    return Path(root) if platform == host_platform() else Path(root) / platform.debian_arch


def _runs_on(wheel: Path, platform: Platform) -> bool:
    """The wheel's platform tag is pure Python or names PLATFORM's machine."""
    tags = wheel.name[: -len(".whl")].rsplit("-", 1)[-1].split(".")
    return any(tag == "any" or tag.endswith(f"_{platform.machine}") for tag in tags)


def wheel_for(
    wheelhouse: Path, name: str, version: str, platform: Platform | None = None
) -> Path | None:
    platform = platform or host_platform()
    prefix = f"{_normalise(name)}-{version}-"
    for wheel in sorted(Path(wheelhouse).glob("*.whl")):
        named = _normalise(wheel.name.split("-", 1)[0]) + "-" + wheel.name.split("-")[1] + "-"
        if named == prefix and _runs_on(wheel, platform):
            return wheel
    return None


def missing_wheels(
    wheelhouse: Path, requirements: Path = REQUIREMENTS, platform: Platform | None = None
) -> list[str]:
    return [
        f"{name}=={version}"
        for name, version in pinned_requirements(requirements).items()
        if wheel_for(wheelhouse, name, version, platform) is None
    ]


def ensure_wheelhouse(
    wheelhouse: Path, requirements: Path = REQUIREMENTS, platform: Platform | None = None
) -> list[Path]:
    """Download whatever pinned wheel for PLATFORM (default: the host's) is missing from
    WHEELHOUSE (the directory itself: see wheelhouse_for); return the wheels the image needs."""
    platform = platform or host_platform()
    wheelhouse = Path(wheelhouse)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    if missing_wheels(wheelhouse, requirements, platform):
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            PYTHON_VERSION,
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "--abi",
            "abi3",
            "--abi",
            "none",
            "-r",
            str(requirements),
            "-d",
            str(wheelhouse),
        ]
        for tag in platform.wheel_platforms:
            command += ["--platform", tag]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            missing = ", ".join(missing_wheels(wheelhouse, requirements, platform))
            raise WheelhouseError(
                f"pip download failed; the {platform.name} image needs these wheels in "
                f"{wheelhouse}: {missing}\n" + result.stderr[-2000:]
            )
    still_missing = missing_wheels(wheelhouse, requirements, platform)
    if still_missing:
        raise WheelhouseError(
            f"wheelhouse {wheelhouse} lacks {', '.join(still_missing)} for {platform.name}"
        )
    pins = pinned_requirements(requirements)
    return [wheel_for(wheelhouse, name, version, platform) for name, version in pins.items()]  # type: ignore[misc]

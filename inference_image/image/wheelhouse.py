"""Download the serving image's wheels on the host, for builds that cannot reach PyPI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("requirements-runtime.txt")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
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


def wheel_for(wheelhouse: Path, name: str, version: str) -> Path | None:
    prefix = f"{_normalise(name)}-{version}-"
    for wheel in sorted(Path(wheelhouse).glob("*.whl")):
        if _normalise(wheel.name.split("-", 1)[0]) + "-" + wheel.name.split("-")[1] + "-" == prefix:
            return wheel
    return None


def missing_wheels(wheelhouse: Path, requirements: Path = REQUIREMENTS) -> list[str]:
    return [
        f"{name}=={version}"
        for name, version in pinned_requirements(requirements).items()
        if wheel_for(wheelhouse, name, version) is None
    ]


def ensure_wheelhouse(wheelhouse: Path, requirements: Path = REQUIREMENTS) -> list[Path]:
    """Download whatever pinned wheel is missing; return the wheels the image needs."""
    wheelhouse = Path(wheelhouse)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    if missing_wheels(wheelhouse, requirements):
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
        for platform in PLATFORMS:
            command += ["--platform", platform]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise WheelhouseError(
                "pip download failed; the image needs these wheels in "
                f"{wheelhouse}: {', '.join(missing_wheels(wheelhouse, requirements))}\n"
                + result.stderr[-2000:]
            )
    still_missing = missing_wheels(wheelhouse, requirements)
    if still_missing:
        raise WheelhouseError(f"wheelhouse {wheelhouse} lacks {', '.join(still_missing)}")
    pins = pinned_requirements(requirements)
    return [wheel_for(wheelhouse, name, version) for name, version in pins.items()]  # type: ignore[misc]

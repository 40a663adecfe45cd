"""What the bench needs on the machine (wrk, a venv for MLServer and matplotlib) and what it
records about the machine."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_VENV = REPO / "build" / "bench-venv"
# uvloop 0.22 crashes MLServer's inference workers; versions pinned so runs stay comparable.
BENCH_REQUIREMENTS = (
    "mlserver==1.7.1",
    "mlserver-xgboost==1.7.1",
    "uvloop<0.22",
    "matplotlib>=3.8",
)


class BenchSetupError(RuntimeError):
    """A tool the bench needs could not be found or installed."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def ensure_wrk() -> str:
    """The wrk binary, installed from Debian's package when missing (needs root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchSetupError("wrk is not installed: run `apt-get install wrk` as root")
    log("installing wrk (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise BenchSetupError(f"apt-get install wrk failed:\n{result.stderr[-1000:]}")
    found = shutil.which("wrk")
    if not found:
        raise BenchSetupError("wrk is still missing after apt-get install wrk")
    return found


def bench_python(venv: Path = BENCH_VENV) -> Path:
    return venv / "bin" / "python"


def bench_venv_ready(venv: Path = BENCH_VENV) -> bool:
    """build/bench-venv holds BENCH_REQUIREMENTS already (nothing to install)."""
    marker = venv / ".linkedge-bench-installed"
    wanted = "\n".join(BENCH_REQUIREMENTS) + "\n"
    return marker.exists() and marker.read_text() == wanted and bench_python(venv).exists()


def ensure_bench_venv(venv: Path = BENCH_VENV) -> Path:
    """build/bench-venv with MLServer, mlserver-xgboost and matplotlib (pip, PyPI)."""
    marker = venv / ".linkedge-bench-installed"
    wanted = "\n".join(BENCH_REQUIREMENTS) + "\n"
    if bench_venv_ready(venv):
        return venv
    if not bench_python(venv).exists():
        log(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log(f"installing {' '.join(BENCH_REQUIREMENTS)} into {venv} (pip)")
    result = subprocess.run(
        [
            str(bench_python(venv)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *BENCH_REQUIREMENTS,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BenchSetupError(f"pip install into {venv} failed:\n{result.stderr[-2000:]}")
    marker.write_text(wanted)
    return venv


def package_version(venv: Path, name: str) -> str | None:
    result = subprocess.run(
        [
            str(bench_python(venv)),
            "-c",
            f"import importlib.metadata as m; print(m.version({name!r}))",
        ],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() or None


def git_state(repo: Path = REPO) -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def image_architecture(image: str) -> dict[str, Any]:
    """The image's architecture, and whether this machine runs it under emulation (QEMU user
    mode: an arm64 image on an x86_64 machine), whose figures are not a hardware's."""
    from inference_image.contract import architecture_named
    from inference_image.image.platforms import host_platform

    found = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Architecture}}", image],
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        architecture = architecture_named(found)
    except ValueError:
        return {"architecture": found or None, "emulated": False}
    return {"architecture": architecture, "emulated": architecture != host_platform().debian_arch}


def machine_info() -> dict[str, Any]:
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    wrk = shutil.which("wrk")
    wrk_version = None
    if wrk:
        first = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.splitlines()
        wrk_version = first[0].strip() if first else None
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": docker or None,
        "wrk": wrk_version,
    }

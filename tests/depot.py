"""A depot directory as CI writes it (docs/channels.md): a release copied into releases/ and a
channel pointed at it with the real CLI. Shared by the host pull-mode tests
(tests/collection/test_pull_sync.py) and the Molecule pull scenario (molecule/pull/tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = REPO / "build" / "keys"
CLI = [sys.executable, "-m", "inference_image"]


def channel(depot: Path, action: str, *options: str | Path, key: Path | None = None) -> dict:
    """`linkedge-image channel <action> --depot <depot> ...` signed with `key` (default: the
    development release key); the pointer it wrote, as the CLI prints it."""
    argv = [*CLI, "channel", action, "--depot", depot, *options]
    argv += ["--signing-key", key or KEYS / "release-signing.key"]
    done = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return json.loads(done.stdout)


def publish(depot: Path, name: str, release: Path, key: Path | None = None) -> dict:
    """Put the release into the depot (hard links: never write through them) and point the
    channel `name` at it."""
    target = depot / "releases" / release.name
    if not target.exists():
        shutil.copytree(release, target, copy_function=os.link)
    return channel(depot, "publish", "--channel", name, "--release", target, key=key)

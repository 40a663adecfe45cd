"""Run a real linkedge.edge module through ansible-playbook and return its JSON result."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or (
    "ansible-playbook"
)
# The Python the modules run with on the "target" (this host). Default: the venv's (SDK 7).
TARGET_PYTHON = os.environ.get("LINKEDGE_TEST_TARGET_PYTHON", sys.executable)


@dataclass
class ModuleRun:
    result: dict[str, Any]
    seconds: float
    returncode: int

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed"))

    def __getitem__(self, key: str) -> Any:
        return self.result[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.result.get(key, default)


def run_module(
    name: str,
    args: dict[str, Any] | None = None,
    check: bool = False,
    python: str | None = None,
    timeout: float = 300,
) -> ModuleRun:
    """linkedge.edge.NAME with ARGS on localhost (connection local); the task's result."""
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [{"name": "under test", f"linkedge.edge.{name}": args or {}}],
        }
    ]
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
    with tempfile.TemporaryDirectory(prefix="linkedge-module-test-") as tmp:
        playbook = Path(tmp) / "play.yml"
        playbook.write_text(json.dumps(play))
        command = [
            ANSIBLE_PLAYBOOK,
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            json.dumps({"ansible_python_interpreter": python or TARGET_PYTHON}),
            str(playbook),
        ]
        if check:
            command.append("--check")
        started = time.monotonic()
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
        seconds = time.monotonic() - started
    try:
        output = json.loads(done.stdout)
        result = output["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(
            f"ansible-playbook gave no task result ({exc}); rc={done.returncode}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        ) from exc
    return ModuleRun(result, seconds, done.returncode)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

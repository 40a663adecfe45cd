"""The servers under test: the real LinkEdge image in Docker, and MLServer from a venv.

Both listen on 127.0.0.1 only. The container runs hardened exactly as the smoke test runs
it (read-only root, tmpfs /tmp, no capabilities, no-new-privileges) with no CPU limit, on
the host's network namespace: publishing a port would put Docker's userland proxy, a third
process copying every byte, between wrk and gunicorn, which MLServer on the host does not
pay. Both get 2 workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from inference_image.contract import (
    ENV_GRPC_PORT,
    ENV_HOST,
    ENV_PORT,
    MODEL_NAME,
    hardened_run_flags,
)

from .procs import process_tree

READY_TIMEOUT = 120.0


class ServerError(RuntimeError):
    """A server did not start or stopped answering."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


class LinkEdgeContainer:
    """``docker run`` of the image, hardened, 2 gunicorn workers.

    Both ports are free ports chosen at start and passed explicitly (LINKEDGE_PORT,
    LINKEDGE_GRPC_PORT): on the host's network the image's defaults (8080, 8081) would clash
    with another container or a server on the machine. ``env`` may still override them
    (an empty LINKEDGE_GRPC_PORT: no gRPC)."""

    kind = "linkedge"

    def __init__(
        self,
        image: str,
        key: str = "linkedge",
        label: str = "LinkEdge",
        workers: int = 2,
        env: dict[str, str] | None = None,
        mounts: list[tuple[Path, str, bool]] | None = None,
    ) -> None:
        self.image = image
        self.key = key
        self.label = label
        self.workers = workers
        self.env = dict(env or {})  # more --env (e.g. LINKEDGE_MQTT_*)
        self.mounts = list(mounts or [])  # (host path, container path, read-only)
        self.port = 0
        self.grpc_port = 0
        self.container_id: str | None = None
        self.root_pid = 0
        self.cold_start_seconds = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def run_command(self) -> list[str]:
        return [
            "docker",
            "run",
            "--detach",
            "--network=host",
            *hardened_run_flags(),
            "--label=io.linkedge.bench=1",
            f"--env={ENV_HOST}=127.0.0.1",
            f"--env={ENV_PORT}={self.port}",
            f"--env={ENV_GRPC_PORT}={self.grpc_port}",
            f"--env=LINKEDGE_WORKERS={self.workers}",
            *(f"--env={name}={value}" for name, value in self.env.items()),
            *(
                f"--volume={source}:{target}{':ro' if read_only else ''}"
                for source, target, read_only in self.mounts
            ),
            self.image,
        ]

    def start(self) -> float:
        """Run the container; return seconds from ``docker run`` to /v2/health/ready = 200."""
        self.port = free_port()
        self.grpc_port = free_port()
        started = time.monotonic()
        result = subprocess.run(self.run_command(), capture_output=True, text=True)
        if result.returncode != 0:
            raise ServerError(f"docker run {self.image} failed: {result.stderr.strip()}")
        self.container_id = result.stdout.strip()
        deadline = started + READY_TIMEOUT
        checks = 0
        while http_status(f"{self.base_url}/v2/health/ready", timeout=1.0) != 200:
            checks += 1
            if checks % 50 == 0 and not self._running():
                logs = subprocess.run(
                    ["docker", "logs", "--tail", "30", self.container_id],
                    capture_output=True,
                    text=True,
                )
                self.stop()
                raise ServerError(f"{self.image} exited before ready:\n{logs.stdout}{logs.stderr}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{self.image} was not ready within {READY_TIMEOUT:.0f} s")
            time.sleep(0.005)
        self.cold_start_seconds = time.monotonic() - started
        self.root_pid = int(self._inspect("{{.State.Pid}}"))
        return self.cold_start_seconds

    def _inspect(self, template: str) -> str:
        assert self.container_id
        return subprocess.run(
            ["docker", "inspect", "--format", template, self.container_id],
            capture_output=True,
            text=True,
        ).stdout.strip()

    def _running(self) -> bool:
        return self._inspect("{{.State.Running}}") == "true"

    def logs(self, tail: int = 30) -> str:
        if not self.container_id:
            return ""
        result = subprocess.run(
            ["docker", "logs", "--tail", str(tail), self.container_id],
            capture_output=True,
            text=True,
        )
        return result.stdout + result.stderr

    def pids(self) -> list[int]:
        return process_tree(self.root_pid) if self.root_pid else []

    def stop(self) -> None:
        if self.container_id:
            subprocess.run(["docker", "rm", "--force", self.container_id], capture_output=True)
            self.container_id = None
            self.root_pid = 0


class MLServerProcess:
    """``mlserver start`` with mlserver-xgboost serving the bundle's model.json."""

    kind = "mlserver"

    def __init__(
        self,
        venv: Path,
        model_file: Path,
        workdir: Path,
        key: str,
        label: str,
        workers: int = 2,
        threads_per_worker: int | None = None,
    ) -> None:
        self.key = key
        self.venv = venv
        self.model_file = model_file
        self.workdir = workdir
        self.label = label
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.port = 0
        self.grpc_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.root_pid = 0
        self.cold_start_seconds = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def settings(self) -> dict[str, object]:
        return {
            "host": "127.0.0.1",
            "http_port": self.port,
            "grpc_port": self.grpc_port,
            "metrics_port": free_port(),
            "parallel_workers": self.workers,
            "debug": False,  # no access log, as LinkEdge's default
        }

    def model_settings(self) -> dict[str, object]:
        return {
            "name": MODEL_NAME,
            "implementation": "mlserver_xgboost.XGBoostModel",
            "parameters": {"uri": str(self.model_file.resolve()), "version": "bench"},
        }

    def start(self) -> float:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.port = free_port()
        self.grpc_port = free_port()
        (self.workdir / "settings.json").write_text(json.dumps(self.settings()))
        (self.workdir / "model-settings.json").write_text(json.dumps(self.model_settings()))
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PYTHON", "VIRTUAL_ENV", "OMP_", "LINKEDGE_"))
        }
        if self.threads_per_worker is not None:
            env["OMP_NUM_THREADS"] = str(self.threads_per_worker)
        log = open(self.workdir / "mlserver.log", "wb")  # noqa: SIM115 - owned by the process
        started = time.monotonic()
        self.process = subprocess.Popen(
            [str(self.venv / "bin" / "mlserver"), "start", str(self.workdir)],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        ready = f"{self.base_url}/v2/models/{MODEL_NAME}/ready"
        while http_status(ready, timeout=1.0) != 200:
            if self.process.poll() is not None:
                tail = (self.workdir / "mlserver.log").read_text(errors="replace")[-2000:]
                raise ServerError(f"{self.label} exited with {self.process.returncode}:\n{tail}")
            if time.monotonic() - started > READY_TIMEOUT:
                self.stop()
                raise ServerError(f"{self.label} was not ready within {READY_TIMEOUT:.0f} s")
            time.sleep(0.02)
        self.cold_start_seconds = time.monotonic() - started
        self.root_pid = self.process.pid
        return self.cold_start_seconds

    def pids(self) -> list[int]:
        return process_tree(self.root_pid) if self.root_pid else []

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # our own session: MLServer + workers
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        self.root_pid = 0

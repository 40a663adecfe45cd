"""Start the serving image, wait until it is ready, and check its smoke vectors over HTTP."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import docker.models.containers

from ..contract import (
    DEFAULT_PORT,
    HARDENED_RUN,
    READY_PATH,
    TMPFS_OPTIONS,
    check_smoke_vectors_over_http,
)

CONTAINER_PORT = DEFAULT_PORT


class SmokeTestError(RuntimeError):
    """The container did not become ready or answered wrongly."""


@dataclass
class RunningService:
    container: docker.models.containers.Container
    base_url: str
    cold_start_seconds: float
    mismatches: list[str] = field(default_factory=list)

    def stop(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.container.remove(force=True)


def http_json(url: str, payload: Any | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _decode(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decode(exc.read())


def _decode(body: bytes) -> Any:
    """JSON when the body is JSON, else its text (e.g. Prometheus metrics)."""
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode(errors="replace")


def wait_ready(base_url: str, timeout: float = 60.0, container=None) -> float:
    """Seconds until /v2/health/ready answered 200; SmokeTestError on timeout or exit."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            status, _ = http_json(base_url + READY_PATH, timeout=1.0)
            if status == 200:
                return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if container is not None:
            container.reload()
            if container.status in ("exited", "dead"):
                logs = container.logs(tail=30).decode(errors="replace")
                raise SmokeTestError(f"container exited before it was ready:\n{logs}")
        time.sleep(0.05)
    raise SmokeTestError(f"{base_url} was not ready within {timeout:.0f} s")


def start_service(
    image: str,
    client: docker.DockerClient | None = None,
    host_port: int | None = None,
    name: str | None = None,
    environment: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
) -> RunningService:
    """Run the image hardened (read-only, no capabilities) on 127.0.0.1 and wait for ready
    (READY_TIMEOUT: longer for another architecture's image, under emulation)."""
    client = client or docker.from_env()
    started = time.monotonic()
    container = client.containers.create(
        image,
        name=name,
        ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", host_port)},
        tmpfs={"/tmp": f"{TMPFS_OPTIONS},size=64m"},
        **HARDENED_RUN,
        environment=environment or {},
    )
    try:
        container.start()
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"][f"{CONTAINER_PORT}/tcp"][0]["HostPort"]
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, ready_timeout, container=container)
    except BaseException:
        container.remove(force=True)
        raise
    return RunningService(container, base_url, round(time.monotonic() - started, 3))


def check_smoke_vectors(base_url: str, smoke_vectors: list[dict[str, Any]], features) -> list[str]:
    """Send every smoke vector through /predict and V2 infer (the contract's one check, the
    same the collection runs on a truck); return the mismatches."""

    def post(path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        return http_json(base_url + path, payload)

    return check_smoke_vectors_over_http(post, smoke_vectors, list(features))

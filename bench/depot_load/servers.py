"""The servers on the loopback: Debian's nginx (the depot directory, over HTTP and HTTPS) and
docker-registry, their binaries, and the pusher that fills the registry."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..procs import process_tree, stop_process
from .images import Blob, Image
from .settings import (
    DEPOT_PREFIX,
    MANIFEST_V2,
    NGINX,
    PACKAGES,
    REGISTRY,
    REPOSITORY,
    SetupError,
    log,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SetupError(f"{what} exited with status {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise SetupError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def ensure_binary(path: str, install: bool) -> str:
    """PATH's tool, installed from its Debian package when missing and INSTALL (needs root)."""
    if Path(path).exists():
        return path
    package = PACKAGES[path]
    if not install or os.geteuid() != 0:
        raise SetupError(f"{path} is missing: apt-get install {package}")
    log(f"installing {package} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq"]
    command += ["--no-install-recommends", package]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise SetupError(f"apt-get install {package} failed: {last}")
    if not Path(path).exists():
        raise SetupError(f"{path} is still missing after apt-get install {package}")
    return path


@dataclass(frozen=True)
class TlsSite:
    name: str
    port: int
    certificate: Path
    key: Path
    tickets: bool = True


class Nginx:
    """Debian's nginx on the loopback with a configuration of its own: the depot directory under
    /linkedge/ (conditional requests: `if_modified_since before`, as operating-a-fleet.md
    says), over HTTP and, for each TlsSite, over HTTPS."""

    def __init__(
        self,
        work: Path,
        depot: Path,
        workers: int = 1,
        sites: Iterable[TlsSite] = (),
        buffered_log: bool = True,
    ):
        """BUFFERED_LOG off writes each request's log line at once (tests read it after each
        request); on, nginx buffers 256 KiB or a second (the load test)."""
        self.work, self.depot, self.workers = work, depot, workers
        self.sites, self.buffered_log = list(sites), buffered_log
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        (work / "logs").mkdir(parents=True, exist_ok=True)
        (work / "nginx.conf").write_text(self._config())

    @property
    def access_log(self) -> Path:
        return self.work / "logs" / "access.log"

    @property
    def url(self) -> str:
        """The depot's URL over HTTP (what edge_manager_depot names)."""
        return f"http://127.0.0.1:{self.port}{DEPOT_PREFIX}"

    def requests(self) -> list[str]:
        """The access log's lines: `$msec $status $request_method $uri $bytes_sent ...`."""
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []

    def _config(self) -> str:
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"  {kind}_temp_path {self.work}/tmp;\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        buffer = " buffer=256k flush=1s" if self.buffered_log else ""
        servers = [self._server(f"listen 127.0.0.1:{self.port} backlog=4096;")]
        servers += [self._tls_server(site) for site in self.sites]
        return (
            f"{user}worker_processes {self.workers};\nworker_rlimit_nofile 65536;\n"
            f"pid {self.work}/nginx.pid;\nerror_log {self.work}/logs/error.log warn;\n"
            "events { worker_connections 16384; }\n"
            "http {\n"
            "  log_format depot '$msec $status $request_method $uri $bytes_sent "
            "$request_length $request_time';\n"
            f"  access_log {self.access_log} depot{buffer};\n"
            "  sendfile on;\n  tcp_nopush on;\n"
            "  types { application/json json; }\n  default_type application/octet-stream;\n"
            f"{temp}" + "".join(servers) + "}\n"
        )

    def _server(self, listen: str, extra: str = "") -> str:
        return (
            f"  server {{\n    {listen}\n{extra}"
            f"    location {DEPOT_PREFIX}/ {{ alias {self.depot}/; if_modified_since before; }}\n"
            "  }\n"
        )

    def _tls_server(self, site: TlsSite) -> str:
        tickets = "" if site.tickets else "    ssl_conf_command NumTickets 0;\n"
        extra = (
            f"    ssl_certificate {site.certificate};\n    ssl_certificate_key {site.key};\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"    ssl_session_cache shared:{site.name}:1m;\n    ssl_session_timeout 1h;\n"
            f"    ssl_session_tickets {'on' if site.tickets else 'off'};\n{tickets}"
        )
        return self._server(f"listen 127.0.0.1:{site.port} ssl;", extra)

    def start(self) -> None:
        command = [NGINX, "-p", str(self.work), "-c", str(self.work / "nginx.conf")]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise SetupError(f"nginx refuses its configuration: {check.stderr.strip()[-300:]}")
        self.process = subprocess.Popen(
            [*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for port in [self.port, *(site.port for site in self.sites)]:
            wait_listening(port, self.process, "nginx", 10)

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process else []

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)  # SIGTERM: nginx flushes its buffered log first
            self.process = None


class Registry:
    """Debian's docker-registry (Docker Distribution 2.8) on a free loopback port, filesystem
    storage in a directory of its own, one JSON log line per request on stderr."""

    def __init__(self, work: Path):
        self.work, self.port = work, free_port()
        self.log_path = work / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None
        work.mkdir(parents=True, exist_ok=True)
        (work / "config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  formatter: json\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
            "  cache:\n    blobdescriptor: inmemory\n  delete:\n    enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
            "  headers:\n    X-Content-Type-Options: [nosniff]\n"
        )

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [REGISTRY, "serve", str(self.work / "config.yml")],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        wait_listening(self.port, self.process, "docker-registry", 15)

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process else []

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
            self.process = None


class RegistryPusher:
    """Pushes blobs (monolithic upload) and manifests over the registry's HTTP API."""

    def __init__(self, port: int):
        self.port = port

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def push_blob(self, blob: Blob) -> None:
        path = f"/v2/{REPOSITORY}/blobs/{blob.digest}"
        if self._request("HEAD", path)[0] == 200:
            return
        status, headers, _ = self._request("POST", f"/v2/{REPOSITORY}/blobs/uploads/")
        if status != 202:
            raise SetupError(f"registry refused an upload: HTTP {status}")
        location = urllib.parse.urlsplit(headers["Location"])
        query = f"{location.query}&" if location.query else ""
        target = f"{location.path}?{query}digest={urllib.parse.quote(blob.digest)}"
        kind = {"Content-Type": "application/octet-stream"}
        status, _, body = self._request("PUT", target, blob.data, kind)
        if status != 201:
            raise SetupError(f"registry refused blob {blob.digest}: HTTP {status} {body[:200]!r}")

    def push_image(self, image: Image) -> None:
        for blob in (image.config, *image.layers):
            self.push_blob(blob)
        path = f"/v2/{REPOSITORY}/manifests/{image.version}"
        status, _, body = self._request("PUT", path, image.manifest, {"Content-Type": MANIFEST_V2})
        if status != 201:
            raise SetupError(f"registry refused the manifest: HTTP {status} {body[:200]!r}")

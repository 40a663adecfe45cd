"""The pollers' HTTP: requests as get_url and the Docker engine send them, answers as they
come back, and the record of one exchange."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from .settings import ENGINE_AGENT


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)  # whole seconds, as get_url sends


def get_url_request(host: str, path: str, modified_since: float | None, force: bool) -> bytes:
    """The exact request ansible.builtin.get_url (urllib) sends, a new connection each."""
    lines = [f"GET {path} HTTP/1.1", "Accept-Encoding: identity", f"Host: {host}"]
    lines.append("User-Agent: ansible-httpget")
    if force:
        lines.append("Cache-control: no-cache")
    elif modified_since is not None:
        lines.append(f"If-Modified-Since: {http_date(modified_since)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def engine_request(host: str, path: str, accept: Iterable[str] = ()) -> bytes:
    """A request of the Docker engine's registry client (keep-alive)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", f"User-Agent: {ENGINE_AGENT}"]
    lines += [f"Accept: {media_type}" for media_type in accept]
    lines.append("Accept-Encoding: gzip")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes | None  # kept when asked (pointers, manifests), else only hashed
    digest: str  # sha256 hex of the body
    down: int  # bytes received: head and body


async def read_response(reader: asyncio.StreamReader, keep_body: bool) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        raise ValueError("chunked answer (not expected from nginx or the registry)")
    remaining = 0 if status in (204, 304) else int(headers.get("content-length", "0"))
    hasher, parts, received = hashlib.sha256(), [], 0
    while received < remaining:
        chunk = await reader.read(min(1 << 18, remaining - received))
        if not chunk:
            raise ValueError(f"answer cut after {received} of {remaining} body bytes")
        hasher.update(chunk)
        received += len(chunk)
        if keep_body:
            parts.append(chunk)
    body = b"".join(parts) if keep_body else None
    return Response(status, headers, body, hasher.hexdigest(), len(head) + received)


@dataclass(slots=True)
class Exchange:
    """One request as the depot saw it, from the poller's socket."""

    poller: int
    kind: str
    engine: str  # nginx | registry
    started: float
    ended: float
    status: int  # 0: no answer
    up: int
    down: int
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class FetchError(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

"""Raw HTTP/1.1 over a socket: hostile requests exactly as written, and their answers."""

from __future__ import annotations

import contextlib
import socket

from .hostile import HostileRequest


def request_bytes(request: HostileRequest, extra_headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {request.path} HTTP/1.1", "Host: fuzz", "Connection: close"]
    if request.content_type is not None:
        lines.append(f"Content-Type: {request.content_type}")
    for name, value in {**request.headers, **(extra_headers or {})}.items():
        lines.append(f"{name}: {value}")
    body = request.body
    if request.chunked:
        lines.append("Transfer-Encoding: chunked")
        size = 4096
        parts = [body[i : i + size] for i in range(0, len(body), size)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    else:
        length = request.content_length if request.content_length is not None else len(body)
        lines.append(f"Content-Length: {length}")
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    return head + body


def exchange(port: int, raw: bytes, timeout: float = 20.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` and read one answer (status 0: the server closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may answer early (413) and close: then read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        return 0, {}, received
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body

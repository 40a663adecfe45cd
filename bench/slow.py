"""Slow clients: connections that send a request start, then one byte now and then.

Half of them trickle a head that never ends (a header line one byte at a time), half a
complete head announcing a body they trickle; none ever finishes. A connection the server
answers or closes is replaced at once, so the server always has ``count`` slow connections
in progress. One thread drives them all (64 sockets, one byte each per turn).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

CLOSED = "closed"  # the server closed the connection without an answer
RESET = "reset"  # the server reset it


@dataclass
class _Slow:
    kind: str  # "head" or "body"
    sock: socket.socket
    opened: float
    received: bytes = b""


class SlowClients(threading.Thread):
    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        content_type: str = "application/json",
        count: int = 64,
        trickle_seconds: float = 1.0,
        body_length: int = 100_000,
    ) -> None:
        super().__init__(daemon=True, name="slow-clients")
        self.address = (host, port)
        self.count = count
        self.trickle_seconds = trickle_seconds
        start = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        self.starts = {
            "head": start.encode() + b"X-Slow: ",
            "body": (start + f"Content-Length: {body_length}\r\n\r\n").encode(),
        }
        self.slow: list[_Slow] = []
        self.stopping = threading.Event()
        self.opened = Counter[str]()
        self.outcomes = Counter[str]()  # "head 408", "body closed", ...
        self.lifetimes: list[float] = []  # seconds from open to the server's answer or close
        self.open_failures = 0
        self.bytes_sent = 0

    def _open(self, kind: str) -> None:
        try:
            sock = socket.create_connection(self.address, timeout=5)
            sock.sendall(self.starts[kind])
        except OSError:
            self.open_failures += 1
            return
        sock.setblocking(False)
        self.slow.append(_Slow(kind, sock, time.monotonic()))
        self.opened[kind] += 1

    def _ended(self, slow: _Slow, outcome: str) -> None:
        self.outcomes[f"{slow.kind} {outcome}"] += 1
        self.lifetimes.append(time.monotonic() - slow.opened)
        with contextlib.suppress(OSError):
            slow.sock.close()

    def _poll(self, slow: _Slow) -> bool:
        """Read what the server said; True while the connection is still open."""
        while True:
            try:
                chunk = slow.sock.recv(65536)
            except BlockingIOError:
                return True
            except OSError:
                self._ended(slow, RESET)
                return False
            if not chunk:
                head = slow.received
                status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/1.") else None
                self._ended(slow, status or CLOSED)
                return False
            slow.received += chunk

    def start_and_wait(self) -> None:
        """Open every connection (each has sent its start) and begin trickling."""
        for index in range(self.count):
            self._open("head" if index % 2 == 0 else "body")
        self.start()

    def run(self) -> None:
        while not self.stopping.is_set():
            alive = []
            for slow in self.slow:
                if not self._poll(slow):
                    continue
                try:
                    slow.sock.send(b"a" if slow.kind == "head" else b" ")
                    self.bytes_sent += 1
                except BlockingIOError:
                    pass
                except OSError:
                    if self._poll(slow):
                        self._ended(slow, RESET)
                    continue
                alive.append(slow)
            kinds = Counter(slow.kind for slow in alive)
            self.slow = alive
            for kind in ("head", "body"):  # replace the ones that ended
                for _ in range(self.count // 2 - kinds[kind]):
                    if not self.stopping.is_set():
                        self._open(kind)
            self.stopping.wait(self.trickle_seconds)

    def stop(self) -> dict[str, Any]:
        """Stop trickling, close the connections; what happened to them."""
        self.stopping.set()
        self.join(timeout=10 + self.trickle_seconds)
        for slow in self.slow:
            with contextlib.suppress(OSError):
                slow.sock.close()
        lifetimes = sorted(self.lifetimes)
        return {
            "connections": self.count,
            "trickle_seconds": self.trickle_seconds,
            "opened": dict(self.opened),
            "open_failures": self.open_failures,
            "bytes_trickled": self.bytes_sent,
            "ended": dict(sorted(self.outcomes.items())),
            "lifetime_s": {
                "min": round(lifetimes[0], 2) if lifetimes else None,
                "median": round(lifetimes[len(lifetimes) // 2], 2) if lifetimes else None,
                "max": round(lifetimes[-1], 2) if lifetimes else None,
            },
        }

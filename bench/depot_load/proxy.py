"""A counting TCP proxy: what a truck's link carries above TCP, chunk by chunk, and its TCP
segments; the TLS version a connection negotiated."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from .settings import MSS, TCP_INFO_SEGS


@dataclass
class Flow:
    """One proxied connection: what crossed it, chunk by chunk, each way."""

    chunks: list[tuple[str, int, float]] = field(default_factory=list)  # (up|down, bytes, at)
    head_down: bytearray = field(default_factory=bytearray)  # the server's first bytes
    client: socket.socket | None = None  # the proxy's end of the truck's connection
    segments: int = 0  # TCP segments both ways on the truck's side, once it ended
    done: threading.Event = field(default_factory=threading.Event)
    open_pumps: int = 2

    def bytes(self, way: str) -> int:
        return sum(size for direction, size, _ in self.chunks if direction == way)


def tcp_segments(sock: socket.socket) -> int:
    """Segments this socket sent and received so far (data, ACKs, SYN, FIN), from TCP_INFO."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < TCP_INFO_SEGS + 8:
        return 0
    sent, received = struct.unpack_from("II", info, TCP_INFO_SEGS)
    return sent + received


class CountingProxy:
    """A TCP proxy on 127.0.0.1 in front of a port there, keeping every chunk each way of each
    connection: what a truck's link carries above TCP (tests/collection/test_pull_sync.py
    counts an idle sync with it too). Its listening socket uses the MSS of a 1500-byte MTU,
    so the truck's side is cut in segments as on a cellular link, and counts them
    (TCP_INFO)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, MSS)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.flows: list[Flow] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            flow = Flow(client=client)
            with self.lock:
                self.flows.append(flow)
            for source, sink, way in ((client, server, "up"), (server, client, "down")):
                threading.Thread(
                    target=self._pump, args=(source, sink, way, flow), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, way: str, flow: Flow) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                with self.lock:
                    flow.chunks.append((way, len(data), time.monotonic()))
                    if way == "down" and len(flow.head_down) < 4096:
                        flow.head_down += data[:4096]
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with self.lock:
            flow.open_pumps -= 1
            if flow.open_pumps == 0:
                with contextlib.suppress(OSError):
                    flow.segments = tcp_segments(flow.client) if flow.client else 0
                flow.done.set()
                source.close()
                sink.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take(self, timeout: float = 5.0) -> list[Flow]:
        """The connections since the last take, once they have all ended."""
        with self.lock:
            flows, self.flows = self.flows, []
        for flow in flows:
            flow.done.wait(timeout)
        return flows

    def close(self) -> None:
        self.listener.close()


def negotiated_tls(flow: Flow) -> str | None:
    """The TLS version the server chose, read from its ServerHello (TLS 1.3 names itself in
    the supported_versions extension; TLS 1.2 has none); None for a connection without TLS."""
    head = bytes(flow.head_down)
    if len(head) < 6 or head[0] != 0x16 or head[5] != 0x02:
        return None
    record = head[5 : 5 + int.from_bytes(head[3:5], "big")]
    return "1.3" if b"\x00\x2b\x00\x02\x03\x04" in record else "1.2"

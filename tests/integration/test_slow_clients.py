"""Slow clients do not starve normal ones: a real gunicorn server (2 keep-alive workers),
64 connections trickling their heads or bodies one byte every 0.5 s, and normal requests
beside them, on the service port and on the check port.

Every normal answer must arrive within 1 s while the slow connections are open and while
the request deadline (LINKEDGE_REQUEST_TIMEOUT=3) closes them: a slow head is closed without
an answer, a slow body gets a 408, and each closure is counted in /metrics.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from inference_image.bundle import ModelBundle
from tests.integration.test_gunicorn_server import Server, free_port, scrape

REQUEST_TIMEOUT = 3  # LINKEDGE_REQUEST_TIMEOUT, seconds
SLOW_HEADS = 32
SLOW_BODIES = 32
TRICKLE_SECONDS = 0.5  # one byte per slow connection this often
NORMAL_LIMIT = 1.0  # seconds: every normal answer arrives within this
CLOSED = "closed"  # outcome of a slow connection closed without an answer
SLOW_HEAD = b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
SLOW_BODY = (
    b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n{"
)


@dataclass
class SlowConnection:
    kind: str  # "head" or "body"
    sock: socket.socket
    opened: float
    received: bytes = b""
    outcome: str | None = None  # "408", another status, or CLOSED
    ended: float | None = None


@dataclass
class SlowClients:
    """64 connections that each send a request start at once, then one byte every 0.5 s
    (a header line that never ends, or a body that never completes), until the server
    answers or closes them."""

    port: int
    connections: list[SlowConnection] = field(default_factory=list)
    running: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        now = time.monotonic()
        kinds = (("head", SLOW_HEAD, SLOW_HEADS), ("body", SLOW_BODY, SLOW_BODIES))
        for kind, start, count in kinds:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.sendall(start)
                sock.setblocking(False)
                self.connections.append(SlowConnection(kind, sock, now))
        self.running.set()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _end(self, connection: SlowConnection, outcome: str) -> None:
        connection.outcome = outcome
        connection.ended = time.monotonic()
        connection.sock.close()

    def _read(self, connection: SlowConnection) -> None:
        while connection.outcome is None:
            try:
                chunk = connection.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if chunk:
                connection.received += chunk
                continue
            head = connection.received
            status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/1.") else CLOSED
            self._end(connection, status)

    def _trickle(self) -> None:
        while self.running.is_set():
            for connection in self.connections:
                if connection.outcome is not None:
                    continue
                self._read(connection)
                if connection.outcome is not None:
                    continue
                try:
                    connection.sock.send(b"a" if connection.kind == "head" else b" ")
                except BlockingIOError:
                    pass
                except OSError:
                    self._read(connection)
                    if connection.outcome is None:
                        self._end(connection, CLOSED)
            time.sleep(TRICKLE_SECONDS)

    def all_ended(self) -> bool:
        return all(connection.outcome is not None for connection in self.connections)

    def stop(self) -> None:
        self.running.clear()
        if self.thread is not None:
            self.thread.join(timeout=5)
        for connection in self.connections:
            if connection.outcome is None:
                connection.sock.close()


@pytest.fixture(scope="module")
def slow_server(
    tiny_bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    check_port = free_port()
    running = Server(
        tiny_bundle.path,
        tmp_path_factory.mktemp("slow-clients"),
        nthread=1,
        via_env=True,
        extra_env={
            "LINKEDGE_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
            "LINKEDGE_CHECK_PORT": str(check_port),
        },
    )
    running.check_port = check_port  # type: ignore[attr-defined]
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def closures(base: str) -> Counter[str]:
    samples = scrape(base)
    counts: Counter[str] = Counter()
    for (name, labels), value in samples.items():
        if name == "linkedge_connections_closed_total":
            counts[dict(labels)["reason"]] += int(value)
    return counts


def normal_traffic(port: int, record: dict, seconds: float) -> list[tuple[str, float, str]]:
    """Health checks and /predict calls, on a kept-alive session and on fresh connections,
    for ``seconds``; (what, seconds taken, outcome) of each."""
    base = f"http://127.0.0.1:{port}"
    results: list[tuple[str, float, str]] = []
    session = requests.Session()
    live, ready, predict = (
        f"{base}{p}" for p in ("/v2/health/live", "/v2/health/ready", "/predict")
    )
    calls = [
        ("live (kept alive)", lambda: session.get(live, timeout=5)),
        ("predict (kept alive)", lambda: session.post(predict, json=record, timeout=5)),
        ("ready (new connection)", lambda: requests.get(ready, timeout=5)),
        ("predict (new connection)", lambda: requests.post(predict, json=record, timeout=5)),
    ]
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for what, call in calls:
                started = time.monotonic()
                try:
                    response = call()
                    outcome = str(response.status_code)
                    if response.status_code == 200 and what.startswith("predict"):
                        outcome += ":" + response.json()["predictions"][0]["label"]
                except requests.RequestException as exc:
                    outcome = type(exc).__name__
                taken = time.monotonic() - started
                results.append((what, taken, outcome))
                if taken > 2 * NORMAL_LIMIT:  # starved: no point waiting for more
                    return results
            time.sleep(0.05)
    finally:
        session.close()
    return results


@pytest.mark.parametrize("listener", ["service port", "check port"])
def test_slow_heads_and_bodies_do_not_starve_normal_requests(
    slow_server: Server, tiny_bundle: ModelBundle, listener: str
) -> None:
    port = slow_server.port if listener == "service port" else slow_server.check_port  # type: ignore[attr-defined]
    workers = slow_server.wait_workers(2)
    vector = tiny_bundle.smoke_vectors[4]
    record = dict(zip(tiny_bundle.feature_names, vector["inputs"], strict=True))
    expected = f"200:{vector['label']}"
    before = closures(slow_server.base)

    slow = SlowClients(port)
    slow.start()
    try:
        time.sleep(0.6)  # every slow connection has sent more than its first bytes
        # Normal traffic while the slow ones trickle and until after their deadline passed.
        results = normal_traffic(port, record, REQUEST_TIMEOUT + 2.0)
        give_up = time.monotonic() + REQUEST_TIMEOUT + 3
        while not slow.all_ended() and time.monotonic() < give_up:
            time.sleep(0.1)
    finally:
        slow.stop()

    slowest = max(results, key=lambda result: result[1])
    late = [result for result in results if result[1] > NORMAL_LIMIT]
    assert not late, (
        f"{len(late)} of {len(results)} normal requests took over {NORMAL_LIMIT} s beside "
        f"{SLOW_HEADS + SLOW_BODIES} slow clients (slowest {slowest}); first: {late[:5]}"
    )
    wrong = [result for result in results if result[2] not in ("200", expected)]
    assert not wrong, wrong[:5]
    assert len(results) >= 40, f"only {len(results)} normal requests in {REQUEST_TIMEOUT + 2} s"

    outcomes = Counter((c.kind, c.outcome) for c in slow.connections)
    assert outcomes == {("head", CLOSED): SLOW_HEADS, ("body", "408"): SLOW_BODIES}, outcomes
    for connection in slow.connections:
        assert connection.ended is not None
        assert REQUEST_TIMEOUT - 0.5 < connection.ended - connection.opened < REQUEST_TIMEOUT + 2
        if connection.kind == "body":
            body = connection.received.partition(b"\r\n\r\n")[2]
            assert json.loads(body)["error"].startswith("request body not received in time")

    after = closures(slow_server.base)
    assert after["deadline"] - before["deadline"] == SLOW_HEADS + SLOW_BODIES, (before, after)
    assert slow_server.worker_pids() == workers
    log = slow_server.log()
    assert "WORKER TIMEOUT" not in log and "Traceback" not in log, log[-3000:]


def test_idle_connections_are_closed_after_keepalive_and_counted(
    slow_server: Server,
) -> None:
    """A connection that never sends a byte costs nothing and is closed after the keep-alive
    timeout (5 s), counted as ``idle``."""
    before = closures(slow_server.base)
    address = ("127.0.0.1", slow_server.port)
    socks = [socket.create_connection(address, timeout=10) for _ in range(8)]
    try:
        started = time.monotonic()
        assert requests.get(f"{slow_server.base}/v2/health/live", timeout=5).status_code == 200
        for sock in socks:
            assert sock.recv(1) == b""  # closed by the server, without an answer
        assert 4 < time.monotonic() - started < 8
    finally:
        for sock in socks:
            sock.close()
    assert closures(slow_server.base)["idle"] - before["idle"] >= 8

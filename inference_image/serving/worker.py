"""A gunicorn worker for short CPU-bound requests: keep-alive, no threads, and no slow client
can hold it up.

gunicorn's ``sync`` worker closes the connection after every response, so a client pays a
TCP handshake per request; ``gthread`` keeps connections alive but hands every request to a
thread pool and back. Predictions are CPU-bound and one XGBoost thread per worker is the
fastest setting, so a worker gains nothing from threads: this one runs one event loop
(``selectors``) and serves each request inline, one at a time, like ``sync``.

A request reaches the application only once it is all there. The event loop reads every
connection without blocking, as its bytes come, into that connection's buffer: the head,
then the body (a Content-Length body as it is, a chunked one decoded as it arrives). Only a
complete request is parsed by gunicorn's parser (from the buffer, see
:mod:`.gunicorn_seam`) and served, so a client that trickles its head or its body costs
the worker a buffer and a few microseconds per read, never its time: nginx buffers requests
for gunicorn's sync workers the same way. Answers are written without blocking too: what the
socket does not take at once waits in the connection's buffer for the client to read it.

Limits, each closing the connection and counted in ``linkedge_connections_closed_total``
(:data:`.metrics.CLOSE_REASONS`):

- the request time limit (LINKEDGE_REQUEST_TIMEOUT: gunicorn's ``timeout`` minus
  ``STUCK_WORKER_GRACE_SECONDS``), counted from the request's first bytes: a head not in by
  then is closed without an answer; a body not in by then is handed to the application with
  what arrived, and reading past that raises :class:`RequestTimeout`, which it answers 408;
  an answer the client has not taken by then is dropped;
- the body limit (LINKEDGE_MAX_BODY_BYTES): a Content-Length above it is handed over at once
  (the application answers 413 without reading it), and a chunked body is decoded up to one
  byte beyond it (the application reads that far and answers 413); neither is read further;
- the keep-alive timeout for a connection between requests (gunicorn's ``keepalive``);
- ``worker_connections`` connections per worker at most (accepting pauses beyond it).

Only work that runs longer than the whole gunicorn ``timeout`` (a prediction cannot be
interrupted) gets the worker killed and replaced. Malformed requests get gunicorn's own
answers (400, 414, 431, 501...), now also for a malformed chunked body.

A kept-alive connection stays with the worker that accepted it, so connections must be
spread when they are opened: all workers wake up for a new connection and the first one
takes it, and when a client opens several at once one worker could take them all and leave
the others idle. So when there are several workers, a worker holding few connections
stops accepting for a moment (``ACCEPT_PAUSE``) after each accept, which lets the others take
the next ones. Beyond ``BALANCED_CONNECTIONS`` it accepts at once: every worker is busy by
then, and pausing would only delay the first requests of a large burst of connections. A
connection in the middle of a request (a slow client: a normal request is complete within
the read that brings it) does not count: it brings the worker no work.

With ``reuse_port`` (a container that takes over from another on the same port), gunicorn
gives every worker sockets of its own, right after the fork. Their ``listen()`` is put off
until the worker can serve (:func:`.gunicorn_seam.defer_listen`): a listening socket joins the
port's SO_REUSEPORT group and the kernel sends it its share of new connections at once, which
would wait in its queue while the worker boots (seconds on a busy truck), while the old server
could answer them. Likewise a stopping worker closes its listening sockets first: what is queued
there moves to the others in the group (``net.ipv4.tcp_migrate_req=1``) and nothing new comes.

On SIGTERM the worker stops accepting, lets requests in progress finish and answers a
request that still arrives on a kept-alive connection within ``STOP_KEEPALIVE_LINGER`` with
``Connection: close`` (as gthread does), for at most gunicorn's ``graceful_timeout``.

With LINKEDGE_MQTT_HOST set, the worker also runs the MQTT adapter (:mod:`.mqtt_adapter`)
in a thread of its own, with the same app objects; on SIGTERM it is told to stop first and
finishes (answers what it took, disconnects) while HTTP requests finish here. With
LINKEDGE_GRPC_PORT set, it also runs a gRPC server (:mod:`.grpc_server`, started before the
worker counts as booted); on SIGTERM it stops taking RPCs and those in flight finish.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from . import gunicorn_seam as seam
from .config import STUCK_WORKER_GRACE_SECONDS, ServingConfig
from .metrics import ConnectionMetrics

ACCEPT_PAUSE = 0.002  # seconds; see the module docstring
BALANCED_CONNECTIONS = 2  # a worker holding more accepts without pausing
HEARTBEAT_SECONDS = 1.0  # tell the arbiter we are alive at least this often while serving
STOP_KEEPALIVE_LINGER = 2.0  # seconds a stopping worker keeps idle kept-alive connections
# The MQTT adapter and the gRPC server finish this long before gunicorn's graceful_timeout.
MQTT_STOP_MARGIN = 1.0
LINGER_SECONDS = 2.0  # after an answer that closes: wait this long for the client's FIN...
LINGER_BYTES = 64 * 1024  # ...discarding at most this much (RFC 9112 section 9.6)
RECV_SIZE = 64 * 1024  # one read of a head, or of a body of unknown size
MAX_RECV = 1 << 20  # the largest single read of a body of known size
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
FIRST_SIZE_CHECK = 8 * 1024 + 4  # a head without its end this long goes to the parser...
# ...which refuses a request line over its limit (at most 8190); then at every doubling.

# Connection states
IDLE = "idle"  # between requests: no byte of the next one yet
HEAD = "head"  # reading a request head
BODY = "body"  # head parsed, reading its body
READY = "ready"  # complete (or given up on): queued to be served
WRITING = "writing"  # the answer waits for the client to read it
CLOSING = "closing"  # answered and half-closed: draining until the client's FIN
CLOSED = "closed"


class RequestTimeout(TimeoutError):
    """A request did not arrive within the time limit; the app answers a body read that
    ends this way with 408."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __str__(self) -> str:
        return f"the request did not arrive within {self.seconds:g} s"


class BodyNotBuffered(OSError):
    """Reading past the part of a body over the limit that the worker kept."""

    def __str__(self) -> str:
        return "the request body is over the limit and was not read"


class RequestBody(io.BytesIO):
    """``wsgi.input`` of a request whose body did not all arrive (its deadline passed, or it
    is over the limit): what did arrive, then ``missing()`` raised by any read that wants
    more (a new exception each time: a stored one would tie its traceback's frames, and
    this body, into a reference cycle). A complete body is a plain ``io.BytesIO``."""

    def __init__(self, data: bytes, missing: Callable[[], Exception]) -> None:
        super().__init__(data)
        self._missing = missing

    def _short(self, data: bytes, size: int | None) -> bytes:
        if size is None or size < 0 or len(data) < size:
            raise self._missing()
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._short(super().read(size), size)

    def read1(self, size: int | None = -1) -> bytes:
        return self._short(super().read1(size), size)

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        if line.endswith(b"\n") or (size is not None and 0 <= size == len(line)):
            return line
        raise self._missing()

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        raise self._missing()


class _Output:
    """The socket gunicorn's response and error pages write to: the bytes are collected,
    and the event loop sends them (one ``send`` for a small answer's head and body)."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    def send(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def gettimeout(self) -> float:
        return 0.0  # util.write_nonblock: nothing to switch

    def setblocking(self, flag: bool) -> None:
        return None

    def settimeout(self, value: float | None) -> None:
        return None


class ChunkedBody:
    """A chunked body decoded as it arrives, by gunicorn's rules (its ChunkedReader, which
    reads a socket and so cannot wait between reads): the chunk-size line, extensions,
    each chunk's CRLF and the trailer section, with gunicorn's limits and errors."""

    SIZE, DATA, DATA_END, TRAILERS, DONE = range(5)
    __slots__ = ("data", "limit", "line_limit", "remaining", "request", "state", "trailer_limit")

    def __init__(self, request: Any, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.line_limit, self.trailer_limit = seam.chunk_limits(request)
        self.data = bytearray()
        self.state = self.SIZE
        self.remaining = 0

    @property
    def done(self) -> bool:
        return self.state == self.DONE

    @property
    def over_limit(self) -> bool:
        return len(self.data) > self.limit

    def feed(self, buf: bytearray) -> int:
        """Decode from the start of ``buf``; return how many bytes were used. Stops when the
        body is complete, over the limit or needs more bytes; a malformed body raises
        gunicorn's ParseException (InvalidChunkSize, ChunkMissingTerminator...)."""
        pos, end = 0, len(buf)
        while True:
            state = self.state
            if state == self.SIZE:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    if end - pos > self.line_limit:
                        raise seam.InvalidChunkSize(
                            b"line over %d bytes with no terminator" % self.line_limit
                        )
                    return pos
                size = self._chunk_size(bytes(buf[pos:line_end]))
                pos = line_end + 2
                if size:
                    self.remaining, self.state = size, self.DATA
                else:
                    self.state = self.TRAILERS
            elif state == self.DATA:
                take = min(self.remaining, end - pos)
                if not take:
                    return pos
                self.data += buf[pos : pos + take]
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = self.DATA_END
                if self.over_limit:
                    return pos
            elif state == self.DATA_END:
                if end - pos < 2:
                    return pos
                if buf[pos : pos + 2] != b"\r\n":
                    raise seam.ChunkMissingTerminator(bytes(buf[pos : pos + 2]))
                pos += 2
                self.state = self.SIZE
            elif state == self.TRAILERS:
                if buf[pos : pos + 2] == b"\r\n":
                    self.state = self.DONE
                    return pos + 2
                trailers_end = buf.find(b"\r\n\r\n", pos)
                if trailers_end >= 0:
                    seam.parse_trailers(self.request, bytes(buf[pos:trailers_end]))
                    self.state = self.DONE
                    return trailers_end + 4
                if end - pos > self.trailer_limit:
                    raise seam.LimitRequestHeaders("limit request trailer section size")
                if buf.count(b"\n", pos) != buf.count(b"\r\n", pos):
                    raise seam.InvalidHeader("bare LF as line terminator")
                return pos
            else:
                return pos

    @staticmethod
    def _chunk_size(line: bytes) -> int:
        size, *extension = line.split(b";", 1)
        if extension:
            if b"\r" in extension[0]:
                raise seam.InvalidChunkExtension("bare CR not allowed")
            size = size.rstrip(b" \t")
        if not size or any(digit not in b"0123456789abcdefABCDEF" for digit in size):
            raise seam.InvalidChunkSize(size)
        if extension and not seam.CHUNK_EXT_RE.fullmatch(b";" + extension[0]):
            raise seam.InvalidChunkExtension("invalid chunk extension")
        return int(size, 16)


class Connection:
    """One client connection and where its current request stands."""

    __slots__ = (
        "body",
        "body_length",
        "buf",
        "chunked",
        "client",
        "close_reason",
        "continued",
        "deadline",
        "events",
        "head_end",
        "keep",
        "line_seen",
        "lingered",
        "next_size_check",
        "number",
        "out",
        "request",
        "scanned",
        "server",
        "sock",
        "state",
    )

    def __init__(self, sock: socket.socket, client: Any, server: Any) -> None:
        self.sock = sock
        self.client = client
        self.server = server
        self.buf = bytearray()
        self.state = IDLE
        self.deadline = math.inf
        self.events = selectors.EVENT_READ
        self.number = 0  # requests begun on this connection
        self.out: memoryview | None = None  # the part of an answer the socket did not take
        self.keep = True  # serve another request after this answer
        self.lingered = 0
        self.new_request()

    def new_request(self) -> None:
        self.request: Any = None
        self.body: io.BytesIO | None = None
        self.body_length = 0
        self.chunked: ChunkedBody | None = None
        self.close_reason: str | None = None  # set: close after the answer, counted so
        self.continued = False
        self.scanned = 0
        self.head_end = -1
        self.line_seen = False
        self.next_size_check = FIRST_SIZE_CHECK


class _Listener:
    __slots__ = ("name", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.name = sock.getsockname()


_WAKE = object()  # the poller's data for the worker's wake-up pipe (signals write to it)


def app_config(wsgi_app: Any) -> Any:
    """The served app's ServingConfig (create_app publishes it), or None for another app."""
    extensions = getattr(wsgi_app, "extensions", None)
    linkedge = extensions.get("linkedge") if isinstance(extensions, dict) else None
    return linkedge.get("config") if isinstance(linkedge, dict) else None


def start_mqtt(wsgi_app: Any, workers: int, logger: Any) -> Any:
    """The worker's MQTT adapter, started, when LINKEDGE_MQTT_HOST is set; else None (the
    adapter's module, and paho-mqtt, are only imported then)."""
    config = app_config(wsgi_app)
    if getattr(config, "mqtt", None) is None:
        return None
    from .mqtt_adapter import start_adapter

    return start_adapter(wsgi_app, workers, logger)


def start_grpc(wsgi_app: Any, logger: Any) -> Any:
    """The worker's gRPC server, started, when LINKEDGE_GRPC_PORT is set; else None (grpcio is
    only imported then, after the fork)."""
    config = app_config(wsgi_app)
    if getattr(config, "grpc_address", None) is None:
        return None
    from .grpc_server import start_grpc as start

    return start(wsgi_app, logger)


def body_limit(wsgi_app: Any) -> int:
    """LINKEDGE_MAX_BODY_BYTES of the served app (create_app publishes its config)."""
    config = app_config(wsgi_app)
    limit = getattr(config, "max_body_bytes", None)
    return limit if isinstance(limit, int) and limit > 0 else ServingConfig().max_body_bytes


class KeepAliveWorker(seam.WorkerBase):
    """One event loop: accept, buffer requests and answers, serve complete requests inline
    (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The request time limit (LINKEDGE_REQUEST_TIMEOUT): see the module docstring.
        self.request_time_limit = float(max(1, self.cfg.timeout - STUCK_WORKER_GRACE_SECONDS))
        self.idle_seconds = float(self.cfg.keepalive or self.request_time_limit)
        self.conns: set[Connection] = set()
        self.reading = 0  # connections in HEAD or BODY: a request begun, not complete
        self.ready: deque[Connection] = deque()
        self.max_body_bytes = ServingConfig().max_body_bytes
        self.poller: selectors.BaseSelector | None = None
        self.closures: ConnectionMetrics | None = None
        self._listeners: list[_Listener] = []
        self._accepting = False
        self._accept_paused_until = 0.0
        self._next_sweep = math.inf
        self._notified = 0.0
        self._recv_buffer = bytearray(RECV_SIZE)
        self._recv_view = memoryview(self._recv_buffer)
        self.mqtt: Any = None  # the MQTT adapter (LINKEDGE_MQTT_HOST), see mqtt_adapter.py
        self.grpc: Any = None  # the gRPC server (LINKEDGE_GRPC_PORT), see grpc_server.py

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        seam.check_config(cfg)
        if cfg.reuse_port:  # the worker's own sockets listen when it can serve (see above)
            seam.defer_listen()

    # --- process ------------------------------------------------------------------------

    def init_process(self) -> None:
        seam.decide_parser_once(self.cfg)
        self.poller = selectors.DefaultSelector()
        self.closures = ConnectionMetrics()  # after the fork: this worker's metric file
        super().init_process()  # loads the app, then runs run()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # Before the worker counts as booted: a gRPC port it cannot bind stops the server.
        self.grpc = start_grpc(self.wsgi, self.log)

    def notify(self) -> None:
        self._notified = time.monotonic()
        super().notify()

    def _heartbeat(self) -> float:
        """Notify the arbiter unless that was done less than HEARTBEAT_SECONDS ago; now."""
        now = time.monotonic()
        if now - self._notified > HEARTBEAT_SECONDS:
            self.notify()
        return now

    def run(self) -> None:
        assert self.poller is not None
        self.max_body_bytes = body_limit(self.wsgi)
        self._listeners = [_Listener(sock) for sock in self.sockets]
        for listener in self._listeners:
            listener.sock.setblocking(False)
        self.poller.register(self.PIPE[0], selectors.EVENT_READ, _WAKE)
        self.mqtt = start_mqtt(self.wsgi, self.cfg.workers, self.log)
        for listener in self._listeners:  # now the worker can serve what the kernel sends it
            if not listener.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                listener.sock.listen(self.cfg.backlog)
        while self.alive:
            self._turn()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
        self._stop()

    def _stop(self) -> None:
        """Graceful stop: no new connections; requests in progress finish; idle kept-alive
        connections get STOP_KEEPALIVE_LINGER for a request already on its way."""
        self.alive = False
        self._set_accepting(False)
        if self.cfg.reuse_port:  # this worker's own: queued connections move to the others
            for listener in self.sockets:
                listener.close()
        now = time.monotonic()
        stop_by = now + self.cfg.graceful_timeout
        if self.mqtt is not None:  # in its own thread, while HTTP finishes here
            self.mqtt.request_stop(max(0.5, self.cfg.graceful_timeout - MQTT_STOP_MARGIN))
        grpc_stopped = None
        if self.grpc is not None:  # its RPCs in flight finish in its threads
            grpc_stopped = self.grpc.request_stop(
                max(0.5, self.cfg.graceful_timeout - MQTT_STOP_MARGIN)
            )
        for conn in self.conns:
            if conn.state == IDLE:
                self._set_deadline(conn, min(conn.deadline, now + STOP_KEEPALIVE_LINGER))
        while self.conns and time.monotonic() < stop_by:
            self._turn(accepting=False)
        for conn in list(self.conns):
            self._close(conn, "shutdown")
        if self.poller is not None:
            self.poller.close()
        for listener in self.sockets:
            listener.close()
        if self.mqtt is not None:  # after the listeners: connections go to other servers
            self.mqtt.join(max(0.0, stop_by - time.monotonic()))
        if grpc_stopped is not None:
            grpc_stopped.wait(max(0.0, stop_by - time.monotonic()))

    def _turn(self, accepting: bool = True) -> None:
        """One turn of the event loop: wait for events (at most until the next deadline),
        read and write what is ready, expire what is due, serve complete requests."""
        assert self.poller is not None
        now = self._heartbeat()
        if accepting:
            wanted = (
                len(self.conns) < self.cfg.worker_connections and now >= self._accept_paused_until
            )
            if wanted != self._accepting:
                self._set_accepting(wanted)
        timeout = min(1.0, self._next_sweep - now)
        if accepting and self._accept_paused_until > now:
            timeout = min(timeout, self._accept_paused_until - now)
        for key, mask in self.poller.select(max(0.0, timeout)):
            target = key.data
            if isinstance(target, Connection):
                if mask & selectors.EVENT_WRITE:
                    self._on_writable(target)
                else:
                    self._on_readable(target)
            elif isinstance(target, _Listener):
                self._accept(target)
            elif target is _WAKE:
                with contextlib.suppress(OSError):
                    os.read(self.PIPE[0], 4096)
        if time.monotonic() >= self._next_sweep:
            self._sweep()
        while self.ready:
            conn = self.ready.popleft()
            if conn.state == READY:
                self._serve(conn)

    def _set_accepting(self, enabled: bool) -> None:
        if enabled == self._accepting or self.poller is None:
            return
        for listener in self._listeners:
            if enabled:
                self.poller.register(listener.sock, selectors.EVENT_READ, listener)
            else:
                self.poller.unregister(listener.sock)
        self._accepting = enabled

    def _accept(self, listener: _Listener) -> None:
        try:
            client_sock, client_addr = listener.sock.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        client_sock.setblocking(False)
        conn = Connection(client_sock, client_addr, listener.name)
        self.conns.add(conn)
        assert self.poller is not None
        self.poller.register(client_sock, selectors.EVENT_READ, conn)
        now = time.monotonic()
        self._set_deadline(conn, now + self.idle_seconds)
        if self.cfg.workers > 1 and len(self.conns) - self.reading <= BALANCED_CONNECTIONS:
            self._accept_paused_until = now + ACCEPT_PAUSE
            self._set_accepting(False)

    # --- deadlines ----------------------------------------------------------------------

    def _set_deadline(self, conn: Connection, deadline: float) -> None:
        conn.deadline = deadline
        if deadline < self._next_sweep:
            self._next_sweep = deadline

    def _sweep(self) -> None:
        now = time.monotonic()
        next_sweep = math.inf
        for conn in list(self.conns):
            if conn.deadline <= now:
                self._expire(conn)
            if conn.state != CLOSED and conn.deadline < next_sweep:
                next_sweep = conn.deadline
        self._next_sweep = next_sweep

    def _expire(self, conn: Connection) -> None:
        state = conn.state
        if state == IDLE:
            self._close(conn, "idle" if self.alive else "shutdown")
        elif state == HEAD:
            self._close(conn, "deadline")  # no answer: nothing of the request is known
        elif state == BODY:
            # The application answers (408 when it reads the body) with what arrived.
            received = conn.chunked.data if conn.chunked is not None else conn.buf
            conn.body = RequestBody(
                bytes(received), partial(RequestTimeout, self.request_time_limit)
            )
            conn.buf.clear()
            self._make_ready(conn, close_reason="deadline")
        elif state == WRITING:
            self._close(conn, "write_timeout")
        elif state == CLOSING:
            self._close(conn, None)
        else:
            conn.deadline = math.inf

    # --- reading ------------------------------------------------------------------------

    def _on_readable(self, conn: Connection) -> None:
        if conn.state == CLOSING:
            self._drain(conn)
            return
        size = RECV_SIZE
        if conn.state == BODY and conn.chunked is None:
            size = min(max(RECV_SIZE, conn.body_length - len(conn.buf)), MAX_RECV)
        try:
            if size == RECV_SIZE:
                received = conn.sock.recv_into(self._recv_buffer)
                data: Any = self._recv_view[:received]
            else:
                data = conn.sock.recv(size)
                received = len(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn, "client")
            return
        if not received:
            self._close(conn, "client")
            return
        if conn.state == IDLE:
            self._begin_request(conn, time.monotonic())
        conn.buf += data
        self._advance(conn)

    def _begin_request(self, conn: Connection, now: float) -> None:
        """The first bytes of a request: its time limit runs from now."""
        conn.state = HEAD
        conn.number += 1
        self.reading += 1
        self._set_deadline(conn, now + self.request_time_limit)

    def _end_reading(self, conn: Connection, state: str) -> None:
        if conn.state in (HEAD, BODY):
            self.reading -= 1
        conn.state = state

    def _head_may_be_complete(self, conn: Connection) -> bool:
        """Whether the buffered head is worth giving to the parser: it ends (CRLF CRLF), or
        it holds something the parser refuses (a bare LF), or its request line just ended
        (refused early when malformed), or it reached a size the parser may refuse."""
        buf = conn.buf
        scanned, conn.scanned = conn.scanned, len(buf)
        end = buf.find(b"\r\n\r\n", max(0, scanned - 3))
        if end >= 0:
            conn.head_end = end + 4
            return True
        if buf.count(b"\n", scanned) != buf.count(b"\r\n", max(0, scanned - 1)):
            return True
        if not conn.line_seen and buf.find(b"\r\n", max(0, scanned - 1)) >= 0:
            conn.line_seen = True
            return True
        if len(buf) >= conn.next_size_check:
            conn.next_size_check = 2 * len(buf)
            return True
        return False

    def _advance(self, conn: Connection) -> None:
        """Move ``conn``'s request on with what is buffered: parse a complete head, take a
        complete body, queue a complete request (or answer a malformed one)."""
        if conn.state == HEAD:
            if not self._head_may_be_complete(conn):
                return
            buf = conn.buf
            head = bytes(buf[: conn.head_end] if conn.head_end > 0 else buf)
            try:
                request, head_length = seam.parse_head(self.cfg, head, conn.client, conn.number)
                length = seam.body_length(request)
            except seam.Incomplete:
                conn.head_end = -1
                return
            except Exception as exc:  # gunicorn's ParseException, or anything it raised
                self._refuse(conn, None, exc)
                return
            del buf[:head_length]
            conn.request = request
            conn.state = BODY
            if length is None:
                conn.chunked = ChunkedBody(request, self.max_body_bytes)
            elif length > self.max_body_bytes:
                # Not read: the application refuses it from its Content-Length (413), and
                # a client waiting for "100 Continue" is not invited to send it.
                seam.take_expect_continue(request)
                conn.body = RequestBody(b"", BodyNotBuffered)
                buf.clear()
                self._make_ready(conn, close_reason="body_limit")
                return
            else:
                conn.body_length = length
        if conn.state == BODY:
            buf = conn.buf
            chunked = conn.chunked
            if chunked is None:
                length = conn.body_length
                if len(buf) < length:
                    self._expect_continue(conn)
                    return
                body = bytes(buf[:length])
                del buf[:length]
            else:
                try:
                    used = chunked.feed(buf)
                except Exception as exc:
                    self._refuse(conn, conn.request, exc)
                    return
                del buf[:used]
                if chunked.over_limit:
                    # The application reads one byte beyond the limit and answers 413.
                    conn.body = RequestBody(bytes(chunked.data), BodyNotBuffered)
                    buf.clear()
                    self._make_ready(conn, close_reason="body_limit")
                    return
                if not chunked.done:
                    self._expect_continue(conn)
                    return
                body = bytes(chunked.data)
            if len(body) > RECV_SIZE:  # give a large buffer's memory back
                conn.buf = bytearray(buf)
            conn.body = io.BytesIO(body)
            self._make_ready(conn)

    def _expect_continue(self, conn: Connection) -> None:
        """A client waiting for ``100 Continue`` before its body gets it now (once the body
        is complete, gunicorn's create() sends it as before)."""
        if conn.continued:
            return
        conn.continued = True
        if seam.take_expect_continue(conn.request):
            try:
                sent = conn.sock.send(CONTINUE)
            except OSError:
                sent = 0
            if sent != len(CONTINUE):  # a client that does not read its answers
                self._close(conn, "write_timeout")

    def _make_ready(self, conn: Connection, close_reason: str | None = None) -> None:
        self._end_reading(conn, READY)
        conn.deadline = math.inf
        if close_reason is not None:
            conn.close_reason = close_reason
        self.ready.append(conn)

    # --- serving ------------------------------------------------------------------------

    def _serve(self, conn: Connection) -> None:
        """Run the application on a complete request and send (or queue) its answer."""
        self._heartbeat()
        request, body = conn.request, conn.body
        seam.replace_body(request, body)
        if conn.close_reason is not None:
            request.force_close()
        output = _Output()
        keep = self._handle_request(request, conn, output)
        if not keep and conn.close_reason is None:
            conn.close_reason = "answered"
        conn.keep = keep and conn.close_reason is None
        self._send(conn, output.chunks)

    def _handle_request(self, request: Any, conn: Connection, output: _Output) -> bool:
        """gunicorn's handle_request for one buffered request; whether to keep the
        connection for another."""
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, request)
            request_start = datetime.now()
            resp, environ = seam.create_response(
                request, output, conn.client, conn.server, self.cfg
            )
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                resp.force_close()
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                for item in respiter:
                    resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, request, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            return not resp.should_close()
        except Exception as exc:
            # Nothing has reached the client yet: replace whatever was written by the error.
            output.chunks.clear()
            self.handle_error(request, output, conn.client, exc)
            conn.close_reason = "bad_request" if isinstance(exc, seam.ParseError) else "error"
            return False
        finally:
            try:
                self.cfg.post_request(self, request, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")

    def _refuse(self, conn: Connection, request: Any, exc: Exception) -> None:
        """Answer a request gunicorn cannot parse with gunicorn's own error, then close."""
        output = _Output()
        self.handle_error(request, output, conn.client, exc)
        conn.close_reason = "bad_request" if isinstance(exc, seam.ParseError) else "error"
        conn.keep = False
        conn.buf.clear()
        self._end_reading(conn, READY)
        self._send(conn, output.chunks)

    # --- writing ------------------------------------------------------------------------

    def _send(self, conn: Connection, chunks: list[bytes]) -> None:
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            sent = conn.sock.send(data) if data else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn, "client")
            return
        if sent < len(data):
            conn.out = memoryview(data)[sent:]
            conn.state = WRITING
            self._watch(conn, selectors.EVENT_WRITE)
            self._set_deadline(conn, time.monotonic() + self.request_time_limit)
            return
        self._answered(conn)

    def _on_writable(self, conn: Connection) -> None:
        out = conn.out
        assert out is not None
        try:
            sent = conn.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn, "client")
            return
        if sent < len(out):
            conn.out = out[sent:]
            return
        conn.out = None
        self._watch(conn, selectors.EVENT_READ)
        self._answered(conn)

    def _watch(self, conn: Connection, events: int) -> None:
        if conn.events != events:
            assert self.poller is not None
            self.poller.modify(conn.sock, events, conn)
            conn.events = events

    def _answered(self, conn: Connection) -> None:
        """The answer is all with the kernel: close, or go on with the next request."""
        if not conn.keep:
            self._linger(conn, conn.close_reason or "answered")
            return
        conn.new_request()
        now = time.monotonic()
        if conn.buf:  # pipelined: the next request has begun, its time runs from now
            self._begin_request(conn, now)
            self._advance(conn)
        else:
            conn.state = IDLE
            linger = self.idle_seconds if self.alive else STOP_KEEPALIVE_LINGER
            self._set_deadline(conn, now + linger)

    # --- closing ------------------------------------------------------------------------

    def _linger(self, conn: Connection, reason: str) -> None:
        """Half-close after an answer and drain what the client still sends, so that the
        kernel does not reset the connection over unread bytes and lose the answer."""
        assert self.closures is not None
        self.closures.count_closed(reason)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn, None)
            return
        conn.state = CLOSING
        conn.buf = bytearray()
        conn.lingered = 0
        self._watch(conn, selectors.EVENT_READ)
        self._set_deadline(conn, time.monotonic() + LINGER_SECONDS)

    def _drain(self, conn: Connection) -> None:
        try:
            received = conn.sock.recv_into(self._recv_buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            received = 0
        conn.lingered += received
        if not received or conn.lingered >= LINGER_BYTES:
            self._close(conn, None)

    def _close(self, conn: Connection, reason: str | None) -> None:
        """Close now; ``reason`` is counted (None: already counted when the answer went)."""
        if conn.state == CLOSED:
            return
        if reason is not None and self.closures is not None:
            self.closures.count_closed(reason)
        self._end_reading(conn, CLOSED)
        conn.deadline = math.inf
        self.conns.discard(conn)
        if self.poller is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.poller.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()
        conn.buf = bytearray()
        conn.request = conn.body = conn.out = None

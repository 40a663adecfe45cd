"""A gunicorn worker for short CPU-bound requests: keep-alive without threads.

gunicorn's ``sync`` worker closes the connection after every response, so a client pays a
TCP handshake per request; ``gthread`` keeps connections alive but hands every request from
its event loop to a thread pool and back (a pipe write, a queue and two GIL hand-overs per
request). Predictions are CPU-bound and one XGBoost thread per worker is the fastest setting,
so a worker gains nothing from threads: this one runs gthread's event loop (keep-alive,
connection limits, graceful stop, heartbeat) and serves each request inline, one at a time,
like ``sync``. It also sends a response's head and body in one ``sendall``: two writes cost
two trips through the TCP stack for every small response.

A request must arrive within the request time limit (LINKEDGE_REQUEST_TIMEOUT, which is
gunicorn's ``timeout`` minus ``STUCK_WORKER_GRACE_SECONDS``), counted from its first bytes:
every read of its head and body is bounded by that deadline (:class:`DeadlineSocket`). A
client that stalls in its head is disconnected; one that stalls in its body gets a 408 from
the app; the worker lives on either way. Only work that runs longer than the whole gunicorn
``timeout`` (a prediction cannot be interrupted) gets the worker killed and replaced. A
connection only reaches the worker once its first bytes have arrived, and idle kept-alive
connections cost nothing.

A kept-alive connection stays with the worker that accepted it, so connections must be
spread when they are opened: all workers wake up for a new connection and the first one
takes it, and when a client opens several at once one worker could take them all and leave
the others idle. So when there are several workers, a worker holding few connections
stops accepting for a moment (``ACCEPT_PAUSE``) after each accept, which lets the others take
the next ones. Beyond ``BALANCED_CONNECTIONS`` it accepts at once: every worker is busy by
then, and pausing would only delay the first requests of a large burst of connections.
"""

from __future__ import annotations

import errno
import selectors
import sys
import time
from collections import deque
from datetime import datetime
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import TConn, ThreadWorker

from .config import STUCK_WORKER_GRACE_SECONDS


def _decide_parser_once(cfg: Any) -> None:
    """gunicorn decides for every request whether to use the C parser, reading several
    settings through ``Config.__getattr__`` (6% of a single-record request's CPU). The answer
    cannot change within a worker, so decide once."""
    from gunicorn.http import message

    check = getattr(message, "_check_fast_parser", None)
    if check is None:  # another gunicorn version: leave it alone
        return
    use_fast = check(cfg)
    message._check_fast_parser = lambda _cfg: use_fast


ACCEPT_PAUSE = 0.002  # seconds; see the module docstring
BALANCED_CONNECTIONS = 2  # a worker holding more accepts without pausing


HEARTBEAT_SECONDS = 1.0  # tell the arbiter we are alive at least this often while serving


class RequestTimeout(NoMoreData, TimeoutError):
    """A request did not arrive within the time limit. gunicorn treats it as a client gone
    away (a quiet disconnect); the app answers a body read that ends this way with 408."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __str__(self) -> str:
        return f"the request did not arrive within {self.seconds:g} s"


class DeadlineSocket:
    """The connection's socket as gunicorn's request parser sees it: every ``recv`` ends by
    the connection's current request deadline."""

    __slots__ = ("_conn", "_sock")

    def __init__(self, conn: DeadlineConn, sock: Any) -> None:
        self._conn = conn
        self._sock = sock

    def recv(self, size: int) -> bytes:
        conn = self._conn
        remaining = conn.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout(conn.time_limit)
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size)
        except TimeoutError:
            raise RequestTimeout(conn.time_limit) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class DeadlineConn(TConn):
    """A gthread connection whose HTTP/1 parser reads through a :class:`DeadlineSocket`."""

    def __init__(self, cfg: Any, sock: Any, client: Any, server: Any, time_limit: float) -> None:
        super().__init__(cfg, sock, client, server)
        self.time_limit = time_limit
        self.deadline = time.monotonic() + time_limit

    def init(self) -> None:
        super().init()
        unreader = getattr(self.parser, "unreader", None)
        if unreader is not None and getattr(unreader, "sock", None) is self.sock:
            unreader.sock = DeadlineSocket(self, self.sock)


class _Done:
    """The part of a finished future that ``ThreadWorker.finish_request`` reads."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def cancelled(self) -> bool:
        return False

    def result(self) -> Any:
        return self._value


class _NoPool:
    """Stands in for gthread's thread pool, which this worker never uses."""

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


class OneWriteResponse(wsgi.Response):
    """gunicorn's Response, holding the head back to send it with the first body bytes."""

    _head: bytes | None = None

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        self._head = ("".join(lines) + "\r\n").encode("latin-1")
        self.headers_sent = True

    def _flush_head(self) -> None:
        head, self._head = self._head, None
        if head:
            self.sock.sendall(head)

    def _emit_body(self, data: bytes) -> None:
        head = self._head
        if head is not None and not self.chunked:
            self._head = None
            self.sock.sendall(head + data)
            return
        self._flush_head()
        super()._emit_body(data)

    def can_sendfile(self) -> bool:
        return False  # sendfile() writes the head itself; the app never sends files anyway

    def close(self) -> None:
        if not self.headers_sent:
            self.send_headers()
        self._flush_head()
        super().close()


class KeepAliveWorker(ThreadWorker):
    """gthread's event loop with every request served inline (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_keepalived = self.cfg.worker_connections  # no pool threads to reserve
        self._serving = False
        self._again: deque[TConn] = deque()
        self._accept_paused_until = 0.0
        self._notified = 0.0
        # The request time limit (LINKEDGE_REQUEST_TIMEOUT): see the module docstring.
        self.request_time_limit = float(max(1, self.cfg.timeout - STUCK_WORKER_GRACE_SECONDS))

    def notify(self) -> None:
        self._notified = time.monotonic()
        super().notify()

    def _heartbeat(self) -> float:
        """Notify the arbiter unless that was done less than HEARTBEAT_SECONDS ago; now."""
        now = time.monotonic()
        if now - self._notified > HEARTBEAT_SECONDS:
            self.notify()
        return now

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        return None  # gthread's warning is about its thread count, unused here

    def init_process(self) -> None:
        _decide_parser_once(self.cfg)
        super().init_process()

    def get_thread_pool(self) -> _NoPool:  # type: ignore[override]
        return _NoPool()

    def accept(self, listener: Any) -> None:
        """Accept, then wait in the event loop for the first bytes (never block on them)."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        now = time.monotonic()
        conn = DeadlineConn(
            self.cfg, client_sock, client_addr, listener.getsockname(), self.request_time_limit
        )
        conn.timeout = now + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(
            client_sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn)
        )
        if self.cfg.workers > 1 and self.nr_conns <= BALANCED_CONNECTIONS:
            self._accept_paused_until = now + ACCEPT_PAUSE
            self.set_accept_enabled(False)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and time.monotonic() < self._accept_paused_until:
            return  # the event loop asks again on its next turn
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        paused = self._accept_paused_until - time.monotonic()
        if paused > 0 and self.alive:  # wake up when the accept pause ends
            timeout = min(timeout, paused)
        super().wait_for_and_dispatch_events(timeout)

    def enqueue_req(self, conn: TConn) -> None:
        """Serve the request now. ``finish_request`` calls back here when the client has
        already sent its next request (pipelining): queue it instead of recursing."""
        if self._serving:
            self._again.append(conn)
            return
        self._serving = True
        try:
            while True:
                self.finish_request(conn, _Done(self.handle(conn)))
                if not self._again:
                    break
                conn = self._again.popleft()
        finally:
            self._serving = False

    def handle(self, conn: TConn) -> Any:
        """Serve one request of ``conn``, which must arrive by its deadline from now on."""
        now = self._heartbeat()
        if isinstance(conn, DeadlineConn):
            conn.deadline = now + conn.time_limit
        return super().handle(conn)

    def handle_request(self, req: Any, conn: TConn) -> bool:
        """gthread's handle_request with the one-write response and no thread flags."""
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(
                req, conn.sock, conn.client, conn.server, self.cfg, OneWriteResponse
            )
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                resp.force_close()
            if (
                not self.alive
                or not self.cfg.keepalive
                or len(self.keepalived_conns) >= self.max_keepalived
            ):
                resp.force_close()

            respiter = self.wsgi(environ, resp.start_response)
            # The answer gets its own time to be sent (reads left a shorter timeout set).
            self._heartbeat()
            conn.sock.settimeout(self.request_time_limit)
            try:
                for item in respiter:
                    resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                return False
        except OSError:
            util.reraise(*sys.exc_info())
        except (Exception, SystemExit):
            if resp and resp.headers_sent:
                self.log.exception("Error handling request")
                util.close_graceful(conn.sock)
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
        return True

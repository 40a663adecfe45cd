"""Everything the keep-alive worker (:mod:`.worker`) takes from gunicorn, in one place.

gunicorn documents custom worker classes (subclass ``gunicorn.workers.base.Worker`` and
implement ``run()``), but not the pieces such a worker needs to speak HTTP/1: the request
parser, its body readers and errors, the WSGI environ and response. The worker uses these
and nothing else of gunicorn's; each is named here, pyproject.toml pins gunicorn to the
major version they were read from (``gunicorn>=27,<28``), and
``tests/unit/test_gunicorn_seam.py`` fails loudly when an installed gunicorn lacks one of
them or behaves differently.

The worker reads every request into memory without blocking and only then hands it to
gunicorn's parser, from that buffer (:func:`parse_head`), so the parser never waits on a
socket. Parse errors are gunicorn's own, answered by gunicorn's ``handle_error`` exactly as
before.
"""

from __future__ import annotations

from typing import Any

import gunicorn
from gunicorn import sock as _sock
from gunicorn.http import message as _message
from gunicorn.http.body import CHUNK_EXT_RE, ChunkedReader, LengthReader
from gunicorn.http.errors import (
    ChunkMissingTerminator,
    InvalidChunkExtension,
    InvalidChunkSize,
    InvalidHeader,
    LimitRequestHeaders,
    ParseException,
)
from gunicorn.http.message import Request
from gunicorn.http.unreader import Unreader
from gunicorn.http.wsgi import Response, create
from gunicorn.workers.base import Worker

__all__ = [
    "CHUNK_EXT_RE",
    "GUNICORN_VERSION",
    "SUPPORTED_MAJOR",
    "ChunkMissingTerminator",
    "Incomplete",
    "InvalidChunkExtension",
    "InvalidChunkSize",
    "InvalidHeader",
    "LimitRequestHeaders",
    "ParseError",
    "ParseException",
    "Request",
    "Response",
    "WorkerBase",
    "body_length",
    "check_config",
    "chunk_limits",
    "create_response",
    "decide_parser_once",
    "defer_listen",
    "parse_head",
    "parse_trailers",
    "replace_body",
    "take_expect_continue",
]

GUNICORN_VERSION: str = gunicorn.__version__
SUPPORTED_MAJOR = 27  # the pin in pyproject.toml: gunicorn>=27,<28
DEFAULT_CHUNK_LINE_LIMIT = 8190  # gunicorn.http.body's fallbacks, for a request without limits
DEFAULT_TRAILER_LIMIT = 8190 * 32

WorkerBase = Worker  # the documented base class of custom workers
ParseError = ParseException


class Incomplete(Exception):
    """The buffered bytes end before the request head does: wait for more."""


class _BufferUnreader(Unreader):
    """gunicorn's parser input, from bytes already received: asking for more raises
    :class:`Incomplete` instead of reading a socket."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = data

    def chunk(self, size_hint: int | None = None) -> bytes:
        data, self._data = self._data, b""
        if not data:
            raise Incomplete
        return data

    def leftover(self) -> int:
        """Bytes received but not consumed by the parser (the body and what follows)."""
        return len(self.buf.getvalue()) + len(self._data)


def parse_head(cfg: Any, data: bytes, peer: Any, number: int) -> tuple[Request, int]:
    """Parse a request head at the start of ``data``: (the request, the head's length).

    Raises :class:`Incomplete` when ``data`` ends before the head does, or gunicorn's own
    ParseException (InvalidRequestLine, LimitRequestHeaders, ...) when it is malformed;
    ``number`` counts the requests of the connection from 1 (gunicorn's ``req_number``).
    The request's body reader is gunicorn's, reading nothing: see :func:`body_length`.
    """
    unreader = _BufferUnreader(data)
    request = Request(cfg, unreader, peer, number)
    return request, len(data) - unreader.leftover()


def body_length(request: Request) -> int | None:
    """The request body's length as gunicorn framed it (0 without one); None when chunked.

    gunicorn decided from Content-Length and Transfer-Encoding, refusing every ambiguous
    combination (both headers, an unknown coding, chunked in HTTP/1.0) with a ParseException.
    """
    reader = request.body.reader
    if isinstance(reader, LengthReader):
        return reader.length
    if isinstance(reader, ChunkedReader):
        return None
    raise TypeError(f"unknown gunicorn body reader {type(reader).__name__}")


def chunk_limits(request: Request) -> tuple[int, int]:
    """(longest chunk-size line, largest trailer section) gunicorn's ChunkedReader allows."""
    line = getattr(request, "limit_request_field_size", 0) or DEFAULT_CHUNK_LINE_LIMIT
    trailers = getattr(request, "max_buffer_headers", 0) or DEFAULT_TRAILER_LIMIT
    return line, trailers


def parse_trailers(request: Request, data: bytes) -> None:
    """Check a chunked body's trailer section (without its final CRLF CRLF) and keep it on
    the request, as gunicorn's ChunkedReader does; a ParseException when it is malformed."""
    request.trailers = request.parse_headers(data, from_trailer=True)


def take_expect_continue(request: Request) -> bool:
    """Whether the client waits for ``100 Continue`` before sending its body. The caller
    sends it; gunicorn's ``create`` will not send it again."""
    expected = bool(request._expected_100_continue)
    request._expected_100_continue = False
    return expected


def replace_body(request: Request, stream: Any) -> None:
    """Make ``stream`` the request's body (the WSGI ``wsgi.input``)."""
    request.body = stream


def create_response(
    request: Request, sock: Any, client: Any, server: Any, cfg: Any
) -> tuple[Response, dict[str, Any]]:
    """gunicorn's (Response, environ) for a parsed request, writing to ``sock``."""
    return create(request, sock, client, server, cfg)


def decide_parser_once(cfg: Any) -> None:
    """gunicorn decides for every request whether to use the C parser, reading several
    settings through ``Config.__getattr__`` (6% of a single-record request's CPU). The answer
    cannot change within a worker, so decide once."""
    check = getattr(_message, "_check_fast_parser", None)
    if check is None:
        raise TypeError("gunicorn.http.message._check_fast_parser is gone")
    use_fast = check(cfg)
    _message._check_fast_parser = lambda _cfg: use_fast


def _believed_listening(sock: Any) -> bool:
    return True


def defer_listen() -> None:
    """From now on gunicorn creates its sockets bound but not listening: its ``set_options``
    skips ``listen()`` for a socket that already listens (one inherited from systemd), and is
    told they all do. With ``reuse_port`` the sockets are the worker's own (created right after
    the fork), and the worker listens once it can serve (worker.py). Call in the arbiter,
    before it spawns workers."""
    _sock.BaseSocket._is_listening = staticmethod(_believed_listening)


def check_config(cfg: Any) -> None:
    """ValueError for a gunicorn setting the worker cannot honour: it speaks plain HTTP/1
    (no TLS, no HTTP/2, no uWSGI protocol, no PROXY protocol)."""
    if cfg.is_ssl:
        raise ValueError("the keepalive worker serves plain HTTP: terminate TLS in front of it")
    if getattr(cfg, "protocol", "http") != "http":
        raise ValueError(f"the keepalive worker speaks HTTP, not {cfg.protocol!r}")
    if getattr(cfg, "http2_cleartext", "off") != "off" or "h2" in getattr(
        cfg, "http_protocols", ["h1"]
    ):
        raise ValueError("the keepalive worker speaks HTTP/1 only")
    if getattr(cfg, "proxy_protocol", "off") not in ("off", False, None):
        raise ValueError("the keepalive worker does not read the PROXY protocol")

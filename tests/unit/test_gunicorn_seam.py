"""What the keep-alive worker takes from gunicorn's internals, checked against the installed
gunicorn (inference_image/serving/gunicorn_seam.py).

A failure here means the installed gunicorn differs from the one the seam was written for
(pyproject.toml pins gunicorn>=27,<28): read gunicorn's changes to the named piece, adapt
gunicorn_seam.py (and the worker's chunked decoder, which copies gunicorn's rules), then
move the pin.
"""

from __future__ import annotations

import inspect
import io
import re

import hypothesis
import hypothesis.strategies as st
import pytest

try:
    from inference_image.serving import gunicorn_seam as seam
except ImportError as exc:  # pragma: no cover - the point of this file
    pytest.fail(
        f"gunicorn_seam cannot import what it uses from the installed gunicorn: {exc}",
        pytrace=False,
    )

from gunicorn.config import Config
from gunicorn.http.body import ChunkedReader
from gunicorn.http.errors import NoMoreData
from gunicorn.http.unreader import IterUnreader

from inference_image.serving.worker import ChunkedBody, RequestBody, RequestTimeout, _Output


def test_the_installed_gunicorn_is_the_pinned_major_version() -> None:
    major = int(seam.GUNICORN_VERSION.split(".")[0])
    assert major == seam.SUPPORTED_MAJOR, (
        f"gunicorn {seam.GUNICORN_VERSION} is installed; gunicorn_seam.py was written for "
        f"{seam.SUPPORTED_MAJOR}.x (pyproject.toml: gunicorn>=27,<28)"
    )


@pytest.fixture
def cfg() -> Config:
    return Config()


PEER = ("127.0.0.1", 40000)


def test_defer_listen_makes_gunicorn_bind_without_listening(monkeypatch) -> None:
    """The worker's sockets join the port's SO_REUSEPORT group only when it listen()s."""
    import logging
    import socket

    from gunicorn import sock as gunicorn_sock

    # Put gunicorn's own check back afterwards (the staticmethod object, not its function).
    original = gunicorn_sock.BaseSocket.__dict__["_is_listening"]
    monkeypatch.setattr(gunicorn_sock.BaseSocket, "_is_listening", original)
    config = Config()
    config.set("bind", ["127.0.0.1:0"])
    config.set("reuse_port", True)
    seam.defer_listen()
    (created,) = gunicorn_sock.create_sockets(config, logging.getLogger("test"))
    try:
        assert created.sock.getsockname()[1] > 0  # bound
        assert created.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        assert created.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        with pytest.raises(ConnectionRefusedError):  # nobody is sent a connection yet
            socket.create_connection(created.sock.getsockname(), timeout=2).close()
        created.sock.listen(8)
        socket.create_connection(created.sock.getsockname(), timeout=2).close()
    finally:
        created.close()


def test_parse_head_reads_a_complete_head_from_memory(cfg: Config) -> None:
    data = b"POST /predict?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbodyGET"
    request, length = seam.parse_head(cfg, data, PEER, 1)
    assert data[length:] == b"bodyGET"
    assert (request.method, request.path, request.query, request.version) == (
        "POST",
        "/predict",
        "x=1",
        (1, 1),
    )
    assert ("HOST", "t") in request.headers
    assert seam.body_length(request) == 4
    assert not request.should_close()
    request.force_close()
    assert request.should_close()


def test_parse_head_accepts_one_leading_empty_line(cfg: Config) -> None:
    data = b"\r\nGET / HTTP/1.1\r\n\r\n"
    request, length = seam.parse_head(cfg, data, PEER, 1)
    assert length == len(data) and request.path == "/" and seam.body_length(request) == 0


@pytest.mark.parametrize(
    "partial",
    [b"G", b"GET / HTTP/1.1", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: t\r\n"],
)
def test_an_incomplete_head_asks_for_more(cfg: Config, partial: bytes) -> None:
    with pytest.raises(seam.Incomplete):
        seam.parse_head(cfg, partial, PEER, 1)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: t\n\n", 400),  # bare LF
        (b"get / HTTP/1.1\r\n", 400),  # refused as soon as the request line ends
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: foo, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400),
    ],
)
def test_a_malformed_head_raises_gunicorns_error_and_gets_its_answer(
    cfg: Config, data: bytes, status: int
) -> None:
    with pytest.raises(seam.ParseError) as info:
        seam.parse_head(cfg, data, PEER, 1)
    output = _Output()
    worker = seam.WorkerBase(0, 1, [], None, 30, cfg, _QuietLog())
    worker.handle_error(None, output, PEER, info.value)
    answer = b"".join(output.chunks)
    assert answer.startswith(b"HTTP/1.1 %d " % status) and b"Connection: close" in answer


class _QuietLog:
    def warning(self, *args: object) -> None: ...
    def exception(self, *args: object) -> None: ...
    def access(self, *args: object) -> None: ...
    def debug(self, *args: object) -> None: ...


def test_body_framing(cfg: Config) -> None:
    chunked, _ = seam.parse_head(
        cfg, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", PEER, 1
    )
    assert seam.body_length(chunked) is None
    assert all(isinstance(limit, int) and limit > 0 for limit in seam.chunk_limits(chunked))
    bare, _ = seam.parse_head(cfg, b"POST / HTTP/1.1\r\n\r\n", PEER, 1)
    assert seam.body_length(bare) == 0  # no length, no chunking: no body (never "until EOF")
    old, _ = seam.parse_head(cfg, b"POST / HTTP/1.0\r\nContent-Length: 7\r\n\r\n", PEER, 1)
    assert seam.body_length(old) == 7 and old.should_close()


def test_trailers_are_checked_by_gunicorn(cfg: Config) -> None:
    request, _ = seam.parse_head(
        cfg, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", PEER, 1
    )
    seam.parse_trailers(request, b"X-Checksum: 1")
    assert request.trailers == [("X-CHECKSUM", "1")]
    with pytest.raises(seam.ParseError):
        seam.parse_trailers(request, b"not a header")


def test_expect_continue_is_sent_once(cfg: Config) -> None:
    head = b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    request, _ = seam.parse_head(cfg, head, PEER, 1)
    seam.replace_body(request, io.BytesIO(b"{}"))
    output = _Output()
    seam.create_response(request, output, PEER, ("127.0.0.1", 8080), cfg)
    assert output.chunks == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # gunicorn sends it at create

    request, _ = seam.parse_head(cfg, head, PEER, 1)
    assert seam.take_expect_continue(request) is True  # the worker sends it itself...
    assert seam.take_expect_continue(request) is False
    output = _Output()
    seam.create_response(request, output, PEER, ("127.0.0.1", 8080), cfg)
    assert output.chunks == []  # ...and gunicorn does not send it again


def test_the_response_is_written_to_any_sendall(cfg: Config) -> None:
    request, _ = seam.parse_head(cfg, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n", PEER, 1)
    seam.replace_body(request, io.BytesIO(b""))
    output = _Output()
    response, environ = seam.create_response(request, output, PEER, ("127.0.0.1", 8080), cfg)
    assert environ["wsgi.input"].read() == b"" and environ["PATH_INFO"] == "/x"
    assert environ["SERVER_PORT"] == "8080" and environ["REMOTE_ADDR"] == "127.0.0.1"
    response.start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    response.write(b"ok")
    response.close()
    answer = b"".join(output.chunks)
    assert re.fullmatch(
        rb"HTTP/1\.1 200 OK\r\nServer: gunicorn\r\nDate: [^\r]+\r\nConnection: keep-alive\r\n"
        rb"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
        answer,
    ), answer
    assert not response.should_close()


def test_the_worker_base_has_what_the_worker_uses(cfg: Config) -> None:
    for name in ("init_process", "notify", "handle_error", "handle_exit", "load_wsgi", "run"):
        assert callable(getattr(seam.WorkerBase, name, None)), name
    parameters = list(inspect.signature(seam.WorkerBase.handle_error).parameters)
    assert parameters == ["self", "req", "client", "addr", "exc"]
    worker = seam.WorkerBase(0, 1, [], None, 30, cfg, _QuietLog())
    for name in ("cfg", "log", "alive", "sockets", "nr", "max_requests", "ppid"):
        assert hasattr(worker, name), name
    for name in ("keepalive", "worker_connections", "workers", "timeout", "graceful_timeout"):
        assert isinstance(getattr(cfg, name), int), name
    assert callable(cfg.pre_request) and callable(cfg.post_request)
    source = inspect.getsource(seam.WorkerBase.init_process)
    assert "self.PIPE" in source and "set_wakeup_fd" in inspect.getsource(seam.WorkerBase)


def test_the_parser_is_decided_once(cfg: Config) -> None:
    from gunicorn.http import message

    original = message._check_fast_parser
    try:
        seam.decide_parser_once(cfg)
        assert message._check_fast_parser(cfg) is original(cfg)
    finally:
        message._check_fast_parser = original


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("certfile", "/etc/ssl/cert.pem"),
        ("protocol", "uwsgi"),
        ("http2_cleartext", "upgrade"),
        ("proxy_protocol", "v1"),
    ],
)
def test_settings_the_worker_cannot_honour_are_refused(setting: str, value: str) -> None:
    cfg = Config()
    seam.check_config(cfg)  # the defaults are fine
    cfg.set(setting, value)
    with pytest.raises(ValueError, match="keepalive worker"):
        seam.check_config(cfg)


# --- the worker's chunked decoder agrees with gunicorn's ChunkedReader --------------------


def gunicorn_decodes(cfg: Config, body: bytes) -> tuple[str, bytes]:
    """("ok", data), or (name of the error, b"") as gunicorn's own reader decodes ``body``."""
    request, _ = seam.parse_head(
        cfg, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", PEER, 1
    )
    reader = ChunkedReader(request, IterUnreader([body]))
    try:
        data = b""
        while piece := reader.read(1 << 20):
            data += piece
    except seam.ParseError as exc:
        return type(exc).__name__, b""
    except NoMoreData:
        return "incomplete", b""
    return "ok", data


def worker_decodes(cfg: Config, body: bytes, step: int) -> tuple[str, bytes]:
    """The same with the worker's decoder, fed ``step`` bytes at a time."""
    request, _ = seam.parse_head(
        cfg, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", PEER, 1
    )
    decoder = ChunkedBody(request, limit=1 << 30)
    buf = bytearray()
    try:
        for start in range(0, len(body), step):
            buf += body[start : start + step]
            del buf[: decoder.feed(buf)]
            if decoder.done:
                return "ok", bytes(decoder.data)
    except seam.ParseError as exc:
        return type(exc).__name__, b""
    return "incomplete", b""


chunk_pieces = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=40).map(lambda d: b"%x\r\n%s\r\n" % (len(d), d)),
        st.sampled_from(
            [
                b"3;name=value\r\nabc\r\n",
                b'2 ; q="x y"\r\nab\r\n',
                b"3;bad ext\r\nabc\r\n",
                b"zz\r\nab\r\n",
                b"\r\n",
                b"2\r\nabXX",
                b"2;a\rb\r\nab\r\n",
                b"A\r\n0123456789\r\n",
                b"0" * 20 + b"1\r\nx\r\n",
            ]
        ),
    ),
    max_size=5,
)
endings = st.sampled_from(
    [b"0\r\n\r\n", b"0\r\nX-T: 1\r\n\r\n", b"0\r\nbad trailer\r\n\r\n", b"0\r\nA\nB\r\n\r\n"]
)


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True, database=None)
@hypothesis.given(pieces=chunk_pieces, ending=endings, step=st.sampled_from([1, 2, 7, 1000]))
def test_the_worker_decodes_chunked_bodies_as_gunicorn_does(
    pieces: list[bytes], ending: bytes, step: int
) -> None:
    cfg = Config()
    body = b"".join(pieces) + ending
    assert worker_decodes(cfg, body, step) == gunicorn_decodes(cfg, body), body


@hypothesis.settings(max_examples=50, deadline=None, derandomize=True, database=None)
@hypothesis.given(data=st.lists(st.binary(min_size=1, max_size=30), max_size=4))
def test_a_chunked_body_is_complete_only_at_its_end(data: list[bytes]) -> None:
    cfg = Config()
    body = b"".join(b"%x;e=1\r\n%s\r\n" % (len(d), d) for d in data) + b"0\r\nX-T: 1\r\n\r\n"
    assert worker_decodes(cfg, body, 3) == ("ok", b"".join(data)) == gunicorn_decodes(cfg, body)
    for end in range(len(body)):
        assert worker_decodes(cfg, body[:end], 5) == ("incomplete", b""), body[:end]


def test_chunked_limits_are_gunicorns() -> None:
    cfg = Config()
    line_limit, trailer_limit = seam.chunk_limits(
        seam.parse_head(cfg, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", PEER, 1)[0]
    )
    long_line = b"1;" + b"a" * (line_limit + 10)
    assert worker_decodes(cfg, long_line, 1000) == gunicorn_decodes(cfg, long_line)
    assert worker_decodes(cfg, long_line, 1000)[0] == "InvalidChunkSize"
    long_trailers = b"1\r\nx\r\n0\r\n" + b"X-A: b\r\n" * (trailer_limit // 8 + 10)
    assert worker_decodes(cfg, long_trailers, 4096) == gunicorn_decodes(cfg, long_trailers)
    assert worker_decodes(cfg, long_trailers, 4096)[0] == "LimitRequestHeaders"


def test_a_body_that_did_not_arrive_reads_as_a_timeout() -> None:
    body = RequestBody(b"{", lambda: RequestTimeout(3))
    assert body.read(1) == b"{"
    with pytest.raises(TimeoutError, match="did not arrive within 3 s"):
        body.read(10)
    with pytest.raises(TimeoutError):
        RequestBody(b"ab", lambda: RequestTimeout(3)).read()

"""Socket settings for LinkEdge's MQTT clients (the serving adapter and the sensor simulator).

Both send many small QoS 1 packets (features, answers, acknowledgements): without
TCP_NODELAY, Nagle's algorithm and the broker's delayed ACKs hold some for tens of
milliseconds; TCP_CORK around a burst makes it leave in a few full segments instead.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any


def no_delay(client: Any, userdata: Any, sock: Any) -> None:
    """paho's ``on_socket_open`` callback: small packets go out at once."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextlib.contextmanager
def corked(sock: Any) -> Iterator[None]:
    """TCP_CORK on ``sock`` (None: nothing) for the block: what is written in it leaves
    together when it ends."""
    is_corked = False
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            is_corked = True
    try:
        yield
    finally:
        if is_corked:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

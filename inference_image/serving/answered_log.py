"""The ids the MQTT adapter has answered: a bounded window in memory, optionally on disk.

A redelivered features message (the broker resends what was not acknowledged, e.g. after
a reconnect, a broker restart or a power cut) is recognised by its id and not answered
again. The window holds the last ``window`` ids. With a directory (LINKEDGE_MQTT_STATE_DIR)
the ids are also appended to ``answered-<client id>.log`` there, one JSON value per line,
written and fsync'd once per batch before the batch's messages are acknowledged, and read
back at start-up: a power cut between an answer and the acknowledgement of its message
does not bring a second answer. The log is rewritten with the window alone (atomically:
a new file renamed over it) when it grows past twice the window.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from inference_image.durable import fsync_directory

log = logging.getLogger("linkedge.mqtt")

DEFAULT_WINDOW = 100_000


def log_path(state_dir: Path, client_id: str) -> Path:
    return Path(state_dir) / f"answered-{client_id}.log"


def prune_logs(state_dir: Path, older_than_seconds: float, keep: Path | None = None) -> list[Path]:
    """Delete the answered-ids logs in ``state_dir`` not written for ``older_than_seconds``
    (the broker's session expiry: no message of theirs can come again), except ``keep``.
    Each serving container has client ids of its own, so logs of retired ones pile up."""
    removed = []
    now = time.time()
    for path in Path(state_dir).glob("answered-*.log"):
        try:
            if path != keep and now - path.stat().st_mtime > older_than_seconds:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


class AnsweredIds:
    """Membership of the last ``window`` ids added; ``path``: their append-only log."""

    def __init__(self, window: int = DEFAULT_WINDOW, path: Path | None = None) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.path = path
        self._order: deque[bytes] = deque()
        self._known: set[bytes] = set()
        self._fd: int | None = None
        self._lines = 0  # lines in the log file
        if path is not None:
            self._load(path)

    def __contains__(self, key: bytes) -> bool:
        return key in self._known

    def __len__(self) -> int:
        return len(self._order)

    def _remember(self, keys: Iterable[bytes]) -> None:
        order, known = self._order, self._known
        for key in keys:
            if key in known:
                continue
            order.append(key)
            known.add(key)
        while len(order) > self.window:
            known.discard(order.popleft())

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        end = data.rfind(b"\n") + 1
        if end != len(data):  # a line torn by a power cut: cut it off, or the next id joins it
            log.warning("%s: dropping a torn last line of %d bytes", path, len(data) - end)
            with open(path, "r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())
            data = data[:end]
        lines = data.split(b"\n")[:-1] if data else []
        self._remember(line for line in lines[-self.window :] if line)
        self._lines = len(lines)
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if created:
            fsync_directory(path.parent)
        if self._lines > 2 * self.window:
            self._compact()

    def add(self, keys: list[bytes]) -> None:
        """Remember ``keys`` and, with a log, append them and fsync (one write for all)."""
        if not keys:
            return
        self._remember(keys)
        if self._fd is None:
            return
        data = b"\n".join(keys) + b"\n"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self._lines += len(keys)
        if self._lines > 2 * self.window:
            self._compact()

    def _compact(self) -> None:
        """Rewrite the log with the window only: a new file, fsync'd, renamed over the log."""
        assert self.path is not None
        temporary = self.path.with_name(self.path.name + ".new")
        data = b"".join(key + b"\n" for key in self._order)
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        fsync_directory(self.path.parent)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._lines = len(self._order)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

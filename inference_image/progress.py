"""Numbered steps with their elapsed time on stderr: ``[2/4] building the image ... 16.2 s``.

Shown on a terminal, or with ``-v`` (then log records may come between a step's start and its
time: the step is reprinted in full when it ends). Silent otherwise, so logs and tests stay
clean.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


class Steps:
    """Numbered steps of one command; `step(title)` times one of them."""

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.number = 0
        self._line_open = False

    @classmethod
    def for_terminal(cls, total: int, verbose: bool) -> Steps:
        """Shown when stderr is a terminal or with -v."""
        return cls(total, enabled=verbose or sys.stderr.isatty())

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.number += 1
        if not self.enabled:
            yield
            return
        label = f"[{self.number}/{self.total}] {title} ..."
        self._write(label)
        self._line_open = True
        log_filter = _BeforeLogRecord(self._close_line)
        handlers = list(logging.getLogger().handlers)
        for handler in handlers:
            handler.addFilter(log_filter)
        started = time.monotonic()
        outcome = "failed after "
        try:
            yield
            outcome = ""
        finally:
            for handler in handlers:
                handler.removeFilter(log_filter)
            elapsed = f"{outcome}{time.monotonic() - started:.1f} s\n"
            self._write(f" {elapsed}" if self._line_open else f"{label} {elapsed}")
            self._line_open = False

    def _close_line(self) -> None:
        if self._line_open:
            self._write("\n")
            self._line_open = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class _BeforeLogRecord(logging.Filter):
    """Calls `before` ahead of every record a handler emits (so it starts on a new line)."""

    def __init__(self, before: Callable[[], None]) -> None:
        super().__init__()
        self.before = before

    def filter(self, record: logging.LogRecord) -> bool:
        self.before()
        return True

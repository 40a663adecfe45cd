"""Data capture: a sample of what the served model is asked, and what it answered, into the
truck's capture spool (inference_image.capture_spool) for `collect` to bring back to CI.

Every row the model calls "pos" is captured; the others with probability ``rate``. A record:
``{"time", "model_version", "inputs" (schema order, null = missing), "probability", "label",
"sampled": "pos" | "rate"}``. The settings come from LINKEDGE_CAPTURE_* (:class:`CaptureSettings`).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference_image import contract
from inference_image.capture_spool import CaptureSpool, SealError, SpoolError

from .log_once import OncePerKind

log = logging.getLogger("linkedge.serving")

ENV_DIR, ENV_RATE = contract.ENV_CAPTURE_DIR, contract.ENV_CAPTURE_RATE
ENV_BUDGET, ENV_SEGMENT = contract.ENV_CAPTURE_BUDGET, contract.ENV_CAPTURE_SEGMENT
ENV_SEGMENT_SECONDS = contract.ENV_CAPTURE_SEGMENT_SECONDS
MiB = 1 << 20


@dataclass(frozen=True)
class CaptureSettings:
    directory: Path
    rate: float = 0.01
    budget_bytes: int = 256 * MiB
    segment_bytes: int = 1 * MiB
    segment_seconds: int = 300

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CaptureSettings | None:
        """None when LINKEDGE_CAPTURE_DIR is unset or empty (no capture); ValueError naming the
        variable for a bad value."""
        directory = (environ.get(ENV_DIR) or "").strip()
        if not directory:
            return None
        defaults = cls(Path(directory))
        rate = _number(environ, ENV_RATE, defaults.rate, float)
        if not 0 <= rate <= 1:
            raise ValueError(f"{ENV_RATE} must be between 0 and 1, got {rate}")
        settings = cls(
            directory=Path(directory),
            rate=rate,
            budget_bytes=int(_number(environ, ENV_BUDGET, defaults.budget_bytes, int)),
            segment_bytes=int(_number(environ, ENV_SEGMENT, defaults.segment_bytes, int)),
            segment_seconds=int(
                _number(environ, ENV_SEGMENT_SECONDS, defaults.segment_seconds, int)
            ),
        )
        if settings.segment_seconds < 1:
            raise ValueError(f"{ENV_SEGMENT_SECONDS} must be at least 1")
        try:
            settings.spool()  # the same check the server makes, with the variables' names
        except SpoolError as exc:
            raise ValueError(f"{ENV_BUDGET} / {ENV_SEGMENT}: {exc}") from exc
        except OSError as exc:
            raise ValueError(f"{ENV_DIR}: cannot use {directory}: {exc.strerror}") from exc
        return settings

    def spool(self) -> CaptureSpool:
        return CaptureSpool(
            self.directory, self.budget_bytes, self.segment_bytes, self.segment_seconds
        )


def _number(environ: Mapping[str, str], name: str, default: float, kind: type) -> float:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative number, got {raw!r}")
    return value


# Rows waiting for the writer thread, per worker: about 8 MiB of float32 inputs. A spool that
# cannot keep up (a failing disk) loses rows beyond this, counted; requests never wait for it.
MAX_PENDING_ROWS = 12_000
# The writer wakes this often (or once WRITE_EARLY_ROWS wait): one write per wake, and no
# thread hand-off per request (a wake-up per request costs more than the write it moves).
WRITE_PERIOD_SECONDS = 0.1
WRITE_EARLY_ROWS = 2_000
# A row's JSON line is about 1.2 KB for 170 features; pieces of segment_bytes / 2 KiB rows keep a
# segment within about twice segment_bytes.
ROW_BYTES_ESTIMATE = 2048
LOST_QUEUE_FULL, LOST_WRITE_FAILED = "queue_full", "write_failed"
LOST_REASONS = (LOST_QUEUE_FULL, LOST_WRITE_FAILED)
SPOOL_FAILED = "the spool could not be written (rows are counted lost)"
SEAL_FAILED = "a segment could not be sealed (its rows are written; it is sealed later)"


@dataclass(frozen=True)
class ChosenRows:
    """What a request gave capture: its chosen rows and their answers, copied."""

    time: float
    inputs: np.ndarray  # float32, (rows, features)
    probabilities: np.ndarray
    positive: np.ndarray

    def records(self, model_version: str) -> list[dict[str, object]]:
        return [
            {
                "time": self.time,
                "model_version": model_version,
                "inputs": self.inputs[index],  # float32, NaN written as null
                "probability": self.probabilities[index],
                "label": "pos" if positive else "neg",
                "sampled": "pos" if positive else "rate",
            }
            for index, positive in enumerate(self.positive.tolist())
        ]


class RowSampler:
    """Each row sampled with probability RATE, independently: a Bernoulli process over the rows
    a process answers. Drawn as its gaps (geometric), so a request costs a random number only
    per sampled row, not per row (at 1 %, a 100-row request draws one number, not 100)."""

    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        self.rate = rate
        self._rng = rng
        self._skip = self._gap()  # rows to pass before the next sampled one

    def _gap(self) -> int:
        if self.rate <= 0:
            return sys.maxsize
        if self.rate >= 1:
            return 0
        return int(self._rng.geometric(self.rate)) - 1

    def sample(self, count: int) -> list[int]:
        """The positions sampled among the next COUNT rows, in order."""
        if self._skip >= count:  # the usual case at a low rate: nothing here
            self._skip -= count
            return []
        positions = []
        position = self._skip
        while position < count:
            positions.append(position)
            position += 1 + self._gap()
        self._skip = position - count
        return positions


def _new_process(capture: RequestCapture | None) -> None:
    if capture is not None:
        capture._new_process_state()


class SpoolWriter:
    """A thread that writes what requests chose into the spool, so that encoding, writing and
    sealing (fsync, rename, the budget's clean-up) never hold up an answer: on a truck's flash
    an fsync can take tens of milliseconds. It wakes every WRITE_PERIOD_SECONDS and writes all
    that waits in one write; it also seals an old segment when no request comes.

    One per process (threads do not survive a fork). At most MAX_PENDING_ROWS wait (a single
    larger request is still taken when nothing waits); rows beyond that, and rows whose write
    fails, are lost and counted (``on_lost``), never waited for. What waits is written at the
    process's exit (atexit: a gunicorn worker's graceful stop) or by :meth:`flush`. A kill or a
    power cut loses what waits (WRITE_PERIOD_SECONDS of rows, more when the disk is behind), as
    a power cut loses the page cache's unsynced writes: the spool stays whole either way.
    What waits is appended in pieces of about a segment, so no segment grows far past
    ``segment_bytes`` however far behind the writer is.
    """

    def __init__(
        self,
        spool: CaptureSpool,
        model_version: str,
        on_captured: Callable[[int], None],
        on_lost: Callable[[int, str], None],
        max_pending_rows: int = MAX_PENDING_ROWS,
    ) -> None:
        self.spool = spool
        self.model_version = model_version
        self.on_captured = on_captured
        self.on_lost = on_lost
        self.max_pending_rows = max_pending_rows
        self.rows_per_append = max(1, spool.segment_bytes // ROW_BYTES_ESTIMATE)
        self._waiting: list[ChosenRows] = []
        self._pending = 0  # rows submitted and not yet written (or lost)
        self._settled = threading.Condition()  # guards both; notified after each write
        self._wake = threading.Event()  # write now: a flush, or WRITE_EARLY_ROWS waiting
        self._closed = False
        self._errors = OncePerKind(log)
        self._seal_period = min(max(spool.segment_seconds / 4, 0.25), 30.0)
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()
        atexit.register(self.flush, 5.0)

    def submit(self, chosen: ChosenRows) -> int:
        """Queue CHOSEN; the rows queued (0 when the queue is full: they are lost, counted)."""
        rows = len(chosen.positive)
        with self._settled:
            full = self._pending > 0 and self._pending + rows > self.max_pending_rows
            if not full:
                self._waiting.append(chosen)
                self._pending += rows
                early = self._pending >= WRITE_EARLY_ROWS
        if full:
            self._count(self.on_lost, rows, LOST_QUEUE_FULL)
            return 0
        if early:
            self._wake.set()
        return rows

    def flush(self, timeout: float = 10.0) -> bool:
        """Write every queued row now (or count it lost); False if that took over TIMEOUT."""
        self._wake.set()
        with self._settled:
            return self._settled.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Flush, then end the thread (a writer whose spool goes away); False on timeout."""
        flushed = self.flush(timeout)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        return flushed and not self._thread.is_alive()

    def _run(self) -> None:
        seal_pause = self._seal_period
        next_seal_check = time.monotonic() + seal_pause
        while not self._closed:
            self._wake.wait(WRITE_PERIOD_SECONDS)
            self._wake.clear()
            with self._settled:
                batches, self._waiting = self._waiting, []
            if batches:
                self._write(batches)
            elif time.monotonic() >= next_seal_check:  # quiet: seal an old segment
                sealed = self._guard(self.spool.seal_if_old, SPOOL_FAILED)
                seal_pause = self._seal_period if sealed else min(seal_pause * 2, 300.0)
                next_seal_check = time.monotonic() + seal_pause

    def _write(self, batches: list[ChosenRows]) -> None:
        """Append the batches' rows in pieces of rows_per_append; each piece is counted written
        or lost. Nothing here may end the thread: every error is caught and counted."""
        rows = sum(len(batch.positive) for batch in batches)
        try:
            records: list[dict[str, object]] = []
            if not self._guard(
                lambda: records.extend(
                    item for batch in batches for item in batch.records(self.model_version)
                ),
                "the rows could not be made records (they are counted lost)",
            ):
                records = []
            for start in range(0, len(records), self.rows_per_append):
                piece = records[start : start + self.rows_per_append]
                written = self._guard(lambda piece=piece: self._append(piece), SPOOL_FAILED)
                if written:
                    self._count(self.on_captured, len(piece))
                else:
                    self._count(self.on_lost, len(piece), LOST_WRITE_FAILED)
            if len(records) < rows:  # rows that could not even be made records
                self._count(self.on_lost, rows - len(records), LOST_WRITE_FAILED)
        finally:
            with self._settled:
                self._pending -= rows
                self._settled.notify_all()

    def _append(self, piece: list[dict[str, object]]) -> None:
        """Append PIECE; a seal that failed after the rows were written is logged (once per
        kind), not raised: those rows are in the spool and count as captured."""
        try:
            self.spool.append(piece)
        except SealError as exc:
            self._errors.error(SEAL_FAILED, exc, "capture: %s", SEAL_FAILED)

    def _count(self, callback: Callable[..., None], *args: object) -> None:
        # A broken metrics file must not end the thread or fail a request.
        self._guard(lambda: callback(*args), "a row count could not be recorded")

    def _guard(self, action: Callable[[], object], failure: str) -> bool:
        """Run ACTION; False on any error, whose traceback is logged with FAILURE once per kind
        (the thread must outlive it, and a broken disk must not flood the log)."""
        try:
            action()
            return True
        except Exception as exc:
            self._errors.error(failure, exc, "capture: %s", failure)
            return False


class RequestCapture:
    """Chooses the rows to keep and hands them to this process's :class:`SpoolWriter`."""

    def __init__(
        self,
        settings: CaptureSettings,
        model_version: str,
        on_captured: Callable[[int], None] = lambda count: None,
        on_lost: Callable[[int, str], None] = lambda count, reason: None,
    ) -> None:
        self.settings = settings
        self.on_captured = on_captured
        self.on_lost = on_lost
        self.spool = settings.spool()
        self.model_version = model_version
        self._new_process_state()
        alive = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _new_process(alive()))

    def _new_process_state(self) -> None:
        """A process's own state: its own sampling stream (not a copy of the parent's); no
        writer yet (threads do not survive a fork); a fresh lock (the parent's could have been
        held at the fork)."""
        self._sampler = RowSampler(self.settings.rate, np.random.default_rng())
        self._writer: SpoolWriter | None = None
        # HTTP, gRPC and MQTT may observe at once: one writer is made per process.
        self._making = threading.Lock()

    def writer(self) -> SpoolWriter:
        """This process's writer, made on first use."""
        writer = self._writer
        if writer is not None:
            return writer
        with self._making:
            if self._writer is None:
                self._writer = SpoolWriter(
                    self.spool, self.model_version, self.on_captured, self.on_lost
                )
            return self._writer

    def observe(self, rows: np.ndarray, probabilities: np.ndarray, positive: np.ndarray) -> int:
        """Queue the chosen rows for the spool; how many were queued."""
        writer = self.writer()
        sampled = self._sampler.sample(len(rows))
        if sampled:
            keep = np.array(positive, dtype=bool)  # a copy
            keep[sampled] = True
            chosen = np.flatnonzero(keep)
        else:
            chosen = np.flatnonzero(positive)
            if not len(chosen):
                return 0
        return writer.submit(
            ChosenRows(
                time=round(time.time(), 3),
                inputs=np.asarray(rows[chosen], dtype=np.float32),  # a copy: the rows only
                probabilities=np.asarray(probabilities)[chosen],
                positive=np.asarray(positive)[chosen],
            )
        )

    def seal(self) -> Path | None:
        """Write what waits, then seal the open segment (for tests and tools)."""
        self.writer().flush()
        return self.spool.seal()

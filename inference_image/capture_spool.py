"""The capture spool: a bounded, crash-safe directory of captured requests on a truck.

Layout of a spool directory::

    open/<pid>-<ns>.jsonl       the segment a process is writing (never collected)
    sealed/<ns>-<pid>-<ns>.jsonl complete segments, immutable, named in the order they were
                                sealed (<ns>: nanoseconds since the epoch, zero-padded)
    dropped.json                segments and bytes dropped for the budget so far

A record is one line: the CRC-32 of its JSON text (8 hex digits), a space, the JSON, ``\\n``.
A line whose CRC does not match, or that has no newline, is a torn write (a power cut while
writing, or the zeros a file system may leave after one): recovery truncates an open segment at
its first bad line and seals what comes before. Sealing is fsync, rename into ``sealed/``,
fsync of the directory, so a sealed segment is either absent or complete. Only sealed segments
are collected (``collect``), by name, so none twice and never a partial one.

The budget covers open and sealed segments together: when sealing would exceed it, the oldest
sealed segments are deleted first and counted in ``dropped.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from inference_image import contract
from inference_image.durable import fsync_directory

OPEN_DIR, SEALED_DIR = contract.CAPTURE_OPEN_DIR, contract.CAPTURE_SEALED_DIR
DROPPED_FILE, SEGMENT_SUFFIX = contract.CAPTURE_DROPPED_FILE, contract.CAPTURE_SEGMENT_SUFFIX


class SpoolError(ValueError):
    """A spool setting or a spool directory that cannot be used."""


class SealError(OSError):
    """Records were written to the open segment, but sealing it failed: they are not lost. The
    segment is sealed at a later append (a failed fsync), or, once closed, by recover() at the
    next start (a failed rename or budget check)."""


def encode_record(record: dict[str, Any]) -> bytes:
    """One line. numpy values are written as numpy prints them (float32 in its shortest
    form, as the API answers) and NaN as null."""
    text = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"%08x %s\n" % (zlib.crc32(text), text)


def decode_lines(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records of DATA up to its first torn line, and how many bytes they take."""
    records: list[dict[str, Any]] = []
    good = 0
    while good < len(data):
        end = data.find(b"\n", good)
        if end < 0:
            break
        line = data[good:end]
        crc, _, text = line.partition(b" ")
        try:
            if len(crc) != 8 or int(crc, 16) != zlib.crc32(text):
                break
            records.append(json.loads(text))
        except ValueError:
            break
        good = end + 1
    return records, good


def read_segment(path: Path) -> list[dict[str, Any]]:
    """A sealed segment's records; SpoolError if any line is damaged (it never should be)."""
    return segment_records(path.read_bytes(), path)


def segment_records(data: bytes, where: object) -> list[dict[str, Any]]:
    """A sealed segment's records from its bytes (WHERE names it in the error)."""
    records, good = decode_lines(data)
    if good != len(data):
        raise SpoolError(f"{where}: damaged at byte {good} of {len(data)}")
    return records


@dataclass(frozen=True)
class SpoolState:
    sealed_segments: int
    sealed_bytes: int
    open_bytes: int
    dropped_segments: int
    dropped_bytes: int


class CaptureSpool:
    """One process's writer into a spool directory (several processes may share one)."""

    def __init__(
        self,
        directory: Path,
        budget_bytes: int,
        segment_bytes: int,
        segment_seconds: float = 300.0,
        clock: Any = time.time,
    ) -> None:
        if segment_bytes < 1024 or budget_bytes < 2 * segment_bytes:
            raise SpoolError(
                f"the capture budget ({budget_bytes} B) must hold two segments of at least "
                f"1 KiB ({segment_bytes} B)"
            )
        self.directory = Path(directory)
        self.budget_bytes = budget_bytes
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self.clock = clock
        (self.directory / OPEN_DIR).mkdir(parents=True, exist_ok=True)
        (self.directory / SEALED_DIR).mkdir(exist_ok=True)
        self._file: Any = None
        self._path: Path | None = None
        self._pid = -1
        self._written = 0
        self._opened_at = 0.0
        # append() runs in request threads, seal_if_old() in the sealing timer's.
        self._lock = threading.Lock()

    # --- writing -------------------------------------------------------------------------

    def _open(self) -> None:
        self._pid = os.getpid()  # after a fork, the parent's segment stays the parent's
        name = f"{self._pid}-{time.time_ns():020d}{SEGMENT_SUFFIX}"
        self._path = self.directory / OPEN_DIR / name
        # Created under a name recover() does not look at, locked, then named: recover()
        # never sees a segment of a live writer unlocked.
        creating = self._path.with_name(name + ".new")
        self._file = open(creating, "xb", buffering=0)  # noqa: SIM115 (kept open)
        # Held while the process lives: recover() leaves a locked segment alone. The kernel
        # drops the lock when the process dies, however it dies.
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(creating, self._path)
        self._written, self._opened_at = 0, self.clock()

    def append(self, records: list[dict[str, Any]]) -> None:
        """Write RECORDS (one write: they land together or the recovery drops them together);
        seal the segment when it is full or old. Raises SealError when the records were
        written and only the seal after them failed (any other error: they were not)."""
        if not records:
            return
        data = b"".join(encode_record(record) for record in records)
        with self._lock:
            if self._file is None or self._pid != os.getpid():
                self._open()
            self._file.write(data)
            self._written += len(data)
            if (
                self._written >= self.segment_bytes
                or self.clock() - self._opened_at >= self.segment_seconds
            ):
                try:
                    self._seal()
                except OSError as exc:
                    raise SealError(f"written, but the segment was not sealed: {exc}") from exc

    def seal(self) -> Path | None:
        """Make the open segment complete and collectable; None if there was none."""
        with self._lock:
            return self._seal()

    def seal_if_old(self) -> Path | None:
        """Seal the open segment when it is older than segment_seconds (a quiet truck's rows
        become collectable without waiting for the next request); None otherwise."""
        with self._lock:
            if self._file is None or self.clock() - self._opened_at < self.segment_seconds:
                return None
            return self._seal()

    def _seal(self) -> Path | None:
        if self._file is None or self._pid != os.getpid() or self._path is None:
            return None
        os.fsync(self._file.fileno())
        # On its disk now: drop its pages from the page cache, which counts against the
        # serving container's memory limit (a full spool would otherwise press on it).
        os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        self._file.close()
        self._file = None
        if not self._written:
            self._path.unlink(missing_ok=True)
            return None
        return self._seal_file(self._path)

    def _seal_file(self, path: Path) -> Path:
        self.make_room(0)  # the segment is in open/, so already counted there
        target = self.directory / SEALED_DIR / f"{time.time_ns():020d}-{path.name}"
        os.rename(path, target)
        fsync_directory(target.parent)
        fsync_directory(path.parent)
        return target

    # --- the budget ----------------------------------------------------------------------

    def sealed(self) -> list[Path]:
        """Sealed segments, oldest first."""
        return sorted((self.directory / SEALED_DIR).glob(f"*{SEGMENT_SUFFIX}"))

    def _sizes(self, directory: str) -> Iterator[tuple[Path, int]]:
        for path in (self.directory / directory).glob(f"*{SEGMENT_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):  # another process moved it
                yield path, path.stat().st_size

    def make_room(self, incoming: int) -> None:
        """Delete the oldest sealed segments until INCOMING more bytes fit the budget (open
        and sealed segments count)."""
        used = sum(size for _, size in self._sizes(SEALED_DIR))
        used += sum(size for _, size in self._sizes(OPEN_DIR))
        dropped_segments = dropped_bytes = 0
        for path in self.sealed():
            if used + incoming <= self.budget_bytes:
                break
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:  # collected, or dropped by another process
                continue
            used -= size
            dropped_segments += 1
            dropped_bytes += size
        if dropped_segments:
            self._count_dropped(dropped_segments, dropped_bytes)

    def _count_dropped(self, segments: int, size: int) -> None:
        """Add to the counts in dropped.json: read, add and replace under an exclusive lock
        (the workers of a container, and its successor during a switch, share the spool)."""
        with open(self.directory / f".{DROPPED_FILE}.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            counts = self.dropped()
            counts = {"segments": counts[0] + segments, "bytes": counts[1] + size}
            staging = self.directory / f".{DROPPED_FILE}.{os.getpid()}"
            staging.write_text(json.dumps(counts))
            os.replace(staging, self.directory / DROPPED_FILE)

    def dropped(self) -> tuple[int, int]:
        """Segments and bytes dropped for the budget since the spool was made."""
        try:
            counts = json.loads((self.directory / DROPPED_FILE).read_text())
            return int(counts["segments"]), int(counts["bytes"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return 0, 0

    def state(self) -> SpoolState:
        sealed = list(self._sizes(SEALED_DIR))
        dropped_segments, dropped_bytes = self.dropped()
        return SpoolState(
            sealed_segments=len(sealed),
            sealed_bytes=sum(size for _, size in sealed),
            open_bytes=sum(size for _, size in self._sizes(OPEN_DIR)),
            dropped_segments=dropped_segments,
            dropped_bytes=dropped_bytes,
        )

    # --- after a power cut ---------------------------------------------------------------

    def recover(self) -> list[Path]:
        """Seal the open segments no live process writes (left by a crash, a power cut, or a
        worker or container that exited), each cut at its first torn line. Safe at any time,
        from any process or container sharing the spool: a writer's segment is locked.
        Returns the segments sealed."""
        sealed = []
        for path in sorted((self.directory / OPEN_DIR).glob(f"*{SEGMENT_SUFFIX}")):
            try:
                handle = open(path, "r+b")  # noqa: SIM115 (closed below)
            except FileNotFoundError:  # sealed meanwhile by another process
                continue
            with handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer lives
                if not path.exists():  # sealed by another recover before we locked it
                    continue
                data = handle.read()
                _, good = decode_lines(data)
                if good == 0:
                    path.unlink()
                    continue
                if good != len(data):
                    handle.truncate(good)
                    os.fsync(handle.fileno())
                sealed.append(self._seal_file(path))
        return sealed

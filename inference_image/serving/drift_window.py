"""The truck's sliding window of the rows it is asked about, binned as the bundle's reference.

The window is ``SLOTS`` time slots of ``window_seconds / SLOTS`` each. A process counts into
slots of its own: with a metrics directory (PROMETHEUS_MULTIPROC_DIR, one per container) in a
file ``drift-<pid>.counts`` there, so /metrics in any gunicorn worker sums every worker's slots
still inside the window (a worker that died keeps counting until its slots leave it); without
one, in memory. A slot is one int64 row: its slot number, rows, predicted positives, then the
bin counts (features x (value bins + missing)). Only the owning process writes a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from inference_image.drift import DriftReference, DriftSummary, bin_rows, compare

SLOTS = 12
HEADER = 3  # slot number, rows, predicted positives
FILE_PREFIX, FILE_SUFFIX = "drift-", ".counts"  # not *.db: prometheus_client reads those


class DriftWindow:
    def __init__(
        self,
        reference: DriftReference,
        window_seconds: int,
        directory: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_seconds < SLOTS:
            raise ValueError(f"the drift window must be at least {SLOTS} s, got {window_seconds}")
        self.reference = reference
        self.window_seconds = window_seconds
        self.slot_seconds = window_seconds / SLOTS
        self.directory = directory
        self.clock = clock
        self._edges = reference.padded_edges()
        self._features = len(reference.features)
        self._width = self._edges.shape[1] + 2  # value bins, then the missing slot
        self._offsets = np.arange(self._features) * self._width
        self._length = HEADER + self._features * self._width
        self._table: np.ndarray | None = None
        self._pid = -1

    def _own_table(self) -> np.ndarray:
        """This process's slots (a new file after a fork: the parent's stays the parent's)."""
        if self._table is None or self._pid != os.getpid():
            self._pid = os.getpid()
            if self.directory is None:
                self._table = np.zeros((SLOTS, self._length), dtype=np.int64)
            else:
                path = self.directory / f"{FILE_PREFIX}{self._pid}{FILE_SUFFIX}"
                self._table = np.memmap(
                    path, dtype=np.int64, mode="w+", shape=(SLOTS, self._length)
                )
        return self._table

    def _slot_number(self) -> int:
        return int(self.clock() // self.slot_seconds)

    def observe(self, rows: np.ndarray, probabilities: np.ndarray, positive: np.ndarray) -> None:
        """Count ROWS (validated, NaN = missing) and how many the model called positive."""
        if not len(rows):
            return
        bins = bin_rows(rows, self._edges) + self._offsets
        counts = np.bincount(bins.ravel(), minlength=self._features * self._width)
        number = self._slot_number()
        slot = self._own_table()[number % SLOTS]
        if slot[0] != number:
            slot[:] = 0
            slot[0] = number
        slot[1] += len(rows)
        slot[2] += int(np.count_nonzero(positive))
        slot[HEADER:] += counts

    def _tables(self) -> list[np.ndarray]:
        if self.directory is None:
            return [] if self._table is None else [self._table]
        tables = []
        for path in sorted(self.directory.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}")):
            data = np.fromfile(path, dtype=np.int64)
            if data.size == SLOTS * self._length:  # another bundle's file: not comparable
                tables.append(data.reshape(SLOTS, self._length))
        return tables

    def totals(self) -> tuple[np.ndarray, int, int]:
        """Bin counts (features, value bins + missing), rows and positives in the window."""
        current = self._slot_number()
        total = np.zeros(self._length, dtype=np.int64)
        for table in self._tables():
            inside = (table[:, 0] > current - SLOTS) & (table[:, 0] <= current)
            total += table[inside].sum(axis=0)
        counts = total[HEADER:].reshape(self._features, self._width)
        return counts, int(total[1]), int(total[2])

    def summary(self) -> DriftSummary:
        counts, rows, positives = self.totals()
        return compare(self.reference, counts, rows, positives)

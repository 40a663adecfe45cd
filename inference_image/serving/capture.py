"""Data capture: a sample of what the served model is asked, and what it answered, into the
truck's capture spool (inference_image.capture_spool) for `collect` to bring back to CI.

Every row the model calls "pos" is captured; the others with probability ``rate``. A record:
``{"time", "model_version", "inputs" (schema order, null = missing), "probability", "label",
"sampled": "pos" | "rate"}``. The settings come from LINKEDGE_CAPTURE_* (:class:`CaptureSettings`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference_image import contract
from inference_image.capture_spool import CaptureSpool, SpoolError

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


class RequestCapture:
    """Chooses the rows to keep and appends them to this process's segment of the spool."""

    def __init__(
        self,
        settings: CaptureSettings,
        model_version: str,
        on_captured: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.settings = settings
        self.on_captured = on_captured
        self.spool = settings.spool()
        self.model_version = model_version
        self._rng = np.random.default_rng()
        self._pid = os.getpid()
        self._sealer_pid = -1  # the process whose sealing timer runs

    def _start_sealer(self) -> None:
        """A daemon thread per process that seals the segment once it is old, requests or not
        (the check runs every quarter of segment_seconds, at most every 30 s)."""
        self._sealer_pid = os.getpid()
        period = min(max(self.settings.segment_seconds / 4, 0.25), 30.0)
        spool = self.spool

        def seal_old_segments() -> None:
            logged: set[str] = set()
            pause = period
            while True:
                time.sleep(pause)
                try:
                    spool.seal_if_old()
                    pause = period
                except Exception as exc:  # the thread must outlive any error
                    if type(exc).__name__ not in logged:  # once per kind, not every period
                        logged.add(type(exc).__name__)
                        log.exception("capture: the open segment could not be sealed")
                    pause = min(pause * 2, 300.0)

        threading.Thread(target=seal_old_segments, name="capture-sealer", daemon=True).start()

    def observe(self, rows: np.ndarray, probabilities: np.ndarray, positive: np.ndarray) -> int:
        """Capture the chosen rows; how many were captured."""
        if self._pid != os.getpid():  # a fork: a sampling stream of its own
            self._rng, self._pid = np.random.default_rng(), os.getpid()
        if self._sealer_pid != os.getpid():  # threads do not survive a fork: one per process
            self._start_sealer()
        sampled = self._rng.random(len(rows)) < self.settings.rate
        chosen = np.flatnonzero(positive | sampled)
        if not len(chosen):
            return 0
        now = round(time.time(), 3)
        inputs = np.asarray(rows, dtype=np.float32)
        records = [
            {
                "time": now,
                "model_version": self.model_version,
                "inputs": inputs[index],  # float32, NaN written as null
                "probability": probabilities[index],
                "label": "pos" if positive[index] else "neg",
                "sampled": "pos" if positive[index] else "rate",
            }
            for index in chosen.tolist()
        ]
        self.spool.append(records)
        self.on_captured(len(records))
        return len(records)

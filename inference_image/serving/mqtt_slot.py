"""A stable slot per gunicorn worker, so each worker's MQTT client id survives restarts.

Each worker takes the first free slot ``i`` in ``range(workers)`` by an exclusive ``flock``
on a lock file named after the base client id and ``i``; the lock lasts as long as the
worker process. A worker that is replaced (it died, or the container restarted) finds its
slot free again and connects with the same client id, so it resumes its persistent MQTT
session and gets the messages the broker kept for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from .mqtt_config import SLOT_LOCK_DIR


@dataclass(frozen=True)
class Slot:
    index: int
    fd: int  # holds the lock; closed by release() or when the process ends

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def lock_path(base_client_id: str, index: int, lock_dir: Path = SLOT_LOCK_DIR) -> Path:
    return Path(lock_dir) / f"linkedge-mqtt-slot-{base_client_id}-{index}"


def claim_slot(base_client_id: str, workers: int, lock_dir: Path = SLOT_LOCK_DIR) -> Slot | None:
    """The first free slot in ``range(workers)``, locked; None when all are taken (a worker
    being replaced may still hold its slot for a moment: try again)."""
    for index in range(max(1, workers)):
        path = lock_path(base_client_id, index, lock_dir)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return Slot(index, fd)
    return None

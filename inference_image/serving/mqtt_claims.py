"""Which worker of this container took a message id: duplicates across the workers.

Each worker has its own MQTT session, and the broker spreads the shared subscription's
messages over them: a message the broker sends again (not acknowledged before a reconnect)
comes back to the same session, and that worker's own window (:mod:`.answered_log`) knows
it. But a message published twice (a sensor that sent it again after a lost PUBACK, or
twice on purpose) can reach two workers. So each worker claims the ids it takes in one
table the container's workers share (SQLite, in the container's own /tmp); an id already
claimed by another worker is a duplicate: acknowledged, counted, not answered. The worker
that claimed it answers it (after a crash, its replacement does: same slot, same client
id, and the broker sends it the message again).

The table holds the last ``window`` ids claimed. Any failure of the table (locked for too
long, disk full) only turns this check off for the batch, with a warning: answering twice
is better than not answering.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Any

log = logging.getLogger("linkedge.mqtt")

_CHUNK = 500  # SQL parameters per statement (SQLite allows 999 in old builds)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS claims "
    "(seq INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, owner TEXT NOT NULL)"
)


def claims_path(lock_dir: Path, base_client_id: str) -> Path:
    return Path(lock_dir) / f"linkedge-mqtt-ids-{base_client_id}.sqlite"


def forget_claims(base_client_id: str, lock_dir: Path | None = None) -> None:
    """Remove the table (a server starting: its workers have taken nothing yet). In a
    container /tmp starts empty anyway; on a host it may hold an earlier server's table."""
    from .mqtt_config import SLOT_LOCK_DIR

    path = claims_path(SLOT_LOCK_DIR if lock_dir is None else lock_dir, base_client_id)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink()


class SharedClaims:
    """The container's claimed ids; ``owner``: this worker's client id."""

    def __init__(self, path: Path, owner: str, window: int, logger: Any = None) -> None:
        self.path = Path(path)
        self.owner = owner
        self.window = window
        self.log = logger or log
        self._since_trim = 0
        self._warned = False
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=2.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # /tmp: gone with the container anyway
        self._db.execute(_SCHEMA)

    def claim(self, keys: list[bytes]) -> dict[bytes, str]:
        """Claim ``keys`` for this worker; the ones another worker claimed first (key ->
        its client id). On any error of the table: none (and a warning, once)."""
        db = self._db
        if db is None or not keys:
            return {}
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                owners: dict[bytes, str] = {}
                for start in range(0, len(keys), _CHUNK):
                    chunk = keys[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    owners.update(
                        db.execute(
                            f"SELECT key, owner FROM claims WHERE key IN ({marks})", chunk
                        ).fetchall()
                    )
                fresh = [(key, self.owner) for key in dict.fromkeys(keys) if key not in owners]
                db.executemany("INSERT INTO claims (key, owner) VALUES (?, ?)", fresh)
                self._since_trim += len(fresh)
                if self._since_trim >= max(1, self.window // 10):
                    db.execute(
                        "DELETE FROM claims WHERE seq <= (SELECT MAX(seq) FROM claims) - ?",
                        (self.window,),
                    )
                    self._since_trim = 0
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if not self._warned:
                self.log.warning(
                    "MQTT: the shared ids table %s failed (%s); a message published twice may "
                    "be answered twice",
                    self.path,
                    exc,
                )
                self._warned = True
            return {}
        return {key: owner for key, owner in owners.items() if owner != self.owner}

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

"""An error's traceback logged the first time each kind is seen, then only counted elsewhere:
a broken disk or observer must not flood the log at the request rate."""

from __future__ import annotations

import logging


class OncePerKind:
    """Logs an error the first time its (where, exception type) is seen; later ones of the same
    kind are left to the caller's counter."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: set[tuple[str, str]] = set()

    def error(self, where: str, exc: BaseException, message: str, *args: object) -> None:
        kind = (where, type(exc).__name__)
        if kind in self._seen:
            return
        self._seen.add(kind)
        self.logger.error(message, *args, exc_info=exc)

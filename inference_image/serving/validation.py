"""What every request parser shares: the client-error exception and value descriptions."""

from __future__ import annotations

from typing import Any

# Finite doubles at or beyond this magnitude round to infinity in float32.
F32_OVERFLOW = float.fromhex("0x1.ffffffp+127")


# A byte count with more digits than this exceeds any body (and Python's int() refuses
# strings of more than 4,300 digits with a ValueError).
_MAX_COUNT_DIGITS = 18
BEYOND_ANY_BODY = 10**_MAX_COUNT_DIGITS


class PayloadError(ValueError):
    """A request the client must fix; ``status`` is the HTTP status to answer with and
    ``headers`` extra response headers (e.g. ``WWW-Authenticate`` on a 401)."""

    def __init__(
        self, message: str, status: int = 400, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers


def byte_count(raw: str) -> int | None:
    """A decimal byte count from a header (``Content-Length`` and the like), None when it
    is not one. Counts too large for any body come back as :data:`BEYOND_ANY_BODY`."""
    if not (raw.isascii() and raw.isdigit()):
        return None
    digits = raw.lstrip("0")
    return int(digits or "0") if len(digits) <= _MAX_COUNT_DIGITS else BEYOND_ANY_BODY


def shown_count(raw: str) -> str:
    """A header's byte count as an error message shows it (long ones cut short)."""
    return raw if len(raw) <= 20 else f"{raw[:20]}... ({len(raw)} digits)"


def describe(value: Any) -> str:
    """A short, safe description of a JSON value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return "NaN" if value != value else f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return f"array of {len(value)} items"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__

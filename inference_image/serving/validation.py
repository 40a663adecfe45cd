"""What every request parser shares: the client-error exception and value descriptions."""

from __future__ import annotations

from typing import Any

# Finite doubles at or beyond this magnitude round to infinity in float32.
F32_OVERFLOW = float.fromhex("0x1.ffffffp+127")


class PayloadError(ValueError):
    """A request the client must fix; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def describe(value: Any) -> str:
    """A short, safe description of a JSON value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return f"array of {len(value)} items"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__

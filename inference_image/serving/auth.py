"""Bearer-token access to the endpoints that run the model.

The token is never part of the image: the server reads it at start-up from the file named
by ``LINKEDGE_API_TOKEN_FILE`` (a secret mounted read-only into the container). Health,
metadata and ``/metrics`` stay open for monitoring; :class:`BearerAuth` guards
``/predict`` and V2 infer (both the fast path and Flask call it through
:mod:`.endpoints`).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inference_image import contract

from .validation import PayloadError

TOKEN_FILE_ENV = contract.ENV_TOKEN_FILE
SCHEME = "Bearer"
_CHALLENGE = f'{SCHEME} realm="linkedge"'
_INVALID = f'{SCHEME} realm="linkedge", error="invalid_token"'


def read_token_file(path: Path) -> bytes:
    """The token in ``path`` (the contract's one reader: surrounding whitespace, such as a
    final newline, dropped). ValueError naming the variable and the file when it cannot be
    read, is empty, or holds anything but one printable ASCII word."""
    return contract.read_token_file(path, setting=TOKEN_FILE_ENV).encode("ascii")


class BearerAuth:
    """Checks ``Authorization: Bearer <token>`` against the configured token."""

    def __init__(self, token: bytes) -> None:
        if not token:
            raise ValueError("the API token must not be empty")
        self._token = token

    def __repr__(self) -> str:
        return "BearerAuth(<token hidden>)"

    def check(self, environ: Mapping[str, Any]) -> None:
        """Return when the request carries the token; PayloadError 401 otherwise."""
        header = environ.get("HTTP_AUTHORIZATION")
        if not header:
            raise PayloadError(
                f"missing bearer token: send the header Authorization: {SCHEME} <token>",
                status=401,
                headers=(("WWW-Authenticate", _CHALLENGE),),
            )
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != SCHEME.lower():
            raise PayloadError(
                f"Authorization must use the {SCHEME} scheme, got {scheme[:20]!r}",
                status=401,
                headers=(("WWW-Authenticate", _CHALLENGE),),
            )
        # WSGI header values are latin-1 decoded bytes: encode back to compare bytes.
        given = credentials.strip().encode("latin-1", "replace")
        if not hmac.compare_digest(given, self._token):
            raise PayloadError(
                "invalid bearer token", status=401, headers=(("WWW-Authenticate", _INVALID),)
            )

"""What every fuzzed answer must satisfy, shared by the schemathesis and hypothesis runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# Answers that may not be JSON: the metrics text, and a binary V2 response.
NON_JSON_OK = ("text/plain", "application/octet-stream")


def media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def assert_clear_answer(status: int, headers: Mapping[str, str], body: bytes, what: Any) -> None:
    """No 5xx; every 4xx is JSON ``{"error": "<non-empty message>"}``; a 401 challenges."""
    assert status < 500, f"{status} for {what!r}: {body[:300]!r}"
    if status < 400:
        return
    headers = {name.lower(): value for name, value in headers.items()}
    content_type = media_type(headers.get("content-type"))
    assert content_type == "application/json", f"{status} with {content_type!r} for {what!r}"
    document = json.loads(body)
    assert isinstance(document, dict) and set(document) == {"error"}, document
    message = document["error"]
    assert isinstance(message, str) and len(message) >= 10, document
    if status == 401:
        assert headers.get("www-authenticate", "").startswith("Bearer"), headers

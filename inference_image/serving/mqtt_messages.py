"""MQTT payloads: a features message in (id + a ``/predict`` document), answers out.

A features message is exactly a ``/predict`` body (one record, or ``{"instances": [...]}``)
with an optional top-level ``"id"`` (a string of at most MAX_ID_CHARS characters, or an
integer), which is taken out before the records are parsed. Without an id, the MQTT 5
correlation data (as hex) stands in for it; without either, the answer's id is null and the
message is not deduplicated.

Out:

- answer: ``{"id": ..., "model_version": ..., "predictions": [...]}``, the predictions
  exactly as ``/predict`` writes them (its body with the id put in front);
- error: ``{"id": ..., "error": "<what /predict's 4xx or 503 says>", "status": <its status>}``;
- alert, one per ``pos`` row: ``{"id", "row", "model_version", "probability", "received_at"}``.

Errors are checked in ``/predict``'s order: model not ready (503), body over the limit (413),
JSON (400), then the id, then the records (:class:`.payloads.RecordParser`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .payloads import PayloadError, body_too_large, parse_json
from .validation import describe

MAX_ID_CHARS = 256
NULL = b"null"


@dataclass(slots=True)
class Incoming:
    """One features message, decoded as far as it goes."""

    mid: int  # the MQTT packet id to acknowledge
    arrived: float  # time.monotonic() at arrival
    wall: float  # time.time() at arrival (an alert's received_at)
    id_json: bytes  # the answer's "id" value, JSON text (b"null" when none)
    key: bytes | None  # what duplicates are recognised by (None: not deduplicated)
    reply_topic: str | None  # a valid MQTT 5 Response Topic
    correlation: bytes | None  # MQTT 5 Correlation Data, copied to the answer
    document: Any  # the /predict document (id taken out) when error is None
    error: PayloadError | None

    @property
    def received_at(self) -> str:
        stamp = datetime.fromtimestamp(self.wall, UTC).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")


def valid_reply_topic(topic: Any) -> str | None:
    """A Response Topic the adapter can publish to (a topic name: no wildcards), else None."""
    if type(topic) is not str or not topic or "+" in topic or "#" in topic or "\0" in topic:
        return None
    return topic if len(topic.encode()) <= 65535 else None


def _take_id(document: Any) -> tuple[bytes | None, PayloadError | None]:
    """Remove a top-level "id" from ``document``; its JSON text, or the error it is."""
    if type(document) is not dict or "id" not in document:
        return None, None
    value = document.pop("id")
    kind = type(value)
    if kind is str:
        if len(value) > MAX_ID_CHARS:
            return None, PayloadError(
                f"id: expected at most {MAX_ID_CHARS} characters, got {len(value)}"
            )
        return orjson.dumps(value), None
    if kind is int:
        return orjson.dumps(value), None
    return None, PayloadError(f"id: expected a string or an integer, got {describe(value)}")


def decode(
    payload: bytes,
    properties: Any,
    mid: int,
    limit: int,
    not_ready: PayloadError | None = None,
    arrived: float | None = None,
) -> Incoming:
    """A features message as far as it can be read: its id in any case (when it has one), and
    either its document or the error it is answered with (``not_ready``: the model's 503)."""
    correlation = getattr(properties, "CorrelationData", None) if properties is not None else None
    if correlation is not None and type(correlation) is not bytes:
        correlation = bytes(correlation)
    reply_topic = None
    if properties is not None:
        reply_topic = valid_reply_topic(getattr(properties, "ResponseTopic", None))
    error: PayloadError | None = None
    document: Any = None
    id_json: bytes | None = None
    if len(payload) > limit:
        error = body_too_large(len(payload), limit)
    else:
        try:
            document = parse_json(payload)
        except PayloadError as exc:
            error = exc.with_traceback(None)
        else:
            id_json, id_error = _take_id(document)
            error = id_error
    if not_ready is not None:
        error = not_ready
    if id_json is None and correlation:
        id_json = orjson.dumps(correlation.hex())
    return Incoming(
        mid=mid,
        arrived=time.monotonic() if arrived is None else arrived,
        wall=time.time(),
        id_json=id_json or NULL,
        key=id_json,
        reply_topic=reply_topic,
        correlation=correlation or None,
        document=document if error is None else None,
        error=error,
    )


def answer_bytes(id_json: bytes, predict_body: bytes) -> bytes:
    """``{"id": ..., "model_version": ..., "predictions": [...]}`` from ``/predict``'s body."""
    return b'{"id":' + id_json + b"," + predict_body[1:]


def error_bytes(id_json: bytes, error: PayloadError) -> bytes:
    return b'{"id":%s,"error":%s,"status":%d}' % (
        id_json,
        orjson.dumps(error.message),
        error.status,
    )


def alert_bytes(
    id_json: bytes, row: int, model_version_json: bytes, probability: bytes, received_at: str
) -> bytes:
    """One ``pos`` row: ``probability`` is the JSON number text the answer has for it."""
    return b'{"id":%s,"row":%d,"model_version":%s,"probability":%s,"received_at":"%s"}' % (
        id_json,
        row,
        model_version_json,
        probability,
        received_at.encode(),
    )

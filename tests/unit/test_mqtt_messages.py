"""MQTT payloads in and out (mqtt_messages.py) and the batched /predict path they use."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from inference_image.serving.app import create_app
from inference_image.serving.endpoints import Prediction
from inference_image.serving.mqtt_messages import (
    MAX_ID_CHARS,
    alert_bytes,
    answer_bytes,
    decode,
    error_bytes,
    valid_reply_topic,
)
from inference_image.serving.payloads import PayloadError


class Props:
    """What paho gives: attributes only for the properties present."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)


def record(bundle, index: int = 0) -> dict:
    vector = bundle.smoke_vectors[index]
    return dict(zip(bundle.feature_names, vector["inputs"], strict=True))


@pytest.mark.parametrize(
    ("given", "id_json"),
    [("abc", b'"abc"'), (12, b"12"), (-3, b"-3"), ("", b'""'), ("x" * MAX_ID_CHARS, None)],
)
def test_the_id_is_taken_out_of_the_record(tiny_bundle, given, id_json):
    payload = orjson.dumps({"id": given, **record(tiny_bundle)})
    incoming = decode(payload, None, mid=5, limit=1 << 20)
    assert incoming.error is None
    assert incoming.id_json == (id_json or orjson.dumps(given))
    assert incoming.key == incoming.id_json
    assert "id" not in incoming.document
    assert incoming.mid == 5


def test_the_id_next_to_instances(tiny_bundle):
    payload = orjson.dumps({"instances": [record(tiny_bundle)] * 2, "id": "b1"})
    incoming = decode(payload, None, mid=1, limit=1 << 20)
    assert incoming.error is None and incoming.id_json == b'"b1"'
    assert list(incoming.document) == ["instances"]


@pytest.mark.parametrize(
    ("given", "text"),
    [
        (True, "id: expected a string or an integer, got boolean true"),
        (1.5, "id: expected a string or an integer, got number 1.5"),
        (None, "id: expected a string or an integer, got null"),
        ([1], "id: expected a string or an integer, got array of 1 items"),
        ("y" * (MAX_ID_CHARS + 1), f"id: expected at most {MAX_ID_CHARS} characters"),
        (2**70, "id: expected a string or an integer, got number"),
    ],
)
def test_a_bad_id_is_an_error_without_id(tiny_bundle, given, text):
    payload = orjson.dumps({"id": 0, **record(tiny_bundle)}).replace(
        b'"id":0', b'"id":' + json.dumps(given).encode(), 1
    )
    incoming = decode(payload, None, mid=1, limit=1 << 20)
    assert incoming.error is not None and incoming.error.status == 400
    assert incoming.error.message.startswith(text)
    assert incoming.id_json == b"null" and incoming.key is None


def test_correlation_data_stands_in_for_a_missing_id(tiny_bundle):
    properties = Props(CorrelationData=b"\x00\xffab", ResponseTopic="replies/me")
    incoming = decode(orjson.dumps(record(tiny_bundle)), properties, mid=1, limit=1 << 20)
    assert incoming.id_json == b'"00ff6162"' and incoming.key == b'"00ff6162"'
    assert (incoming.reply_topic, incoming.correlation) == ("replies/me", b"\x00\xffab")
    with_id = decode(orjson.dumps({"id": 4, **record(tiny_bundle)}), properties, 1, 1 << 20)
    assert with_id.id_json == b"4"  # an id in the message wins
    broken = decode(b"{", properties, mid=1, limit=1 << 20)
    assert broken.id_json == b'"00ff6162"' and broken.error is not None
    nothing = decode(orjson.dumps(record(tiny_bundle)), Props(), mid=1, limit=1 << 20)
    assert nothing.id_json == b"null" and nothing.key is None and nothing.correlation is None


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "x\0y", 5, None])
def test_unusable_response_topics_are_ignored(topic):
    assert valid_reply_topic(topic) is None
    assert valid_reply_topic("replies/a b") == "replies/a b"


def test_errors_come_in_the_order_predict_checks_them(tiny_bundle):
    not_ready = PayloadError("model not ready: no", status=503)
    payload = orjson.dumps({"id": "r", **record(tiny_bundle)})
    over = decode(payload, None, mid=1, limit=len(payload) - 1)
    assert over.error is not None and over.error.status == 413
    assert over.error.message == (
        f"request body of {len(payload)} bytes exceeds the limit of {len(payload) - 1} bytes"
    )
    assert over.id_json == b"null"  # not read
    both = decode(payload, None, mid=1, limit=10, not_ready=not_ready)
    assert both.error is not_ready
    readable = decode(payload, None, mid=1, limit=1 << 20, not_ready=not_ready)
    assert readable.error is not_ready and readable.id_json == b'"r"'
    assert decode(b"", None, 1, 100).error.message.startswith("request body is empty")


def test_answer_error_and_alert_bytes():
    body = b'{"model_version":"v1","predictions":[{"label":"pos","probability":0.5}]}'
    assert orjson.loads(answer_bytes(b'"x"', body)) == {
        "id": "x",
        "model_version": "v1",
        "predictions": [{"label": "pos", "probability": 0.5}],
    }
    error = PayloadError('record: 1 unknown feature: "q"', status=400)
    assert orjson.loads(error_bytes(b"null", error)) == {
        "id": None,
        "error": 'record: 1 unknown feature: "q"',
        "status": 400,
    }
    alert = alert_bytes(b"7", 3, b'"v1"', b"0.9123", "2026-01-01T00:00:00.000Z")
    assert list(orjson.loads(alert).items()) == [
        ("id", 7),
        ("row", 3),
        ("model_version", "v1"),
        ("probability", 0.9123),
        ("received_at", "2026-01-01T00:00:00.000Z"),
    ]


def test_received_at_is_utc_with_milliseconds(tiny_bundle):
    incoming = decode(orjson.dumps(record(tiny_bundle)), None, 1, 1 << 20)
    incoming.wall = 0.25
    assert incoming.received_at == "1970-01-01T00:00:00.250Z"


def test_predict_documents_batches_as_predict_answers_each(tiny_bundle):
    """Many documents, one model call per LINKEDGE_MAX_ROWS rows: each answer is byte for
    byte /predict's; a bad document gets its own error and spoils nothing else."""
    from inference_image.serving.config import ServingConfig

    app = create_app(tiny_bundle, ServingConfig(max_rows=7))
    endpoints = app.extensions["linkedge"]["endpoints"]
    client = app.test_client()
    records = [record(tiny_bundle, index) for index in range(len(tiny_bundle.smoke_vectors))]
    documents = [
        records[0],
        {"instances": records[1:6]},
        {"instances": records[:3], "extra": 1},
        [1, 2],
        records[6],
        {"instances": records[:8]},  # over max_rows
        {"instances": records[7:14]},
    ]
    calls = []
    model = endpoints.model
    original = model.predict

    def counting(rows):
        calls.append(len(rows))
        return original(rows)

    model.predict = counting
    try:
        results = endpoints.predict_documents(documents)
    finally:
        model.predict = original
    assert calls == [7, 7]  # 1 + 5 + 1 rows, then 7 (the next would pass max_rows)
    for document, result in zip(documents, results, strict=True):
        http = client.post("/predict", json=document)
        if http.status_code == 200:
            assert isinstance(result, Prediction)
            assert result.body == http.data
            answers = json.loads(http.data)["predictions"]
            assert result.positive.tolist() == [a["label"] == "pos" for a in answers]
            assert np.array_equal(
                result.probabilities, np.array([a["probability"] for a in answers], np.float32)
            )
        else:
            assert isinstance(result, PayloadError)
            assert (result.status, result.message) == (http.status_code, http.json["error"])
            assert result.__traceback__ is None

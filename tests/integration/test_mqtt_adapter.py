"""The MQTT adapter, end to end: a real Mosquitto (password file, ACL), a real gunicorn
server (``inference_image.serving.server`` with LINKEDGE_MQTT_*), real MQTT messages.

Answers, errors, response topics, duplicates and metrics; restarts, handovers and the
sensor CLI are in the other test_mqtt_* modules.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
import pytest
import requests
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inference_image.bundle import ModelBundle
from inference_image.data import REQUEST_SAMPLE_FILE, default_data_dir, load_aps_csv
from inference_image.schema import APS_FEATURES
from inference_image.smoke_vectors import to_json_inputs
from tests.conftest import MQTT_REPLY_ROOT, mqtt_metric

TRUCK = "truck-7"
FEATURES = f"linkedge/{TRUCK}/aps/features"
PREDICTIONS = f"linkedge/{TRUCK}/aps/predictions"
ERRORS = f"linkedge/{TRUCK}/aps/errors"
ALERTS = f"linkedge/{TRUCK}/aps/alerts"


def sample_records(count: int) -> list[dict]:
    data_dir = default_data_dir()
    if data_dir is None or not (data_dir / REQUEST_SAMPLE_FILE).exists():
        pytest.skip("no unlabeled APS sample: set LINKEDGE_DATA_DIR or provide ../shared/aps")
    rows = load_aps_csv(data_dir / REQUEST_SAMPLE_FILE).features[:count]
    return [dict(zip(APS_FEATURES, to_json_inputs(row), strict=True)) for row in rows]


def smoke_records(bundle: ModelBundle) -> list[dict]:
    return [
        dict(zip(bundle.feature_names, vector["inputs"], strict=True))
        for vector in bundle.smoke_vectors
    ]


def by_id(payloads: list[bytes]) -> dict:
    answers: dict = {}
    for payload in payloads:
        answer = json.loads(payload)
        answers.setdefault(json.dumps(answer["id"]), []).append(answer)
    return answers


def predict_over_http(base: str, records: list[dict]) -> list[dict]:
    response = requests.post(f"{base}/predict", json={"instances": records}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_answers_are_exactly_what_predict_gives(tiny_bundle, mqtt_broker, mqtt_probe, mqtt_server):
    """200 rows of the unlabeled sample, as 200 single-record messages and as two 100-row
    messages: the same labels and probabilities as /predict; every "pos" row also on alerts."""
    server = mqtt_server(tiny_bundle.path, mqtt_broker, TRUCK)
    records = sample_records(200)
    smoke = smoke_records(tiny_bundle)  # the tiny model's own rows: "pos" ones among them
    records = records + smoke
    expected = predict_over_http(server.base, records)
    assert {p["label"] for p in expected} == {"pos", "neg"}

    probe = mqtt_probe()
    probe.subscribe(PREDICTIONS, ERRORS, ALERTS)
    for index, record in enumerate(records):
        probe.publish(FEATURES, orjson.dumps({"id": f"single-{index}", **record}))
    for start in range(0, len(records), 100):
        message = {"id": start, "instances": records[start : start + 100]}
        probe.publish(FEATURES, orjson.dumps(message))
    batches = (len(records) + 99) // 100
    assert probe.wait_for(lambda: len(probe.on(PREDICTIONS)) >= len(records) + batches)

    answers = by_id(probe.on(PREDICTIONS))
    assert probe.on(ERRORS) == []
    for index, want in enumerate(expected):
        (answer,) = answers.pop(json.dumps(f"single-{index}"))
        assert answer["model_version"] == tiny_bundle.version
        assert answer["predictions"] == [want]  # the same label, the same float32 text
    for start in range(0, len(records), 100):
        (answer,) = answers.pop(json.dumps(start))
        assert answer["predictions"] == expected[start : start + 100]
        assert list(answer) == ["id", "model_version", "predictions"]
    assert answers == {}

    # Alerts: one per "pos" row of every message, with the answer's probability.
    rows = {(f"single-{index}", 0): index for index in range(len(records))}
    rows |= {(index - index % 100, index % 100): index for index in range(len(records))}
    want_alerts = {key for key, index in rows.items() if expected[index]["label"] == "pos"}
    assert probe.wait_for(lambda: len(probe.on(ALERTS)) >= len(want_alerts))
    alerts = [json.loads(payload) for payload in probe.on(ALERTS)]
    assert {(alert["id"], alert["row"]) for alert in alerts} == want_alerts
    for alert in alerts:
        assert list(alert) == ["id", "row", "model_version", "probability", "received_at"]
        assert alert["probability"] == expected[rows[alert["id"], alert["row"]]]["probability"]
        assert alert["model_version"] == tiny_bundle.version
        assert alert["received_at"].endswith("Z")


def test_micro_batches_give_the_same_answers_as_single_messages(
    tiny_bundle, mqtt_broker, mqtt_probe, mqtt_server
):
    """Messages that arrive together are predicted in one model call: a burst of messages
    (published without waiting for each acknowledgement) gets the single answers."""
    server = mqtt_server(tiny_bundle.path, mqtt_broker, TRUCK, workers=1)
    records = smoke_records(tiny_bundle) * 10
    expected = predict_over_http(server.base, records)
    probe = mqtt_probe()
    probe.subscribe(PREDICTIONS)
    infos = [
        probe.client.publish(FEATURES, orjson.dumps({"id": index, **record}), qos=1)
        for index, record in enumerate(records)
    ]
    for info in infos:
        info.wait_for_publish(10)
    assert probe.wait_for(lambda: len(probe.on(PREDICTIONS)) >= len(records))
    answers = by_id(probe.on(PREDICTIONS))
    assert len(answers) == len(records)
    for index, want in enumerate(expected):
        (answer,) = answers[json.dumps(index)]
        assert answer["predictions"] == [want]


BAD_MESSAGES = {
    # name: (payload, text the error must contain, status, whether its id can be read)
    "malformed JSON": (b'{"id": "m1", "aa_000": ', "not valid JSON", 400, False),
    "empty": (b"", "request body is empty", 400, False),
    "not an object": (b'[{"id": "m1"}]', "expected a JSON object", 400, False),
    "NaN": (None, "NaN is not JSON", 400, False),
    "over the body limit": (None, "bytes exceeds the limit of 60000 bytes", 413, False),
    "bad id": (None, "id: expected a string or an integer, got boolean true", 400, False),
    "unknown feature": (None, "unknown feature: 'zz_999'", 400, True),
    "missing feature": (None, "missing feature: 'aa_000'", 400, True),
    "bad value": (None, "aa_000: expected a number, null or \"na\", got string 'lots'", 400, True),
    "too many rows": (None, "4 records exceed the limit of 3", 413, True),
}


def bad_payload(name: str, record: dict, with_id: bool = True) -> bytes:
    """The bad message ``name``; ``with_id=False``: the same body as /predict would get it."""
    payload = BAD_MESSAGES[name][0]
    if payload is not None:
        return payload
    tagged = {"id": name, **record} if with_id else dict(record)
    if name == "unknown feature":
        return orjson.dumps({**tagged, "zz_999": 1})
    if name == "missing feature":
        return orjson.dumps({key: value for key, value in tagged.items() if key != "aa_000"})
    if name == "bad value":
        return orjson.dumps({**tagged, "aa_000": "lots"})
    if name == "bad id":
        return orjson.dumps({**record, "id": True})
    if name == "too many rows":
        instances = {"instances": [record] * 4}
        return orjson.dumps({"id": name, **instances} if with_id else instances)
    if name == "over the body limit":
        return orjson.dumps({**tagged, "padding": "x" * 60_000})
    if name == "NaN":
        return orjson.dumps(tagged).replace(b'"ab_000":', b'"ab_000":NaN,"x":', 1)
    raise AssertionError(name)


def test_bad_messages_get_the_errors_predict_gives(
    tiny_bundle, mqtt_broker, mqtt_probe, mqtt_server
):
    """Every kind of bad message: an error on the errors topic with its id (null when it
    has none or it cannot be read), the message and status /predict gives for the same
    body; the server answers on and stays ready."""
    limits = {"LINKEDGE_MAX_BODY_BYTES": "60000", "LINKEDGE_MAX_ROWS": "3"}
    server = mqtt_server(tiny_bundle.path, mqtt_broker, TRUCK, **limits)
    record = smoke_records(tiny_bundle)[0]
    probe = mqtt_probe()
    probe.subscribe(PREDICTIONS, ERRORS)
    for name in BAD_MESSAGES:
        probe.publish(FEATURES, bad_payload(name, record))
    assert probe.wait_for(lambda: len(probe.on(ERRORS)) >= len(BAD_MESSAGES))
    errors = [json.loads(payload) for payload in probe.on(ERRORS)]
    for error in errors:
        assert list(error) == ["id", "error", "status"]
    named = {error["id"]: error for error in errors if error["id"] is not None}
    anonymous = [error for error in errors if error["id"] is None]
    readable = [name for name, case in BAD_MESSAGES.items() if case[3]]
    assert sorted(named) == sorted(readable)
    assert len(anonymous) == len(BAD_MESSAGES) - len(readable)
    for name, (_, text, status, id_readable) in BAD_MESSAGES.items():
        candidates = [named[name]] if name in named else anonymous
        matching = [e for e in candidates if text in e["error"] and e["status"] == status]
        assert matching, (name, candidates)
        # /predict gives the same status and message for the same body (the id aside).
        http = requests.post(
            f"{server.base}/predict",
            data=bad_payload(name, record, with_id=not id_readable),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert http.status_code == status, (name, http.text)
        if name != "bad id":  # /predict has no "id": there it is an unknown feature
            assert http.json()["error"] in [error["error"] for error in matching], name
    # The server lives on and answers.
    probe.publish(FEATURES, orjson.dumps({"id": "after", **record}))
    assert probe.wait_for(lambda: len(probe.on(PREDICTIONS)) >= 1)
    assert json.loads(probe.on(PREDICTIONS)[0])["id"] == "after"
    assert requests.get(f"{server.base}/v2/health/ready", timeout=5).status_code == 200
    assert server.process.poll() is None
    assert "Traceback" not in server.log()


def test_a_model_that_is_not_ready_answers_503(broken_bundle, mqtt_broker, mqtt_probe, mqtt_server):
    server = mqtt_server(broken_bundle.path, mqtt_broker, TRUCK, workers=1, wait=False)
    from tests.conftest import wait_mqtt_subscribed

    wait_mqtt_subscribed(server, 1)
    record = smoke_records(broken_bundle)[0]
    probe = mqtt_probe()
    probe.subscribe(PREDICTIONS, ERRORS)
    probe.publish(FEATURES, orjson.dumps({"id": "n1", **record}))
    probe.publish(FEATURES, b"not json at all")  # not ready comes first, as on /predict
    assert probe.wait_for(lambda: len(probe.on(ERRORS)) >= 2)
    errors = [json.loads(payload) for payload in probe.on(ERRORS)]
    assert {error["id"] for error in errors} == {"n1", None}
    for error in errors:
        assert error["status"] == 503
        assert error["error"].startswith("model not ready: smoke vector 3")
    assert probe.on(PREDICTIONS) == []


def test_response_topic_and_correlation_data(tiny_bundle, mqtt_broker, mqtt_probe, mqtt_server):
    """MQTT 5 request/response: the answer (or error) goes to the Response Topic with the
    Correlation Data; without an id the correlation data (hex) is the answer's id."""
    mqtt_server(tiny_bundle.path, mqtt_broker, TRUCK)
    record = smoke_records(tiny_bundle)[4]
    probe = mqtt_probe()
    reply = f"{MQTT_REPLY_ROOT}/probe-1"
    probe.subscribe(PREDICTIONS, ERRORS, reply)

    def request(payload: bytes, correlation: bytes, reply_to: str | None = reply) -> None:
        properties = Properties(PacketTypes.PUBLISH)
        if reply_to is not None:
            properties.ResponseTopic = reply_to
        properties.CorrelationData = correlation
        probe.publish(FEATURES, payload, properties)

    request(orjson.dumps(record), b"\x00\x01corr")  # no id: the correlation data stands in
    request(orjson.dumps({"id": "with-id", **record}), b"c2")
    request(b"{broken", b"c3")  # an error goes to the response topic too
    request(orjson.dumps({"id": "no-reply-topic", **record}), b"c4", reply_to=None)
    # The broker's ACL refuses this response topic to the server: answered on predictions.
    request(orjson.dumps({"id": "refused-topic", **record}), b"c5", reply_to="forbidden/x")
    assert probe.wait_for(lambda: len(probe.on(reply)) >= 3 and len(probe.on(PREDICTIONS)) >= 2)
    got = {}
    for topic, payload, properties in probe.messages:
        if topic in (reply, PREDICTIONS):
            got[properties.CorrelationData] = (topic, json.loads(payload))
    assert got[b"\x00\x01corr"][0] == reply
    assert got[b"\x00\x01corr"][1]["id"] == b"\x00\x01corr".hex()
    assert got[b"\x00\x01corr"][1]["predictions"][0]["label"] in ("pos", "neg")
    assert got[b"c2"][0] == reply and got[b"c2"][1]["id"] == "with-id"
    assert got[b"c3"][0] == reply
    assert got[b"c3"][1]["status"] == 400 and got[b"c3"][1]["id"] == b"c3".hex()
    assert got[b"c4"][0] == PREDICTIONS and got[b"c4"][1]["id"] == "no-reply-topic"
    assert got[b"c5"][0] == PREDICTIONS and got[b"c5"][1]["id"] == "refused-topic"
    assert probe.on(ERRORS) == []


def test_an_id_published_twice_is_answered_once(tiny_bundle, mqtt_broker, mqtt_probe, mqtt_server):
    """The same id twice (and three times at once): one answer, whichever worker of the
    server each copy reaches; the copies are counted as duplicates."""
    server = mqtt_server(tiny_bundle.path, mqtt_broker, TRUCK, workers=2)
    record = smoke_records(tiny_bundle)[5]
    probe = mqtt_probe()
    probe.subscribe(PREDICTIONS, ERRORS)
    probe.publish(FEATURES, orjson.dumps({"id": "twice", **record}))
    assert probe.wait_for(lambda: len(probe.on(PREDICTIONS)) >= 1)
    for _ in range(4):  # round robin over the workers' sessions: both workers see it
        probe.publish(FEATURES, orjson.dumps({"id": "twice", **record}))
    infos = [
        probe.client.publish(FEATURES, orjson.dumps({"id": 99, **record}), qos=1) for _ in range(3)
    ]
    for info in infos:
        info.wait_for_publish(10)
    probe.publish(FEATURES, orjson.dumps({"id": "last", **record}))
    assert probe.wait_for(lambda: len(probe.on(PREDICTIONS)) >= 3)
    assert not probe.wait_for(lambda: len(probe.on(PREDICTIONS)) > 3, timeout=1.0)
    assert sorted(by_id(probe.on(PREDICTIONS))) == sorted(['"twice"', "99", '"last"'])
    duplicates = {"outcome": "duplicate"}
    assert mqtt_metric(server.base, "linkedge_mqtt_messages_total", duplicates) == 6
    assert mqtt_metric(server.base, "linkedge_mqtt_received_total") == 9


def test_answered_ids_survive_a_restart_with_a_state_dir(
    tiny_bundle, mqtt_broker, mqtt_probe, mqtt_server, tmp_path: Path
):
    """With LINKEDGE_MQTT_STATE_DIR the answered ids are logged (one file per client id) and
    read back: after a restart with the same client id, an id answered before is not
    answered again."""
    state = tmp_path / "state"
    state.mkdir()
    record = smoke_records(tiny_bundle)[6]
    probe = mqtt_probe()
    probe.subscribe(PREDICTIONS)
    first = mqtt_server(
        tiny_bundle.path, mqtt_broker, TRUCK, workers=1, LINKEDGE_MQTT_STATE_DIR=str(state)
    )
    probe.publish(FEATURES, orjson.dumps({"id": "kept", **record}))
    assert probe.wait_for(lambda: len(probe.on(PREDICTIONS)) >= 1)
    assert first.stop() == 0
    log = state / f"answered-{first.client_id}-0.log"
    assert log.read_bytes() == b'"kept"\n'
    second = mqtt_server(
        tiny_bundle.path,
        mqtt_broker,
        TRUCK,
        workers=1,
        client_id=first.client_id,
        LINKEDGE_MQTT_STATE_DIR=str(state),
    )
    probe.publish(FEATURES, orjson.dumps({"id": "kept", **record}))
    probe.publish(FEATURES, orjson.dumps({"id": "new", **record}))
    assert probe.wait_for(lambda: len(probe.on(PREDICTIONS)) >= 2)
    assert sorted(by_id(probe.on(PREDICTIONS))) == ['"kept"', '"new"']
    assert len(by_id(probe.on(PREDICTIONS))['"kept"']) == 1
    duplicates = {"outcome": "duplicate"}
    assert mqtt_metric(second.base, "linkedge_mqtt_messages_total", duplicates) == 1
    assert log.read_bytes() == b'"kept"\n"new"\n'


def test_metrics_count_messages_and_predictions(tiny_bundle, mqtt_broker, mqtt_probe, mqtt_server):
    server = mqtt_server(tiny_bundle.path, mqtt_broker, TRUCK, workers=2)
    assert mqtt_metric(server.base, "linkedge_mqtt_connected") == 2
    records = smoke_records(tiny_bundle)
    labels = [vector["label"] for vector in tiny_bundle.smoke_vectors]
    probe = mqtt_probe()
    probe.subscribe(PREDICTIONS, ERRORS)
    for index, record in enumerate(records):
        probe.publish(FEATURES, orjson.dumps({"id": index, **record}))
    probe.publish(FEATURES, orjson.dumps({"id": "batch", "instances": records[:5]}))
    probe.publish(FEATURES, b"[]")  # an error
    probe.publish(FEATURES, orjson.dumps({"id": 0, **records[0]}))  # a duplicate
    total = len(records) + 1
    assert probe.wait_for(lambda: len(probe.on(PREDICTIONS)) >= total)
    assert probe.wait_for(lambda: len(probe.on(ERRORS)) >= 1)

    def outcome(name: str) -> float:
        return mqtt_metric(server.base, "linkedge_mqtt_messages_total", {"outcome": name})

    # Counted once the broker accepted the answer (a moment after it was delivered).
    deadline = time.monotonic() + 10
    while outcome("answered") < total and time.monotonic() < deadline:
        time.sleep(0.05)
    assert outcome("answered") == total
    assert outcome("error") == 1
    assert outcome("duplicate") == 1
    assert mqtt_metric(server.base, "linkedge_mqtt_received_total") == total + 2
    assert mqtt_metric(server.base, "linkedge_mqtt_answer_seconds_count") == total + 1
    assert mqtt_metric(server.base, "linkedge_mqtt_answer_seconds_sum") > 0
    want = labels + labels[:5]
    for label in ("pos", "neg"):
        counted = mqtt_metric(server.base, "linkedge_predictions_total", {"label": label})
        assert counted == want.count(label)
    # MQTT answers are no HTTP requests.
    assert mqtt_metric(server.base, "linkedge_requests_total", {"endpoint": "/predict"}) == 0

"""A truck sensor, simulated: rows of an APS CSV file published as features messages.

``linkedge-image sensor`` replays rows onto ``linkedge/<truck>/aps/features`` (one record, or
``--batch K`` rows as ``{"instances": [...]}``), each message with an id of its own, at a
given rate or as fast as the broker takes them. With ``--wait-answers`` it also subscribes
to the truck's predictions and errors and reports, by id, what was answered, lost or answered
twice, and the publish-to-answer latency (p50/p95/p99). The demo, the tests and the bench
use it; :func:`run_sensor` is the same thing for Python callers.

Only the standard library, NumPy, orjson and paho-mqtt (the serving image has all of them).
The client is driven in this thread (paho's external-loop API), so a message's timestamp is
taken when it is written to the socket: at most the broker's Receive Maximum of QoS 1
messages are in flight, the rest wait here, not in paho's queue.

QoS 1 messages the broker accepted but routed to nobody (MQTT 5 PUBACK "No matching
subscribers": the serving containers' shared subscription is missing, as just after a
broker restart, before they subscribe again; Mosquitto does not restore shared
subscriptions from its persistence) are published again after RETRY_UNROUTED_SECONDS: a
real sensor should do the same. Answers are counted by id: ``duplicated`` is an id answered
again in a new publication, ``redelivered`` a copy the broker sent again (DUP) because the
sensor's acknowledgement did not reach it.
"""

from __future__ import annotations

import math
import re
import secrets
import select
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import contract
from .mqtt_socket import corked, no_delay

CONNECT_TIMEOUT = 10.0
NO_MATCHING_SUBSCRIBERS = 0x10  # an MQTT 5 PUBACK reason code (a success: nobody got it)
RETRY_UNROUTED_SECONDS = 0.2
BURST = 64  # messages written at once, at most, when several are due
# With --rate, the messages due are written together every TICK seconds (a sensor's bus
# cycle): one TCP segment for several messages, as a real sensor gateway batches them.
TICK = 0.001
RECONNECT_SECONDS = 0.2
SESSION_EXPIRY = 300  # the sensor's own session: answers wait for it while the broker restarts


class SensorError(ValueError):
    """Something the user can fix (bad option, unreachable broker, refused credentials)."""


@dataclass(frozen=True)
class SensorConfig:
    host: str
    truck: str
    rows: Path
    port: int = contract.MQTT_DEFAULT_PORT
    username: str | None = None
    password_file: Path | None = None
    rate: float | None = None  # messages per second; None: as fast as the broker takes them
    count: int | None = None  # messages; None: every row of the file once
    batch: int = 1  # rows per message
    qos: int = 1
    wait_answers: bool = False
    timeout: float = 30.0  # seconds to wait for the last answers
    id_prefix: str | None = None  # None: a random one (ids never repeat across runs)
    client_id: str | None = None

    def check(self) -> None:
        if not re.fullmatch(contract.MQTT_TRUCK_PATTERN, self.truck):
            raise SensorError(
                f"--truck must match {contract.MQTT_TRUCK_PATTERN} (one topic level), "
                f"got {self.truck[:80]!r}"
            )
        if not 0 < self.port < 65536:
            raise SensorError(f"--port must be a TCP port (1-65535), got {self.port}")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise SensorError(
                f"--rate must be a positive number of messages per second, got {self.rate}"
            )
        if self.count is not None and self.count < 1:
            raise SensorError(f"--count must be at least 1, got {self.count}")
        if self.batch < 1:
            raise SensorError(f"--batch must be at least 1, got {self.batch}")
        if self.qos not in (0, 1):
            raise SensorError(f"--qos must be 0 or 1, got {self.qos}")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise SensorError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        if self.password_file is not None and self.username is None:
            raise SensorError("--password-file needs --username")


def read_password(path: Path) -> str:
    try:
        password = contract.read_token_file(path, allow_empty=True, setting="--password-file")
    except contract.TokenFileError as exc:
        raise SensorError(str(exc)) from None
    if not password:
        raise SensorError(f"--password-file ({path}) is empty; expected the MQTT password")
    return password


def record_payloads(path: Path) -> list[bytes]:
    """Each row of an APS CSV file as a ``/predict`` record (JSON object text; null =
    missing), through the package's CSV reader."""
    from .data import load_aps_csv
    from .schema import APS_FEATURES
    from .smoke_vectors import to_json_inputs

    dataset = load_aps_csv(path)
    return [
        orjson.dumps(dict(zip(APS_FEATURES, to_json_inputs(row), strict=True)))
        for row in dataset.features
    ]


def message_payload(message_id: str, records: list[bytes]) -> bytes:
    """``{"id": ..., <record>}`` for one record, ``{"id": ..., "instances": [...]}`` else."""
    head = b'{"id":' + orjson.dumps(message_id)
    if len(records) == 1:
        return head + b"," + records[0][1:]
    return head + b',"instances":[' + b",".join(records) + b"]}"


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    data = np.array(values, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(data, [50, 95, 99]).tolist()
    return {
        "p50": round(p50, 3),
        "p95": round(p95, 3),
        "p99": round(p99, 3),
        "max": round(float(data.max()), 3),
    }


def _answer_id(payload: bytes) -> Any:
    """The "id" of an answer: it comes first (``{"id":"<id>",...``), so the sensor's own ids
    (no quote, comma or escape in them) are cut out without parsing the predictions."""
    if payload.startswith(b'{"id":"'):
        end = payload.find(b'"', 7)
        if end > 0 and b"\\" not in payload[7:end]:
            return payload[7:end].decode("utf-8", "replace")
    try:
        return orjson.loads(payload).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return None


class _Sensor:
    def __init__(self, config: SensorConfig, password: str | None) -> None:
        import paho.mqtt.client as mqtt

        self.mqtt = mqtt
        self.config = config
        self.topic = contract.mqtt_topic(config.truck, "features")
        self.client_id = config.client_id or f"linkedge-sensor-{secrets.token_hex(4)}"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,  # answers are acknowledged together after each read
        )
        if config.username is not None:
            self.client.username_pw_set(config.username, password)
        self.client.max_inflight_messages_set(0)  # this class keeps within the broker's quota
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_socket_open = no_delay
        self.connack: Any = None
        self.connected = False
        self.reconnects = 0
        self.quota = 20
        self.in_flight: dict[int, tuple[str, bytes]] = {}  # QoS 1 packet id -> (id, payload)
        # Accepted by the broker but routed to nobody (PUBACK "No matching subscribers": the
        # servers' shared subscription is not there, e.g. just after a broker restart):
        # (when to send it again, id, payload).
        self.unrouted: deque[tuple[float, str, bytes]] = deque()
        self.republished = 0
        self.refused: Any = None
        self.suback: list[Any] | None = None
        self.sent_at: dict[str, float] = {}
        self.acked_at: dict[str, float] = {}  # id -> when the broker accepted it (PUBACK)
        self.disconnected_at: list[float] = []  # when a connection was lost
        self.first_answer: dict[str, float] = {}
        self.error_ids: set[str] = set()
        self.answers = 0
        self.duplicates = 0  # an id answered again in a new publication
        self.duplicate_ids: list[str] = []
        self.redelivered = 0  # a copy the broker sent again (DUP): not acknowledged in time
        self.unknown = 0
        self.to_ack: list[tuple[int, int]] = []

    # --- callbacks ------------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        if reason.is_failure:
            return
        self.connected = True
        quota = getattr(props, "ReceiveMaximum", None) if props is not None else None
        self.quota = int(quota) if quota else 65535

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected = False
        self.disconnected_at.append(time.perf_counter())
        self.to_ack.clear()  # the broker sends them again on the next connection

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        sent = self.in_flight.pop(mid, None)
        if sent is None or reason is None:
            return
        if reason.value == NO_MATCHING_SUBSCRIBERS:
            self.unrouted.append((time.monotonic() + RETRY_UNROUTED_SECONDS, *sent))
        elif reason.is_failure:
            if self.refused is None:
                self.refused = reason
        else:
            self.acked_at[sent[0]] = time.perf_counter()

    def acked_before_disconnect_ms(self, message_id: str) -> float | None:
        """How long before the next lost connection the broker accepted this message (None:
        not accepted, or no connection was lost after it)."""
        return self._ms_before_disconnect(self.acked_at.get(message_id))

    def answered_before_disconnect_ms(self, message_id: str) -> float | None:
        """How long before the next lost connection this message's first answer arrived (None:
        not answered, or no connection was lost after it)."""
        return self._ms_before_disconnect(self.first_answer.get(message_id))

    def _ms_before_disconnect(self, moment: float | None) -> float | None:
        """Milliseconds from MOMENT to the next lost connection (None: no moment, or no
        connection was lost after it)."""
        if moment is None:
            return None
        after = [lost for lost in self.disconnected_at if lost >= moment]
        return round((min(after) - moment) * 1000, 1) if after else None

    @property
    def outstanding(self) -> int:
        """QoS 1 messages not yet accepted, or accepted but routed to nobody yet."""
        return len(self.in_flight) + len(self.unrouted)

    def publish(self, topic: str, message_id: str, payload: bytes, qos: int) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        if qos:
            self.in_flight[info.mid] = (message_id, payload)

    def republish_unrouted(self, topic: str) -> None:
        """Send again, once their delay is over, the messages nobody was subscribed for."""
        unrouted = self.unrouted
        now = time.monotonic()
        while unrouted and unrouted[0][0] <= now and self.connected:
            if len(self.in_flight) >= self.quota:
                return
            _, message_id, payload = unrouted.popleft()
            self.publish(topic, message_id, payload, 1)
            self.republished += 1

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self.suback = list(reasons)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.perf_counter()
        self.to_ack.append((message.mid, message.qos))
        answer_id = _answer_id(message.payload)
        if type(answer_id) is not str or answer_id not in self.sent_at:
            self.unknown += 1
            return
        self.answers += 1
        if answer_id in self.first_answer:
            if message.dup:
                self.redelivered += 1
            else:
                self.duplicates += 1
                self.duplicate_ids.append(answer_id)
            return
        self.first_answer[answer_id] = now
        if message.topic.endswith("/errors"):
            self.error_ids.add(answer_id)

    # --- the loop -------------------------------------------------------------------------

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the socket, then read, write and keep alive; reconnect
        when the connection was lost."""
        client = self.client
        sock = client.socket()
        if sock is None:
            time.sleep(min(timeout, RECONNECT_SECONDS))
            try:
                client.reconnect()
                self.reconnects += 1
            except OSError:
                pass
            return
        writing = [sock] if client.want_write() else []
        readable, writable, _ = select.select([sock], writing, [], max(0.0, timeout))
        if readable:
            client.loop_read()
            while (sock := client.socket()) is not None and select.select([sock], [], [], 0)[0]:
                client.loop_read()
        if self.to_ack:
            acks, self.to_ack = self.to_ack, []
            with corked(client.socket() if len(acks) > 1 else None):
                for mid, qos in acks:
                    client.ack(mid, qos)
        if self.unrouted:
            self.republish_unrouted(self.topic)
        if writable and client.socket() is not None:
            client.loop_write()
        if client.socket() is not None:
            client.loop_misc()
        if self.refused is not None:
            raise SensorError(
                f"the MQTT broker refused a message on {self.topic} ({self.refused}): check "
                "the user's ACL"
            )

    def wait_for(self, done: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.05))
        return True

    def connect(self) -> None:
        config = self.config
        where = f"{config.host}:{config.port}"
        properties = None
        if config.wait_answers:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY
        try:  # a new client id each run: clean_start=False only matters for reconnects
            self.client.connect(
                config.host, config.port, keepalive=30, clean_start=False, properties=properties
            )
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise SensorError(
                f"cannot reach the MQTT broker at {where} ({reason}): start it or pass the "
                "right --host and --port"
            ) from None
        if not self.wait_for(lambda: self.connack is not None, CONNECT_TIMEOUT):
            raise SensorError(f"the MQTT broker at {where} did not answer the connection")
        if self.connack.is_failure:
            raise SensorError(
                f"the MQTT broker at {where} refused the connection ({self.connack}): check "
                "--username and --password-file"
            )

    def subscribe(self) -> None:
        truck = self.config.truck
        topics = [contract.mqtt_topic(truck, leaf) for leaf in ("predictions", "errors")]
        self.client.subscribe([(topic, 1) for topic in topics])
        if not self.wait_for(lambda: self.suback is not None, CONNECT_TIMEOUT):
            raise SensorError("the MQTT broker did not answer the subscription")
        refused = [reason for reason in self.suback or [] if reason.is_failure]
        if refused:
            raise SensorError(
                f"the MQTT broker refused the subscription to {', '.join(topics)} ({refused[0]}): "
                "check the user's ACL"
            )

    def disconnect(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self.client.socket() is None:
            return
        properties = Properties(PacketTypes.DISCONNECT)
        properties.SessionExpiryInterval = 0
        self.client.disconnect(properties=properties)
        self.wait_for(lambda: self.client.socket() is None, 2.0)


def run_sensor(config: SensorConfig) -> dict[str, Any]:
    """Publish the messages (and collect the answers); the report."""
    config.check()
    password = None if config.password_file is None else read_password(config.password_file)
    records = record_payloads(config.rows)
    count = config.count or math.ceil(len(records) / config.batch)
    prefix = config.id_prefix or secrets.token_hex(4)
    sensor = _Sensor(config, password)
    sensor.connect()
    if config.wait_answers:
        sensor.subscribe()
    client = sensor.client
    topic = sensor.topic
    qos = config.qos
    rows_sent = 0
    started = time.perf_counter()
    next_row = 0
    index = 0
    next_burst = started
    while index < count:
        due = count
        if config.rate is not None:  # the messages whose time has come, every TICK at most
            now = time.perf_counter()
            if now < next_burst:
                sensor.pump(next_burst - now)
                continue
            due = min(count, int((now - started) * config.rate) + 1)
            if index >= due:
                sensor.pump(started + index / config.rate - now)
                continue
            next_burst = now + TICK
        room = BURST
        if qos:
            if len(sensor.in_flight) >= sensor.quota or not sensor.connected:
                ready = sensor.wait_for(
                    lambda: sensor.connected and len(sensor.in_flight) < sensor.quota,
                    config.timeout,
                )
                if not ready:
                    raise SensorError(
                        f"the MQTT broker at {config.host}:{config.port} took no message for "
                        f"{config.timeout:g} s (--timeout); {index} of {count} sent"
                    )
            room = min(room, sensor.quota - len(sensor.in_flight))
        burst = min(due - index, room)
        with corked(client.socket() if burst > 1 else None):  # leaves in a few segments
            for _ in range(burst):
                chosen = [records[(next_row + i) % len(records)] for i in range(config.batch)]
                next_row = (next_row + config.batch) % len(records)
                message_id = f"{prefix}-{index}"
                payload = message_payload(message_id, chosen)
                sensor.sent_at[message_id] = time.perf_counter()
                sensor.publish(topic, message_id, payload, qos)
                rows_sent += len(chosen)
                index += 1
        sensor.pump(0)
    published = time.perf_counter()
    # Everything handed over: wait for the broker's acknowledgements.
    sensor.wait_for(lambda: not qos or sensor.outstanding == 0, config.timeout)
    send_seconds = time.perf_counter() - started
    if config.wait_answers:
        sensor.wait_for(lambda: len(sensor.first_answer) >= count, config.timeout)
    finished = time.perf_counter()
    sensor.disconnect()
    report: dict[str, Any] = {
        "topic": topic,
        "client_id": sensor.client_id,
        "id_prefix": prefix,
        "qos": qos,
        "batch": config.batch,
        "sent": count,
        "rows": rows_sent,
        "seconds": round(send_seconds, 3),
        "rate": round(count / (published - started), 1) if published > started else None,
        "unacknowledged": len(sensor.in_flight) if qos else None,
        "unrouted": len(sensor.unrouted) if qos else None,  # no subscriber until the end
        "republished": sensor.republished,
        "reconnects": sensor.reconnects,
    }
    if config.wait_answers:
        latencies = [
            answered - sensor.sent_at[message_id]
            for message_id, answered in sensor.first_answer.items()
        ]
        answered_ids = len(sensor.first_answer)
        lost_ids = [
            f"{prefix}-{index}"
            for index in range(count)
            if f"{prefix}-{index}" not in sensor.first_answer
        ]
        report.update(
            {
                "answered": answered_ids - len(sensor.error_ids),
                "errors": len(sensor.error_ids),
                "lost": count - answered_ids,
                "lost_ids": lost_ids[:20],
                # For each lost message: how long before a lost connection the broker had
                # accepted it, in ms (None: never accepted, or no connection lost after it).
                "lost_acked_before_disconnect_ms": [
                    sensor.acked_before_disconnect_ms(message_id) for message_id in lost_ids[:20]
                ],
                "duplicated": sensor.duplicates,
                "duplicated_ids": sensor.duplicate_ids[:20],
                # For each: how long before a lost connection its first answer had arrived, in
                # ms (a power cut can deliver again what the broker had not yet saved as
                # delivered).
                "duplicated_answered_before_disconnect_ms": [
                    sensor.answered_before_disconnect_ms(message_id)
                    for message_id in sensor.duplicate_ids[:20]
                ],
                "redelivered": sensor.redelivered,
                "unexpected": sensor.unknown,
                "answers_per_second": round(answered_ids / (finished - started), 1),
                "latency_ms": percentiles(latencies),
            }
        )
    return report

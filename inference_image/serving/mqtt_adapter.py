"""The MQTT adapter: each gunicorn worker answers features messages beside its HTTP server.

When LINKEDGE_MQTT_HOST is set, every keep-alive worker (:mod:`.worker`) starts one
:class:`MqttAdapter` after the fork: a thread running an MQTT 5 client (paho-mqtt) with the
worker's own app objects, so HTTP and MQTT share the model, ``/predict``'s parsing and
encoding (:meth:`.endpoints.PredictionEndpoints.predict_documents`) and the metrics.

- The client id is LINKEDGE_MQTT_CLIENT_ID plus the worker's slot (:mod:`.mqtt_slot`); the
  session is persistent (clean start off, SessionExpiryInterval one day), so a restarted
  worker resumes it and gets what the broker kept for it.
- It subscribes to ``$share/linkedge-aps/linkedge/<truck>/aps/features`` with QoS 1: the
  workers, and during a handover the old and the new container, split the messages.
- Micro-batches: everything read from the socket in one turn of the loop, waiting up to
  GATHER_SECONDS after the first message (at most BATCH_MESSAGES messages), is parsed and
  predicted in one model call, then answered message by message (:mod:`.mqtt_messages`).
- Nothing taken is lost: acknowledgements are manual. A features message is acknowledged
  only once the broker has accepted (PUBACK) its answer and alerts, after its id was
  written to the answered-ids log (:mod:`.answered_log`). A redelivered id is acknowledged
  without a second answer; so is an id another worker of the container took
  (:mod:`.mqtt_claims`: a message published twice can reach two workers).
- Answers are published within the broker's Receive Maximum (its CONNACK), the rest wait
  in order; the socket is corked while a batch's answers and acknowledgements are written.
- Broker gone: reconnect with back-off; answers not yet accepted are sent again, messages
  not yet acknowledged come again (and are recognised by their ids). HTTP serves meanwhile.
- Stop (SIGTERM): unsubscribe, answer everything already taken, wait for the broker's
  PUBACKs, acknowledge, then disconnect with SessionExpiryInterval 0 so the broker drops
  the session (else it would keep queueing the shared group's messages for it).

All MQTT work happens in the adapter's thread; paho is driven with its external-loop API
(``loop_read``/``loop_write``/``loop_misc`` around one ``select``).
"""

from __future__ import annotations

import logging
import random
import select
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from inference_image import contract
from inference_image.mqtt_socket import corked, no_delay

from .answered_log import DEFAULT_WINDOW, AnsweredIds, log_path, prune_logs
from .endpoints import Prediction, PredictionEndpoints
from .metrics import ServingMetrics
from .mqtt_claims import SharedClaims, claims_path
from .mqtt_config import (
    BATCH_MESSAGES,
    KEEPALIVE_SECONDS,
    RECEIVE_MAXIMUM,
    SESSION_EXPIRY_SECONDS,
    SLOT_LOCK_DIR,
    MqttSettings,
)
from .mqtt_messages import Incoming, alert_bytes, answer_bytes, decode, error_bytes
from .mqtt_slot import Slot, claim_slot
from .payloads import PayloadError
from .responses import probability_texts

RECONNECT_MIN_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 10.0
TURN_SECONDS = 0.25  # the longest wait for the socket: how soon a stop request is seen
# A batch waits this long after its first message for more: at a few thousand messages a
# second, ~10 more messages share the model call (~70 us fixed, ~6 us a row) and the socket
# writes, for 2 ms more latency.
GATHER_SECONDS = 0.002
QUIET_SECONDS = 0.3  # stopping: unsubscribed and nothing arrived for this long -> done
STOP_RECONNECT_SECONDS = 5.0  # stopping while disconnected: try this long to clean up
DEFAULT_SEND_QUOTA = 20  # QoS 1 publishes in flight until the broker says (Receive Maximum)
SESSION_TAKEN_OVER = 0x8E  # an MQTT 5 DISCONNECT reason code

_default_log = logging.getLogger("linkedge.mqtt")


@dataclass(slots=True, eq=False)
class Pending:
    """A features message taken, answered or being answered, not yet acknowledged."""

    key: bytes | None
    arrived: float
    outcome: str  # "answered" or "error"
    acks: list[tuple[int, int, int]]  # (connection generation, packet id, QoS) to acknowledge
    outstanding: int = 0  # publishes (answer, alerts) the broker has not accepted yet


@dataclass(slots=True)
class _Sent:
    pending: Pending
    fallback: str | None  # sent to a response topic: where to send it if the broker refuses
    payload: bytes
    properties: Properties | None


def _session_properties(expiry: int, receive_maximum: int | None = None) -> Properties:
    packet = PacketTypes.CONNECT if receive_maximum is not None else PacketTypes.DISCONNECT
    properties = Properties(packet)
    properties.SessionExpiryInterval = expiry
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties


class MqttAdapter:
    """One worker's MQTT client (see the module docstring). ``start()``, then
    ``request_stop()`` and ``join()`` from the worker's main thread."""

    def __init__(
        self,
        settings: MqttSettings,
        endpoints: PredictionEndpoints,
        metrics: ServingMetrics,
        model_version: str,
        workers: int,
        logger: Any = None,
        answered_window: int = DEFAULT_WINDOW,
    ) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.metrics = metrics.mqtt()
        self.workers = workers
        self.log = logger or _default_log
        self.answered_window = answered_window
        self.client_id: str | None = None
        self._model_version_json = orjson.dumps(model_version)
        self._limit = endpoints.max_body_bytes
        self._thread = threading.Thread(target=self._run, name="linkedge-mqtt", daemon=True)
        self._stop = threading.Event()
        self._stop_seconds = 30.0
        self._client: mqtt.Client | None = None
        self._slot: Slot | None = None
        self._answered: AnsweredIds | None = None
        self._claims: SharedClaims | None = None
        # State of the loop; touched by the adapter thread only (paho's callbacks included).
        # (message, arrival, connection generation): its packet id is only valid on that one.
        self._inbox: list[tuple[mqtt.MQTTMessage, float, int]] = []
        self._acked: list[tuple[int, str | None]] = []  # (answer packet id, refusal or None)
        self._sent: dict[int, _Sent] = {}  # handed to paho, not yet accepted by the broker
        self._backlog: deque[tuple[Pending, str, bytes, Properties | None, str | None]] = deque()
        self._quota = DEFAULT_SEND_QUOTA  # the broker's Receive Maximum: len(_sent) at most
        self._by_key: dict[bytes, Pending] = {}
        self._open = 0  # Pending not yet acknowledged
        self._generation = 0  # +1 on every lost connection: older packet ids are stale
        self._connected = False
        self._ever_connected = False
        self._subscribe_mid: int | None = None
        self._unsubscribe_mid: int | None = None
        self._unsubscribed_at: float | None = None
        self._last_arrival = 0.0
        self._backoff = RECONNECT_MIN_SECONDS
        self._next_attempt = 0.0
        self._draining = False
        self._drain_deadline = 0.0
        self._warned_log = False

    # --- control, from the worker's main thread ----------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def request_stop(self, seconds: float = 30.0) -> None:
        """Stop taking messages, answer the ones taken, disconnect; within ``seconds``."""
        self._stop_seconds = max(0.5, seconds)
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the adapter to finish; whether it did."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def connected(self) -> bool:
        return self._connected

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._slot = self._claim_slot()
            if self._slot is None:
                return
            self.client_id = self.settings.worker_client_id(self._slot.index)
            state_dir = self.settings.state_dir
            if state_dir is not None:
                own = log_path(state_dir, self.client_id)
                for path in prune_logs(state_dir, SESSION_EXPIRY_SECONDS, keep=own):
                    self.log.info("MQTT: removed %s (not written for a day)", path)
            self._answered = self._open_answered()
            self._claims = self._open_claims()
            self._client = self._make_client(self.client_id)
            self._serve()
        except Exception:
            self.log.exception("MQTT adapter stopped by an unexpected error; HTTP serves on")
        finally:
            self._set_connected(False)
            if self._answered is not None:
                self._answered.close()
            if self._claims is not None:
                self._claims.close()
            if self._slot is not None:
                self._slot.release()

    def _open_answered(self) -> AnsweredIds:
        assert self.client_id is not None
        state_dir = self.settings.state_dir
        if state_dir is not None:
            path = log_path(state_dir, self.client_id)
            try:
                return AnsweredIds(self.answered_window, path)
            except OSError as exc:
                self.log.error(
                    "MQTT: cannot use the answered-ids log %s (%s): ids are kept in memory "
                    "only, a power cut may bring second answers",
                    path,
                    exc,
                )
        return AnsweredIds(self.answered_window)

    def _open_claims(self) -> SharedClaims | None:
        assert self.client_id is not None
        path = claims_path(SLOT_LOCK_DIR, self.settings.client_id)
        try:
            return SharedClaims(path, self.client_id, self.answered_window, self.log)
        except sqlite3.Error as exc:
            self.log.warning(
                "MQTT: no shared ids table (%s: %s); a message published twice may reach two "
                "workers and be answered twice",
                path,
                exc,
            )
            return None

    def _claim_slot(self) -> Slot | None:
        waited = False
        while not self._stop.is_set():
            slot = claim_slot(self.settings.client_id, self.workers)
            if slot is not None:
                return slot
            if not waited:
                self.log.warning(
                    "every MQTT client slot of %s is taken (a worker still stopping?); waiting",
                    self.settings.client_id,
                )
                waited = True
            self._stop.wait(0.5)
        return None

    def _make_client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self.settings.password)
        # The broker's Receive Maximum is kept here (self._quota), not by paho: its own limit
        # scans every message in flight on each PUBACK.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_socket_open = no_delay
        client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=KEEPALIVE_SECONDS,
            clean_start=False,
            properties=_session_properties(SESSION_EXPIRY_SECONDS, RECEIVE_MAXIMUM),
        )
        return client

    def _serve(self) -> None:
        client = self._client
        assert client is not None
        while True:
            if self._stop.is_set() and not self._draining:
                self._begin_drain()
            if self._draining and self._drain_finished():
                break
            if client.socket() is None:
                self._connect()
                continue
            try:
                self._turn(client)
            except Exception:  # a bug: never let it end MQTT serving silently
                self.log.exception("MQTT adapter: unexpected error in the loop; continuing")
                time.sleep(0.1)
        self._finish()

    # --- connection -----------------------------------------------------------------------

    def _connect(self) -> None:
        """One connection attempt when due; else wait (a stop request ends the wait)."""
        client = self._client
        assert client is not None
        delay = self._next_attempt - time.monotonic()
        if delay > 0:
            if self._stop.is_set():  # stopping: the event no longer waits
                time.sleep(min(delay, 0.05))
            else:
                self._stop.wait(min(delay, TURN_SECONDS))
            return
        settings = self.settings
        try:
            client.reconnect()  # the address and CONNECT properties: _make_client
        except (OSError, ValueError) as exc:
            where = f"{settings.host}:{settings.port}"
            self._retry_later(f"MQTT: cannot reach the broker at {where}", exc)

    def _retry_later(self, what: str, reason: Any) -> None:
        delay = self._backoff * random.uniform(0.8, 1.2)
        self._next_attempt = time.monotonic() + delay
        self.log.warning("%s (%s); retrying in %.1f s", what, reason, delay)
        self._backoff = min(RECONNECT_MAX_SECONDS, self._backoff * 2)

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        if not connected:
            self.metrics.connected.set(0)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._retry_later(
                f"the MQTT broker at {self.settings.host}:{self.settings.port} refused "
                f"{self.client_id}",
                reason,
            )
            return
        self._set_connected(True)
        self._ever_connected = True
        self._backoff = RECONNECT_MIN_SECONDS
        quota = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        self._quota = int(quota) if quota else 65535  # MQTT 5: absent means 65535
        if self._draining:
            self._unsubscribe_mid = client.unsubscribe(self.settings.features_filter)[1]
        else:
            options = SubscribeOptions(qos=1)
            topic = self.settings.features_filter
            self._subscribe_mid = client.subscribe(topic, options=options)[1]
        self.log.info(
            "MQTT: connected to %s:%d as %s (session %s)",
            self.settings.host,
            self.settings.port,
            self.client_id,
            "resumed" if getattr(flags, "session_present", False) else "new",
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        was_connected = self._connected
        self._set_connected(False)
        self._generation += 1
        if self._draining:  # stopping: wait a little for the broker, not the whole stop time
            self._drain_deadline = min(
                self._drain_deadline, time.monotonic() + STOP_RECONNECT_SECONDS
            )
        if getattr(reason, "value", None) == SESSION_TAKEN_OVER:
            self._backoff = RECONNECT_MAX_SECONDS
            self._retry_later(
                f"MQTT: another client connected as {self.client_id}: give every serving "
                f"container its own {contract.ENV_MQTT_CLIENT_ID}",
                reason,
            )
        elif was_connected and not self._stop.is_set():
            self._retry_later("MQTT: lost the connection to the broker", reason)
        elif not was_connected and self._next_attempt <= time.monotonic():
            self._retry_later("MQTT: the broker closed the connection", reason)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        refused = [reason for reason in reasons if reason.is_failure]
        if not refused:
            self.metrics.connected.set(1)  # connected, and taking features messages
            return
        self.log.error(
            "MQTT: the broker refused the subscription to %s (%s): no features messages "
            "will arrive; check the broker's ACL for user %s",
            self.settings.features_filter,
            refused[0],
            self.settings.username,
        )

    def _on_unsubscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        if mid == self._unsubscribe_mid:
            self._unsubscribed_at = time.monotonic()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        self._last_arrival = now
        self._inbox.append((message, now, self._generation))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self._acked.append((mid, str(reason) if reason.is_failure else None))

    # --- one turn of the loop -------------------------------------------------------------

    def _turn(self, client: mqtt.Client) -> None:
        sock = client.socket()
        writing = [sock] if client.want_write() else []
        readable, writable, _ = select.select([sock], writing, [], TURN_SECONDS)
        if readable:
            client.loop_read()
            # Everything that is already here, or arrives within GATHER_SECONDS of the first
            # message, joins the batch: one model call for many messages.
            inbox = self._inbox
            while len(inbox) < BATCH_MESSAGES and (sock := client.socket()) is not None:
                wait = inbox[0][1] + GATHER_SECONDS - time.monotonic() if inbox else 0.0
                if not select.select([sock], [], [], max(0.0, wait))[0]:
                    break
                client.loop_read()
        if writable and client.socket() is not None:
            client.loop_write()
        if client.socket() is not None:
            client.loop_misc()
        if not (self._inbox or self._acked or self._backlog):
            return
        # paho writes each packet as it is made: corked, the batch's answers and
        # acknowledgements leave in a few segments (the broker wakes up once, not per packet).
        with corked(client.socket()):
            if self._inbox:
                inbox, self._inbox = self._inbox, []
                for start in range(0, len(inbox), BATCH_MESSAGES):
                    self._answer(inbox[start : start + BATCH_MESSAGES])
            if self._acked:
                self._settle()
            if self._backlog and self._connected:
                self._send_backlog()

    def _answer(self, batch: list[tuple[mqtt.MQTTMessage, float, int]]) -> None:
        """Decode, deduplicate, predict (one model call) and publish the answers."""
        client = self._client
        answered = self._answered
        assert client is not None and answered is not None
        self.metrics.received.inc(len(batch))
        model = self.endpoints.model
        not_ready = None
        if not model.ready:
            not_ready = PayloadError(f"model not ready: {model.not_ready_reason}", status=503)
        limit, by_key = self._limit, self._by_key
        decoded = [
            (
                message,
                generation,
                decode(message.payload, message.properties, message.mid, limit, not_ready, arrived),
            )
            for message, arrived, generation in batch
        ]
        # Ids new to this worker are claimed in the container's table: one another worker
        # took already is a duplicate that reached this worker (a message published twice).
        taken: dict[bytes, str] = {}
        if self._claims is not None:
            unknown = [
                incoming.key
                for _, _, incoming in decoded
                if incoming.key is not None
                and incoming.key not in by_key
                and incoming.key not in answered
            ]
            taken = self._claims.claim(unknown) if unknown else {}
        fresh: list[tuple[Incoming, Pending]] = []
        duplicates = 0
        current = self._generation
        for message, generation, incoming in decoded:
            key = incoming.key
            if key is not None:
                pending = by_key.get(key)
                if pending is not None:  # its answer is on its way: acknowledged with it
                    pending.acks.append((generation, message.mid, message.qos))
                    duplicates += 1
                    continue
                if key in answered or key in taken:
                    if generation == current:  # else the broker sends it again
                        client.ack(message.mid, message.qos)
                    duplicates += 1
                    continue
            pending = Pending(
                key,
                incoming.arrived,
                "answered" if incoming.error is None else "error",
                [(generation, message.mid, message.qos)],
            )
            if key is not None:
                by_key[key] = pending
            self._open += 1
            fresh.append((incoming, pending))
        self.metrics.count("duplicate", duplicates)
        documents = [incoming.document for incoming, _ in fresh if incoming.error is None]
        results: list[Prediction | PayloadError] = []
        if documents:
            try:
                results = self.endpoints.predict_documents(documents)
            except Exception as exc:  # /predict would answer 500
                self.log.exception("MQTT: unexpected error predicting %d messages", len(documents))
                message = f"internal error ({type(exc).__name__}); see the server log"
                results = [PayloadError(message, status=500)] * len(documents)
        outcomes = iter(results)
        for incoming, pending in fresh:
            result = incoming.error if incoming.error is not None else next(outcomes)
            if type(result) is Prediction:
                self._publish_answer(incoming, pending, result)
            else:
                pending.outcome = "error"
                self._publish_error(incoming, pending, result)

    def _reply_properties(self, incoming: Incoming) -> Properties | None:
        if incoming.correlation is None:
            return None
        properties = Properties(PacketTypes.PUBLISH)
        properties.CorrelationData = incoming.correlation
        return properties

    def _publish_answer(self, incoming: Incoming, pending: Pending, result: Prediction) -> None:
        settings = self.settings
        self._publish(
            pending,
            incoming.reply_topic or settings.predictions_topic,
            answer_bytes(incoming.id_json, result.body),
            self._reply_properties(incoming),
            settings.predictions_topic if incoming.reply_topic else None,
        )
        positive = result.positive
        if positive.any():
            rows = np.flatnonzero(positive)
            texts = probability_texts(result.probabilities[rows])
            received_at = incoming.received_at
            for row, text in zip(rows.tolist(), texts, strict=True):
                payload = alert_bytes(
                    incoming.id_json, row, self._model_version_json, text, received_at
                )
                self._publish(pending, settings.alerts_topic, payload, None, None)

    def _publish_error(self, incoming: Incoming, pending: Pending, error: PayloadError) -> None:
        errors_topic = self.settings.errors_topic
        self._publish(
            pending,
            incoming.reply_topic or errors_topic,
            error_bytes(incoming.id_json, error),
            self._reply_properties(incoming),
            errors_topic if incoming.reply_topic else None,
        )

    def _publish(
        self,
        pending: Pending,
        topic: str,
        payload: bytes,
        properties: Properties | None,
        fallback: str | None,
    ) -> None:
        """QoS 1, within the broker's Receive Maximum (beyond it, in order, from the backlog
        as the broker accepts earlier ones); paho keeps it until the broker's PUBACK, and
        sends it again after a reconnect."""
        pending.outstanding += 1
        if self._backlog or len(self._sent) >= self._quota:
            self._backlog.append((pending, topic, payload, properties, fallback))
            return
        self._send(pending, topic, payload, properties, fallback)

    def _send(
        self,
        pending: Pending,
        topic: str,
        payload: bytes,
        properties: Properties | None,
        fallback: str | None,
    ) -> None:
        assert self._client is not None
        info = self._client.publish(topic, payload, qos=1, properties=properties)
        self._sent[info.mid] = _Sent(pending, fallback, payload, properties)

    def _send_backlog(self) -> None:
        backlog, sent, quota = self._backlog, self._sent, self._quota
        while backlog and len(sent) < quota:
            self._send(*backlog.popleft())

    def _settle(self) -> None:
        """The broker accepted some answers: the messages whose every publish is accepted are
        logged (one fsync) and acknowledged."""
        client, answered = self._client, self._answered
        assert client is not None and answered is not None
        acked, self._acked = self._acked, []
        done: list[Pending] = []
        for mid, refusal in acked:
            sent = self._sent.pop(mid, None)
            if sent is None:
                continue
            pending = sent.pending
            if refusal is not None:
                if sent.fallback is not None:
                    self.log.warning(
                        "MQTT: the broker refused an answer on a response topic (%s); "
                        "answering on %s",
                        refusal,
                        sent.fallback,
                    )
                    pending.outstanding -= 1  # counted again by _publish
                    self._publish(pending, sent.fallback, sent.payload, sent.properties, None)
                    continue
                self.log.error("MQTT: the broker refused a publish (%s): it is lost", refusal)
            pending.outstanding -= 1
            if pending.outstanding == 0:
                done.append(pending)
        if self._backlog:
            self._send_backlog()
        if not done:
            return
        try:
            answered.add([pending.key for pending in done if pending.key is not None])
        except OSError as exc:
            if not self._warned_log:
                self.log.error(
                    "MQTT: cannot write the answered-ids log %s (%s): a power cut may bring "
                    "second answers",
                    answered.path,
                    exc,
                )
                self._warned_log = True
        generation = self._generation
        now = time.monotonic()
        counts = {"answered": 0, "error": 0}
        observe = self.metrics.answer_seconds.observe
        for pending in done:
            if pending.key is not None:
                self._by_key.pop(pending.key, None)
            for ack_generation, mid, qos in pending.acks:
                if ack_generation == generation:  # else the broker sends it again
                    client.ack(mid, qos)
            counts[pending.outcome] += 1
            observe(now - pending.arrived)
        self._open -= len(done)
        for outcome, count in counts.items():
            self.metrics.count(outcome, count)

    # --- stopping -------------------------------------------------------------------------

    def _begin_drain(self) -> None:
        self._draining = True
        now = time.monotonic()
        self._drain_deadline = now + self._stop_seconds
        if self._connected and self._client is not None:
            self._unsubscribe_mid = self._client.unsubscribe(self.settings.features_filter)[1]
        elif self._ever_connected:  # clean the session up if the broker comes back soon
            self._drain_deadline = now + min(self._stop_seconds, STOP_RECONNECT_SECONDS)
            self._next_attempt = now
        else:
            self._drain_deadline = now

    def _drain_finished(self) -> bool:
        now = time.monotonic()
        if now >= self._drain_deadline:
            return True
        if not self._connected or self._unsubscribed_at is None:
            return False
        if self._inbox or self._open or self._acked or self._backlog:
            return False
        return now - max(self._unsubscribed_at, self._last_arrival) >= QUIET_SECONDS

    def _finish(self) -> None:
        """Disconnect: with SessionExpiryInterval 0 when everything taken was answered and
        acknowledged (the broker forgets the session), else keeping the session so that a
        worker with this client id gets the unacknowledged messages again."""
        client = self._client
        assert client is not None
        unfinished = self._open + len(self._inbox)
        if client.socket() is None or not self._connected:
            if unfinished or self._ever_connected:
                self.log.warning(
                    "MQTT: stopping while disconnected; %d messages stay with the broker's "
                    "session of %s",
                    unfinished,
                    self.client_id,
                )
            return
        if unfinished or self._unsubscribed_at is None:
            self.log.warning(
                "MQTT: stopping with %d messages unanswered; they stay with the broker's "
                "session of %s",
                unfinished,
                self.client_id,
            )
            client.disconnect()
        else:
            client.disconnect(properties=_session_properties(0))
        deadline = time.monotonic() + 1.0
        while client.socket() is not None and time.monotonic() < deadline:
            if client.want_write():
                select.select([], [client.socket()], [], 0.05)
                client.loop_write()
            else:
                client.loop_read()
                time.sleep(0.01)
        self.log.info("MQTT: %s disconnected", self.client_id)


def start_adapter(wsgi_app: Any, workers: int, logger: Any = None) -> MqttAdapter | None:
    """The worker's adapter, started, when the served app has MQTT settings; else None."""
    extensions = getattr(wsgi_app, "extensions", None)
    linkedge = extensions.get("linkedge") if isinstance(extensions, dict) else None
    if not isinstance(linkedge, dict):
        return None
    config = linkedge.get("config")
    settings = getattr(config, "mqtt", None)
    if settings is None:
        return None
    endpoints: PredictionEndpoints = linkedge["endpoints"]
    adapter = MqttAdapter(
        settings,
        endpoints,
        linkedge["metrics"],
        endpoints.model.bundle.version,
        workers,
        logger,
    )
    adapter.start()
    return adapter

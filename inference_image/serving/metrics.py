"""Prometheus metrics of one app, aggregated across gunicorn workers when multiprocess.

Each app owns a CollectorRegistry (tests create several apps in one process). When
PROMETHEUS_MULTIPROC_DIR is set before prometheus_client is imported, values live in
per-process files and /metrics renders them all through the multiprocess collector.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .capture import LOST_REASONS

if TYPE_CHECKING:
    from inference_image.capture_spool import CaptureSpool

    from .drift_window import DriftWindow

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Why a gunicorn worker closed a connection (linkedge_connections_closed_total{reason}).
CLOSE_REASONS = (
    "answered",  # after an answer that said "Connection: close" (asked for, HTTP/1.0, ...)
    "client",  # the client closed or reset it
    "idle",  # no request began within the keep-alive timeout
    "deadline",  # a request did not arrive within LINKEDGE_REQUEST_TIMEOUT (head or body)
    "write_timeout",  # the client did not take its answer within LINKEDGE_REQUEST_TIMEOUT
    "body_limit",  # a body over LINKEDGE_MAX_BODY_BYTES: answered 413, then closed
    "bad_request",  # malformed HTTP: answered by gunicorn (400, 414, 431, 501...), then closed
    "error",  # the server failed the request (500), then closed
    "shutdown",  # the worker was stopping
)
# "GRPC": an RPC of the gRPC endpoint (grpc_endpoints.py); its status is the gRPC code's name.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "GRPC"})
UNMATCHED_ENDPOINT = "<unmatched>"
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def enable_multiprocess_values() -> None:
    """Make metrics created from now on use per-process files.

    prometheus_client picks its value class from the environment when it is imported;
    call this after setting PROMETHEUS_MULTIPROC_DIR if it may have been imported before.
    """
    if multiprocess_dir() is None:
        raise RuntimeError(f"{MULTIPROC_ENV} is not set")
    values.ValueClass = values.get_value_class()


class ConnectionMetrics:
    """``linkedge_connections_closed_total{reason}`` of one gunicorn worker (see CLOSE_REASONS).

    Created by the worker after the fork: with PROMETHEUS_MULTIPROC_DIR its values live in
    the worker's own file, and /metrics sums them over the workers like every other metric.
    Every reason is exposed from the start, at 0.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.closed = Counter(
            "linkedge_connections_closed",
            "Connections a worker closed, by reason.",
            ("reason",),
            registry=self.registry,
        )
        self._children = {reason: self.closed.labels(reason) for reason in CLOSE_REASONS}

    def count_closed(self, reason: str) -> None:
        self._children[reason].inc()


# What became of a features message (linkedge_mqtt_messages_total{outcome}).
MQTT_OUTCOMES = (
    "answered",  # predictions published and accepted by the broker
    "error",  # an error answer published and accepted by the broker (a bad message)
    "duplicate",  # an id answered before (a redelivery): acknowledged, not answered again
)


class MqttMetrics:
    """The MQTT adapter's metrics, in the app's registry (see :meth:`ServingMetrics.mqtt`).

    Created by the adapter after the fork, so with PROMETHEUS_MULTIPROC_DIR they live in the
    worker's own files and /metrics sums them over the workers. ``linkedge_mqtt_connected``
    is the number of worker MQTT clients connected to the broker and subscribed to the
    features now (live workers only).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "linkedge_mqtt_messages",
            "Features messages taken from the broker, by outcome.",
            ("outcome",),
            registry=registry,
        )
        self.received = Counter(
            "linkedge_mqtt_received",
            "Features messages received (duplicates included).",
            registry=registry,
        )
        self.answer_seconds = Histogram(
            "linkedge_mqtt_answer_seconds",
            "From a features message's arrival to its answer's acknowledgement by the broker.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.connected = Gauge(
            "linkedge_mqtt_connected",
            "Worker MQTT clients connected to the broker and subscribed to the features.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.connected.set(0)
        self._outcomes = {outcome: self.messages.labels(outcome) for outcome in MQTT_OUTCOMES}

    def count(self, outcome: str, amount: int = 1) -> None:
        if amount:
            self._outcomes[outcome].inc(amount)


SHADOW_DIFFERENCE_BUCKETS = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
LABELS = ("pos", "neg")


class ShadowMetrics:
    """A shadow model's figures (inference_image.serving.shadow): rows by the model's and the
    shadow's label (their agreement), probability differences, the shadow's latency."""

    def __init__(self, registry: CollectorRegistry, version: str, ready: bool) -> None:
        gauge = Gauge(
            "linkedge_shadow_ready",
            "1 when the shadow model answers beside the model, 0 when it could not be loaded.",
            ("version",),
            registry=registry,
            multiprocess_mode="max",
        )
        gauge.labels(version).set(1 if ready else 0)
        rows = Counter(
            "linkedge_shadow_rows",
            "Rows answered by the model and its shadow, by the model's and the shadow's label.",
            ("model", "shadow"),
            registry=registry,
        )
        self._rows = {(m, s): rows.labels(m, s) for m in LABELS for s in LABELS}
        self._difference = Histogram(
            "linkedge_shadow_probability_difference",
            "|shadow probability - model probability| per row.",
            buckets=SHADOW_DIFFERENCE_BUCKETS,
            registry=registry,
        )
        self._duration = Histogram(
            "linkedge_shadow_duration_seconds",
            "Time the shadow model took per request (added to the request's latency).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(self, positive, shadow_positive, differences, seconds: float) -> None:
        both = int((positive & shadow_positive).sum())
        model_only = int((positive & ~shadow_positive).sum())
        shadow_only = int((~positive & shadow_positive).sum())
        neither = len(positive) - both - model_only - shadow_only
        for key, count in (
            (("pos", "pos"), both),
            (("pos", "neg"), model_only),
            (("neg", "pos"), shadow_only),
            (("neg", "neg"), neither),
        ):
            if count:
                self._rows[key].inc(count)
        for difference in differences.tolist():
            self._difference.observe(difference)
        self._duration.observe(seconds)


class DriftCollector:
    """The drift window compared with the bundle's reference, computed at each scrape:
    ``linkedge_drift_*`` (see inference_image.drift)."""

    def __init__(self, window: DriftWindow) -> None:
        self.window = window

    def describe(self) -> list:
        return []  # computed at collect time; nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        summary = self.window.summary()
        reference = self.window.reference
        yield GaugeMetricFamily(
            "linkedge_drift_window_rows",
            f"Rows the model was asked about in the drift window ({self.window.window_seconds} s).",
            value=summary.rows,
        )
        yield GaugeMetricFamily(
            "linkedge_drift_reference_positive_rate",
            "The model's predicted-positive rate on its training reference rows.",
            value=reference.positive_rate,
        )
        if summary.positive_rate is not None:
            yield GaugeMetricFamily(
                "linkedge_drift_positive_rate",
                "Predicted-positive rate in the drift window.",
                value=summary.positive_rate,
            )
            yield GaugeMetricFamily(
                "linkedge_drift_positive_rate_change",
                "Predicted-positive rate in the window minus the reference's.",
                value=summary.positive_rate_change,
            )
        psi = GaugeMetricFamily(
            "linkedge_drift_psi",
            "Population stability index of a feature's values in the window against the "
            "training reference (features with enough values only).",
            labels=("feature",),
        )
        for feature, value in summary.psi.items():
            psi.add_metric((feature,), value)
        yield psi
        if summary.psi_max is not None:
            yield GaugeMetricFamily(
                "linkedge_drift_psi_max",
                "The largest linkedge_drift_psi of any feature.",
                value=summary.psi_max,
            )
        missing = GaugeMetricFamily(
            "linkedge_drift_missing_rate_change",
            "A feature's missing rate in the window minus its training missing rate.",
            labels=("feature",),
        )
        for feature, value in summary.missing_rate_change.items():
            missing.add_metric((feature,), value)
        yield missing
        if summary.missing_rate_change:
            yield GaugeMetricFamily(
                "linkedge_drift_missing_rate_change_max",
                "The largest absolute linkedge_drift_missing_rate_change of any feature.",
                value=max(abs(v) for v in summary.missing_rate_change.values()),
            )


class CaptureCollector:
    """The capture spool's state, read from its directory at each scrape (shared by the
    workers, so no per-process values): ``linkedge_capture_spool_*``."""

    def __init__(self, spool: CaptureSpool) -> None:
        self.spool = spool

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = self.spool.state()
        yield GaugeMetricFamily(
            "linkedge_capture_spool_bytes",
            "Bytes in the capture spool (sealed and open segments).",
            value=state.sealed_bytes + state.open_bytes,
        )
        yield GaugeMetricFamily(
            "linkedge_capture_spool_budget_bytes",
            "The capture spool's byte budget.",
            value=self.spool.budget_bytes,
        )
        yield GaugeMetricFamily(
            "linkedge_capture_spool_segments",
            "Sealed segments waiting to be collected.",
            value=state.sealed_segments,
        )
        yield CounterMetricFamily(
            "linkedge_capture_dropped_segments",
            "Sealed segments deleted, oldest first, to stay within the budget.",
            value=state.dropped_segments,
        )
        yield CounterMetricFamily(
            "linkedge_capture_dropped_bytes",
            "Bytes of the segments deleted to stay within the budget.",
            value=state.dropped_bytes,
        )


CGROUP_ROOT = Path("/sys/fs/cgroup")


class ContainerCollector:
    """The serving container's own CPU time and memory, read from its cgroup at each scrape
    (cgroup v2: ``cpu.stat`` usage_usec and ``memory.current``; v1: ``cpuacct/cpuacct.usage``
    and ``memory/memory.usage_in_bytes``): every worker, the master and the gRPC and MQTT
    threads, as the kernel accounts them. Only in a container, where the cgroup is its own."""

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.root = root

    def describe(self) -> list:
        return []

    def cpu_seconds(self) -> float | None:
        stat = self.root / "cpu.stat"
        if stat.is_file():
            for line in stat.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "usage_usec":
                    return int(value) / 1e6
        usage = self.root / "cpuacct" / "cpuacct.usage"
        return int(usage.read_text()) / 1e9 if usage.is_file() else None

    def memory_bytes(self) -> int | None:
        for path in (self.root / "memory.current", self.root / "memory" / "memory.usage_in_bytes"):
            if path.is_file():
                return int(path.read_text())
        return None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            cpu, memory = self.cpu_seconds(), self.memory_bytes()
        except (OSError, ValueError):
            return
        if cpu is not None:
            yield CounterMetricFamily(
                "linkedge_container_cpu_seconds",
                "CPU time of the whole serving container (its cgroup).",
                value=cpu,
            )
        if memory is not None:
            yield GaugeMetricFamily(
                "linkedge_container_memory_bytes",
                "Memory the serving container's cgroup uses (page cache included).",
                value=memory,
            )


def in_container() -> bool:
    return Path("/.dockerenv").exists()


class ServingMetrics:
    """The four LinkEdge metrics; label children are cached so a request costs two dict hits."""

    def __init__(self, model_version: str, bundle_sha256: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir() is not None
        if self.multiprocess and values.ValueClass is values.MutexValue:
            raise RuntimeError(
                f"{MULTIPROC_ENV} was set after prometheus_client was imported, so metrics "
                "would not aggregate across workers: call enable_multiprocess_values() first"
            )
        self.requests = Counter(
            "linkedge_requests",
            "Requests by endpoint (Flask URL rule or gRPC method), method (HTTP or GRPC) and "
            "status (HTTP status or gRPC code).",
            ("endpoint", "method", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "linkedge_request_duration_seconds",
            "Time spent handling a request, by Flask URL rule or gRPC method.",
            ("endpoint",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "linkedge_predictions",
            "Predicted rows by label.",
            ("label",),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "linkedge_model_info",
            "The served model bundle (always 1).",
            ("version", "bundle_sha256"),
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.model_info.labels(model_version, bundle_sha256).set(1)
        self._positive = self.predictions.labels("pos")
        self._negative = self.predictions.labels("neg")
        self._request_children: dict[tuple[str, str, int | str], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._mqtt: MqttMetrics | None = None
        self._observer_errors = Counter(
            "linkedge_observer_errors",
            "Requests whose rows an observer (drift, capture, shadow) failed to take; the "
            "request was answered all the same.",
            ("observer",),
            registry=self.registry,
        )
        if self.multiprocess:
            self._exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._exposed)
        else:
            self._exposed = self.registry
        if in_container():
            self._exposed.register(ContainerCollector())

    def observe_request(
        self, endpoint: str, method: str, status: int | str, seconds: float
    ) -> None:
        if method not in KNOWN_METHODS:
            method = "OTHER"
        key = (endpoint, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(
                endpoint, method, str(status)
            )
        counter.inc()
        histogram = self._duration_children.get(endpoint)
        if histogram is None:
            histogram = self._duration_children[endpoint] = self.duration.labels(endpoint)
        histogram.observe(seconds)

    def count_predictions(self, positive: int, negative: int) -> None:
        if positive:
            self._positive.inc(positive)
        if negative:
            self._negative.inc(negative)

    def mqtt(self) -> MqttMetrics:
        """The MQTT adapter's metrics, created on first use (in the worker, after the fork)."""
        if self._mqtt is None:
            self._mqtt = MqttMetrics(self.registry)
        return self._mqtt

    def shadow(self, version: str, ready: bool) -> ShadowMetrics:
        """The shadow model's metrics, in this app's registry."""
        return ShadowMetrics(self.registry, version, ready)

    def count_observer_error(self, observer: str) -> None:
        self._observer_errors.labels(observer).inc()

    def watch_capture(self, spool: CaptureSpool) -> None:
        """Count captured rows, and expose the spool's state at every scrape."""
        self._captured = Counter(
            "linkedge_capture_records",
            "Rows captured into the spool (every pos answer, the others at the sampling rate).",
            registry=self.registry,
        )
        self._capture_lost = Counter(
            "linkedge_capture_lost_records",
            "Rows chosen for capture that never reached the spool: queue_full (the writer "
            "fell behind) or write_failed (the spool's disk refused them).",
            ["reason"],
            registry=self.registry,
        )
        for reason in LOST_REASONS:  # at 0 from the start: a first loss is an increase
            self._capture_lost.labels(reason)
        self._exposed.register(CaptureCollector(spool))

    def count_captured(self, records: int) -> None:
        if records:
            self._captured.inc(records)

    def count_capture_lost(self, records: int, reason: str) -> None:
        if records:
            self._capture_lost.labels(reason).inc(records)

    def watch_drift(self, window: DriftWindow) -> None:
        """Expose the drift window's comparison with the reference at every scrape."""
        self._exposed.register(DriftCollector(window))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its Content-Type."""
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST

"""Shared fixtures: a tiny but real XGBoost bundle with the APS feature layout."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# libgomp spin-waits by default: with nthread=2 on a busy 2-core machine, training the tiny
# model took 5 s instead of 0.1 s. Must be set before libxgboost (and libgomp) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

try:
    import inference_image  # noqa: F401
except ImportError:  # plain `pytest` without the project root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.broker import (  # noqa: F401 - re-exported for the MQTT tests
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    MQTT_REPLY_ROOT,
    MQTT_SENSOR_USER,
    MQTT_SERVER_USER,
    BrokerError,
    mosquitto_available,
    wait_on,
)
from bench.broker import MosquittoBroker as _BenchBroker
from inference_image.bundle import ModelBundle, load_bundle, write_bundle
from inference_image.drift import build_reference
from inference_image.predictor import NativePredictor
from inference_image.schema import APS_FEATURES

N_SMOKE = 20
TINY_VERSION = "tiny-test-1"
TINY_THRESHOLD = 0.35


def docker_engine():
    """A client of the host's Docker engine (long timeout: image loads), or skip the test."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine: {exc} (run `make docker`)")
    return client


def synthetic_aps(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with APS-like scales, ~10% missing values, and a learnable positive class."""
    width = len(APS_FEATURES)
    scales = 10.0 ** np.random.default_rng(0).integers(0, 6, size=width)  # same for every seed
    rng = np.random.default_rng(seed)
    features = rng.gamma(2.0, 1.0, size=(n_rows, width)) * scales
    signal = features[:, 0] / scales[0] + 0.5 * features[:, 7] / scales[7]
    labels = (signal + rng.normal(0, 0.8, n_rows) > 4.5).astype(np.float32)
    features[rng.random((n_rows, width)) < 0.1] = np.nan
    return features.astype(np.float32), labels


def build_bundle(
    out_dir: Path,
    model_json: bytes,
    smoke_rows: np.ndarray,
    probabilities: np.ndarray,
    threshold: float = TINY_THRESHOLD,
    version: str = TINY_VERSION,
    reference: dict | None = None,
) -> Path:
    smoke_vectors = [
        {
            "inputs": [None if np.isnan(value) else float(value) for value in row],
            "probability": float(probability),
            "label": "pos" if float(probability) >= threshold else "neg",
        }
        for row, probability in zip(smoke_rows, probabilities, strict=True)
    ]
    card = {
        "version": version,
        "threshold": threshold,
        "created_by": "tests/conftest.py",
        "params": {"n_estimators": 30, "max_depth": 3, "seed": 7, "nthread": 2},
        "data": {"kind": "synthetic", "rows": 600},
        "metrics": {},
    }
    return write_bundle(out_dir, model_json, list(APS_FEATURES), card, smoke_vectors, reference)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A 30-tree model trained with the xgboost package, plus smoke rows and predictions."""
    import xgboost as xgb

    features, labels = synthetic_aps(600, seed=7)
    matrix = xgb.DMatrix(features, label=labels, missing=np.nan, feature_names=list(APS_FEATURES))
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": 3,
        "eta": 0.3,
        "seed": 7,
        "nthread": 2,
    }
    booster = xgb.train(params, matrix, num_boost_round=30)
    model_json = bytes(booster.save_raw(raw_format="json"))

    pool, pool_labels = synthetic_aps(400, seed=11)  # unseen rows, both classes
    positives = np.flatnonzero(pool_labels == 1)[: N_SMOKE // 2]
    negatives = np.flatnonzero(pool_labels == 0)[: N_SMOKE - positives.size]
    smoke_rows = pool[np.concatenate([negatives, positives])]
    smoke_rows[0, :] = np.nan  # an all-missing row
    smoke_rows[1, ::2] = np.nan
    model_path = tmp_path_factory.mktemp("model") / "model.json"
    model_path.write_bytes(model_json)
    predictor = NativePredictor(model_path, nthread=1)
    probabilities = predictor.predict_proba(smoke_rows)
    # The drift reference of its training rows, as train_bundle builds one.
    reference = build_reference(
        features, APS_FEATURES, predictor.predict_proba(features) >= TINY_THRESHOLD, labels
    ).as_dict()
    predictor.close()
    assert {"pos", "neg"} <= {
        "pos" if p >= TINY_THRESHOLD else "neg" for p in probabilities.tolist()
    }, "the smoke vectors should cover both labels"
    return {
        "model_json": model_json,
        "smoke_rows": smoke_rows,
        "probabilities": probabilities,
        "reference": reference,
    }


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: dict) -> ModelBundle:
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    build_bundle(
        out,
        tiny_model["model_json"],
        tiny_model["smoke_rows"],
        tiny_model["probabilities"],
        reference=tiny_model["reference"],
    )
    return load_bundle(out)


@pytest.fixture(scope="session")
def broken_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: dict) -> ModelBundle:
    """Same model, but smoke vector 3 expects a probability the model does not give."""
    probabilities = np.array(tiny_model["probabilities"], dtype=np.float32)
    shift = -0.01 if probabilities[3] > 0.5 else 0.01
    probabilities[3] = np.float32(probabilities[3] + shift)
    out = tmp_path_factory.mktemp("bundles") / "broken"
    build_bundle(out, tiny_model["model_json"], tiny_model["smoke_rows"], probabilities)
    return load_bundle(out)


MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


@pytest.fixture(scope="session")
def migrate_queued_connections():
    """net.ipv4.tcp_migrate_req=1 for the test session, as the inference_service role sets it on
    trucks: connections queued on a stopping SO_REUSEPORT listener move to the other one.
    Restored afterwards. Fails (does not skip) where it cannot be set: the handover tests need it.
    """
    try:
        before = MIGRATE_REQ.read_text().strip()
        if before != "1":
            MIGRATE_REQ.write_text("1")
    except OSError as exc:
        pytest.fail(
            f"cannot set net.ipv4.tcp_migrate_req=1 ({exc}): run the tests as root on Linux >= 5.14"
        )
    yield
    if before != "1":
        MIGRATE_REQ.write_text(before)


# --- MQTT: a real Mosquitto broker per test -------------------------------------------------


class MosquittoBroker(_BenchBroker):
    """bench/broker.py's broker (one implementation for the tests and the bench), failing
    the test (pytest.fail) where it would raise BrokerError."""

    def __init__(self, directory: Path, persistence: bool | str = False, **options) -> None:
        try:
            super().__init__(directory, persistence=persistence, **options)
        except BrokerError as exc:
            pytest.fail(str(exc))

    def start(self, timeout: float = 10.0) -> None:
        try:
            super().start(timeout)
        except BrokerError as exc:
            pytest.fail(str(exc))


def _need_mosquitto() -> None:
    if not mosquitto_available():
        pytest.skip("no Mosquitto broker (apt-get install mosquitto mosquitto-clients)")


@pytest.fixture
def mqtt_broker(tmp_path: Path):
    """A fresh broker for one test (no persistence)."""
    _need_mosquitto()
    broker = MosquittoBroker(tmp_path / "mosquitto")
    yield broker
    broker.stop()


@pytest.fixture
def persistent_mqtt_broker(tmp_path: Path):
    """A fresh broker for one test whose sessions and queued messages survive restart()."""
    _need_mosquitto()
    broker = MosquittoBroker(tmp_path / "mosquitto", persistence=True)
    yield broker
    broker.stop()


class MqttProbe:
    """A test's MQTT 5 client (the sensor's user): publishes, and records every message it
    receives on its subscriptions as (topic, payload, properties)."""

    def __init__(self, broker: MosquittoBroker, user: str = MQTT_SENSOR_USER) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, object]] = []
        self._changed = threading.Condition()
        self._suback: list[object] = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-probe-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(user, broker.passwords[user])
        self.client.max_inflight_messages_set(0)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self._changed:
            self.messages.append((message.topic, message.payload, message.properties))
            self._changed.notify_all()

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        with self._changed:
            self._suback.append(reasons)
            self._changed.notify_all()

    def subscribe(self, *topics: str) -> None:
        expected = len(self._suback) + 1
        self.client.subscribe([(topic, 1) for topic in topics])
        assert self.wait_for(lambda: len(self._suback) >= expected), "no SUBACK"
        assert not any(reason.is_failure for reason in self._suback[-1]), self._suback[-1]

    def publish(self, topic: str, payload: bytes, properties: object = None) -> None:
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        info.wait_for_publish(10)
        assert info.is_published(), "the broker did not acknowledge a publish"

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        return wait_on(self._changed, predicate, timeout)

    def on(self, topic: str) -> list[bytes]:
        with self._changed:
            return [payload for got, payload, _ in self.messages if got == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_probe(mqtt_broker: MosquittoBroker):
    """Make probes on ``mqtt_broker`` (each disconnected after the test)."""
    probes: list[MqttProbe] = []

    def make(broker: MosquittoBroker = mqtt_broker) -> MqttProbe:
        probe = MqttProbe(broker)
        probes.append(probe)
        return probe

    yield make
    for probe in probes:
        probe.close()


def mqtt_server_env(
    broker: MosquittoBroker, truck: str, client_id: str, **extra: str
) -> dict[str, str]:
    """LINKEDGE_MQTT_* of a server answering on ``broker`` for ``truck``."""
    return {
        "LINKEDGE_MQTT_HOST": "127.0.0.1",
        "LINKEDGE_MQTT_PORT": str(broker.port),
        "LINKEDGE_MQTT_TRUCK": truck,
        "LINKEDGE_MQTT_USERNAME": MQTT_SERVER_USER,
        "LINKEDGE_MQTT_PASSWORD_FILE": str(broker.password_files[MQTT_SERVER_USER]),
        "LINKEDGE_MQTT_CLIENT_ID": client_id,
        **extra,
    }


@pytest.fixture
def mqtt_server(tmp_path: Path):
    """Start real gunicorn servers (``inference_image.serving.server``, via its environment)
    with the MQTT adapter: ``mqtt_server(bundle_path, broker, truck, workers=2, **env)``
    returns the running server once all its workers are subscribed. Stopped (SIGTERM) after
    the test; their slot locks and shared ids tables in /tmp are removed."""
    from tests.integration.test_gunicorn_server import Server

    started: list[tuple[Server, str]] = []

    def start(
        bundle_path: Path,
        broker: MosquittoBroker,
        truck: str = "truck-1",
        workers: int = 2,
        client_id: str | None = None,
        wait: bool = True,
        **env: str,
    ) -> Server:
        client_id = client_id or f"test-{secrets.token_hex(4)}"
        directory = tmp_path / f"server-{len(started)}"
        directory.mkdir()
        server = Server(
            bundle_path,
            directory,
            nthread=1,
            via_env=True,
            extra_env={
                **mqtt_server_env(broker, truck, client_id, **env),
                "LINKEDGE_WORKERS": str(workers),
            },
        )
        server.client_id = client_id  # type: ignore[attr-defined]
        server.workers = workers  # type: ignore[attr-defined]
        started.append((server, client_id))
        if wait:
            server.wait_ready()
            wait_mqtt_subscribed(server, workers)
        return server

    yield start
    for server, client_id in started:
        server.stop()
        for leftover in Path("/tmp").glob(f"linkedge-mqtt-*-{client_id}*"):
            leftover.unlink(missing_ok=True)


def mqtt_metric(base: str, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{base}/metrics", timeout=5).text
    wanted = labels or {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return sample.value
    return 0.0


def wait_mqtt_subscribed(server, workers: int, timeout: float = 30.0) -> None:
    """Until every worker's MQTT client is connected and subscribed (linkedge_mqtt_connected)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if mqtt_metric(server.base, "linkedge_mqtt_connected") >= workers:
                return
        except OSError:  # requests' ConnectionError: not listening yet
            pass
        time.sleep(0.1)
    pytest.fail(f"the MQTT adapters did not subscribe within {timeout} s:\n{server.log()}")


# --- a container registry -------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path):
    """A real Docker Distribution registry (Debian's docker-registry) on a free port of the
    loopback, which the engine trusts without TLS; its address, host:port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry not installed (make test installs it)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen([binary, "serve", str(config)], stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield address
    process.terminate()
    process.wait(timeout=10)

"""MQTT: the truck's bridge to the depot (Mosquitto over TLS), measured through the same kind
of counting proxy: its connection, its keep-alives, one status publish."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..procs import stop_process
from .pki import make_pki
from .proxy import CountingProxy, Flow, negotiated_tls, tcp_segments
from .servers import free_port, wait_listening
from .settings import (
    CHANNEL,
    FIGURES_MD,
    IPV4_TCP_HEADER,
    MOSQUITTO,
    PULL_FIGURES,
    TRUCK_ID,
    Settings,
    SetupError,
    log,
)


def status_figure() -> int:
    """The retained status per sync (payload, topic, MQTT header): build/figures/pull-sync.json
    when a test run wrote it, else docs/figures.md's recorded figure."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        return int(json.loads(PULL_FIGURES.read_text())["figures"]["unchanged_sync_status_bytes"])
    with contextlib.suppress(OSError):
        found = re.search(r"`unchanged_sync_status_bytes` \| ([0-9,]+)", FIGURES_MD.read_text())
        if found:
            return int(found.group(1).replace(",", ""))
    return 686


def status_payload(size: int) -> bytes:
    """An outcome record of SIZE bytes (docs/operating-a-fleet.md's example, padded)."""
    record = {
        "truck": TRUCK_ID, "operation": "sync", "outcome": "unchanged", "reason": "",
        "previous_version": "aps-xgb-b3c730740e45", "new_version": None,
        "serving_version": "aps-xgb-b3c730740e45", "channel": CHANNEL, "sequence": 7,
        "bytes_transferred": 0, "changed": False, "duration_seconds": 5.25,
        "finished_at": 1796160901.2, "serving_since": 1796153720.6,
    }  # fmt: skip
    text = json.dumps(record)
    return (text[:-1] + ', "pad": "' + "x" * max(0, size - len(text) - 11) + '"}').encode()


class Mosquitto:
    def __init__(self, directory: Path, lines: list[str]):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.port = directory, free_port()
        config = [
            f"listener {self.port} 127.0.0.1",
            *lines,
            "user root" if os.geteuid() == 0 else "",
        ]
        config += [f"log_dest file {directory / 'mosquitto.log'}", "log_type error"]
        (directory / "mosquitto.conf").write_text("\n".join(config) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.directory / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port, self.process, "mosquitto", 10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
            self.process = None


def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _depot_broker(directory: Path, certificate: Path, key: Path, version: str) -> Mosquitto:
    lines = [f"certfile {certificate}", f"keyfile {key}", f"tls_version {version}"]
    return Mosquitto(directory, [*lines, "allow_anonymous true"])


def _truck_broker(
    directory: Path, depot_port: int, ca: Path, version: str, keepalive: int
) -> Mosquitto:
    """A truck's broker with the role's bridge (roles/mqtt_broker/templates/bridge.conf.j2)."""
    return Mosquitto(directory, [
        "allow_anonymous true",
        "connection linkedge-depot", f"address 127.0.0.1:{depot_port}",
        "bridge_protocol_version mqttv311", f"bridge_cafile {ca}", "bridge_insecure false",
        f"bridge_tls_version {version}", f"remote_clientid linkedge-bridge-{TRUCK_ID}",
        f"local_clientid linkedge-bridge-{TRUCK_ID}.local", "cleansession false",
        "local_cleansession false", "start_type automatic",
        f"keepalive_interval {keepalive}", "try_private true",
        "bridge_attempt_unsubscribe false", "notifications false",
        "topic linkedge/+/status out 1", "topic linkedge/+/aps/alerts out 1",
    ])  # fmt: skip


def measure_bridge(settings: Settings, work: Path, tls_version: str = "1.2") -> dict[str, Any]:
    """A depot broker (TLS, ECDSA certificate) and a truck broker whose bridge (the role's
    bridge.conf.j2 settings, mqtt_broker_tls_version tlsv1.2: Mosquitto 2 takes it as the
    lowest version) goes through a counting proxy: bytes and segments of the connection, of
    each keep-alive (PINGREQ + PINGRESP) and of one status publish (QoS 1, retained)."""
    log(f"the MQTT bridge: {settings.mqtt_pings} keep-alives of {settings.mqtt_keepalive} s")
    pki = work / "mqtt-pki"
    pki.mkdir(parents=True)
    ca, certificate, key, _ = make_pki(pki, "ecdsa")
    version = f"tlsv{tls_version}"
    with contextlib.ExitStack() as stack:
        depot = _depot_broker(work / "mqtt-depot", certificate, key, version)
        depot.start()
        stack.callback(depot.stop)
        proxy = CountingProxy(depot.port)
        stack.callback(proxy.close)
        truck = _truck_broker(work / "mqtt-truck", proxy.port, ca, version, settings.mqtt_keepalive)
        truck.start()
        stack.callback(truck.stop)
        observed = observe_bridge(settings, proxy, truck.port)
    return {"tls_version_setting": version, **observed}


def observe_bridge(settings: Settings, proxy: CountingProxy, truck_port: int) -> dict[str, Any]:
    """The bridge's connection, then MQTT_PINGS keep-alives, then one status publish."""
    if not _wait_for(lambda: bool(proxy.flows) and _chunks(proxy) >= 4, 15):
        raise SetupError("the truck's bridge did not connect to the depot broker")
    time.sleep(1.0)
    flow = proxy.flows[0]
    negotiated = negotiated_tls(flow)
    connect = _window(proxy, flow, 0)
    time.sleep(settings.mqtt_keepalive * settings.mqtt_pings + 0.5)
    pings = _window(proxy, flow, connect.segments_at)
    payload = status_payload(status_figure() - len(f"linkedge/{TRUCK_ID}/status") - 8)
    publish_status(truck_port, payload)
    publish = _window(proxy, flow, pings.segments_at)
    return {
        "negotiated_tls": negotiated,
        "keepalive_probe_seconds": settings.mqtt_keepalive,
        "connect": connect.figures(),
        "pings_seen": len(pings.ups),
        "pingreq_above_tcp": pings.ups[:3],
        "pingresp_above_tcp": pings.downs[:3],
        "ping_exchange": pings.figures(max(1, len(pings.ups))),
        "status_payload_bytes": len(payload),
        "status_publish": publish.figures(),
    }


def publish_status(port: int, payload: bytes) -> None:
    """The sync's retained status on the truck's broker (QoS 1), as outcome.yml publishes it."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="depot-load-status")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(f"linkedge/{TRUCK_ID}/status", payload, qos=1, retain=True).wait_for_publish(
            5
        )
        time.sleep(0.8)  # the bridge forwards it and gets its PUBACK
    finally:
        client.loop_stop()
        client.disconnect()


@dataclass(frozen=True)
class Window:
    """What crossed the bridge's connection during a while."""

    ups: list[int]
    downs: list[int]
    segments: int
    segments_at: int  # the connection's segment count at the window's end

    def figures(self, per: int = 1) -> dict[str, Any]:
        above = (sum(self.ups) + sum(self.downs)) / per
        packets = self.segments / per
        return {
            "above_tcp": round(above, 1),
            "packets": round(packets, 1),
            "bytes_on_wire_ipv4": round(above + packets * IPV4_TCP_HEADER, 1),
        }


def _window(proxy: CountingProxy, flow: Flow, segments_before: int) -> Window:
    chunks = _take_chunks(proxy)
    segments = tcp_segments(flow.client) if flow.client else 0
    return Window(
        [size for way, size, _ in chunks if way == "up"],
        [size for way, size, _ in chunks if way == "down"],
        segments - segments_before,
        segments,
    )


def _chunks(proxy: CountingProxy) -> int:
    with proxy.lock:
        return sum(len(flow.chunks) for flow in proxy.flows)


def _take_chunks(proxy: CountingProxy) -> list[tuple[str, int, float]]:
    with proxy.lock:
        taken = [chunk for flow in proxy.flows for chunk in flow.chunks]
        for flow in proxy.flows:
            flow.chunks.clear()
    return taken

"""The MQTT bus of a simulated truck and its depot, proven with real messages.

Run by `molecule verify -s mqtt` (or `molecule test -s mqtt`) after converge and idempotence.
The tests run in file order on this machine and reach the brokers with the Mosquitto clients
the role installs, through `docker exec` (both brokers listen on their own loopback; the depot
also on its TLS listener, which the truck reaches by name):

- where each broker listens, and the files that hold secrets (owner, group, mode);
- anonymous clients, wrong passwords, an unverifiable certificate (the depot by IP address,
  not the name its certificate holds) are refused;
- the ACLs: a sensor cannot publish predictions (MQTT 5 PUBACK reason code 135) nor read
  anything, not even another truck's topics, while the observer and the inference client's
  shared subscription ($share/<group>/...) receive what they may;
- persistence: QoS 1 messages queued for an offline persistent session survive
  `systemctl restart mosquitto` and a power cut (`docker kill`, then `docker start`);
- store-and-forward: with the truck cut off the network, alerts and a retained status are
  queued on the truck; once the link is back every alert reaches the depot exactly once and in
  order, and the status is retained there;
- a password change reloads the broker (same process, the bridge stays up) instead of
  restarting it; the role in check mode on the converged hosts reports no change.

Figures (broker RSS idle and with the queue, how long the bridge takes to deliver once the
link is back, boot and restart times) go to <ephemeral>/mqtt-figures.json and
build/figures/mqtt.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
from truck_api import save_figures, truck_ip  # shared with the other scenarios' tests

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
SCENARIO = Path(__file__).resolve().parents[1]
TRUCK, DEPOT, NETWORK = "mqtt-truck", "mqtt-depot", "linkedge-mqtt"
SECRETS = json.loads((PROJECT / "build" / "mqtt-pki" / "secrets.json").read_text())
T = f"linkedge/{TRUCK}"
CA = "/etc/mosquitto/ca_certificates/linkedge-ca.crt"
NOT_AUTHORIZED = 135  # MQTT 5 reason code; mosquitto_pub/_sub exit with it too
QUEUED = 500  # alerts queued on the truck while it is cut off
PAYLOAD_BYTES = 3200  # about one APS features record
FIGURES: dict = {}


def on(host: str, *argv: str, check: bool = True, timeout: float = 60, stdin: str | None = None):
    done = subprocess.run(
        ["docker", "exec", "-i", host, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} on {host}: rc={done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def credentials(user: str | None, password: str | None = None) -> list[str]:
    if user is None:
        return []
    return ["-u", user, "-P", SECRETS[user] if password is None else password]


def pub(
    host: str,
    user: str | None,
    topic: str,
    message: str,
    *extra: str,
    password: str | None = None,
    qos: int = 1,
):
    """mosquitto_pub on `host`'s loopback listener, MQTT 5, QoS 1, with the PUBACK printed."""
    argv = ["mosquitto_pub", "-h", "127.0.0.1", "-V", "mqttv5", "-d", "-q", str(qos)]
    argv += [*credentials(user, password), "-t", topic, "-m", message, *extra]
    return on(host, *argv, check=False)


def puback(done) -> int | None:
    """The reason code of the PUBACK mosquitto_pub -d printed; None if there was none."""
    found = re.search(r"received PUBACK \(Mid: \d+, RC:(\d+)\)", done.stdout + done.stderr)
    return int(found.group(1)) if found else None


def sub_argv(user: str, topics: list[str], *extra: str) -> list[str]:
    argv = ["mosquitto_sub", "-h", "127.0.0.1", "-V", "mqttv5", "-q", "1", "-v"]
    argv += credentials(user)
    for topic in topics:
        argv += ["-t", topic]
    return [*argv, *extra]


class Listener:
    """A mosquitto_sub running in a container; every line it prints, with the time it came."""

    def __init__(self, host: str, argv: list[str]):
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(
            ["docker", "exec", host, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout: float) -> list[str]:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(5)
        return [line for _, line in self.lines]


def broker_pid(host: str) -> int:
    out = on(host, "systemctl", "show", "--property", "MainPID", "--value", "mosquitto").stdout
    return int(out.strip())


def broker_sockets(host: str) -> list[str]:
    """The addresses the broker listens on (ss -ltnp)."""
    lines = on(host, "ss", "-Hltnp").stdout.splitlines()
    return sorted({line.split()[3] for line in lines if '"mosquitto"' in line})


def broker_rss_kib(host: str) -> int:
    return int(on(host, "ps", "-o", "rss=", "-p", str(broker_pid(host))).stdout.strip())


def wait_for_broker(host: str, timeout: float = 90) -> float:
    """Seconds until the broker on `host` accepts a client (the observer on the truck, the
    depot observer on the depot)."""
    user = "observer" if host == TRUCK else "depot-observer"
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        argv = ["mosquitto_sub", "-h", "127.0.0.1", *credentials(user), "-t", "linkedge/x", "-E"]
        probe = subprocess.run(
            ["docker", "exec", host, *argv],
            capture_output=True,
        )
        if probe.returncode == 0:
            return time.monotonic() - started
        time.sleep(0.3)
    raise AssertionError(f"the broker on {host} did not accept a client for {timeout:.0f} s")


def playbook(*args: str) -> tuple[int, str]:
    """converge.yml with the scenario's inventory (the role as molecule ran it)."""
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(PROJECT / "collections"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
    )
    command = ["ansible-playbook", str(SCENARIO / "converge.yml")]
    command += ["-i", str(EPHEMERAL / "inventory"), *args]
    done = subprocess.run(
        command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600
    )
    return done.returncode, done.stdout + done.stderr


def recap(output: str) -> dict[str, dict[str, int]]:
    hosts = {}
    for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.MULTILINE):
        hosts[host] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counters)}
    return hosts


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield FIGURES
    save_figures("mqtt", FIGURES, PROJECT, EPHEMERAL)


def test_brokers_listen_only_where_configured_and_secrets_are_not_world_readable():
    for host in (TRUCK, DEPOT):
        assert on(host, "systemctl", "is-enabled", "mosquitto").stdout.strip() == "enabled"
        assert on(host, "systemctl", "is-active", "mosquitto").stdout.strip() == "active"
    # The truck's broker: its loopback and its internal network (the scenario network).
    address = truck_ip(TRUCK, NETWORK)
    assert broker_sockets(TRUCK) == sorted(["127.0.0.1:1883", f"{address}:1883"])
    depot_ip = on(DEPOT, "hostname", "-I").stdout.split()[0]
    assert broker_sockets(DEPOT) == sorted(["127.0.0.1:1883", f"{depot_ip}:8883"])

    def mode(host: str, path: str) -> str:
        return on(host, "stat", "-c", "%a %U %G", path).stdout.strip()

    for host in (TRUCK, DEPOT):
        assert mode(host, "/etc/mosquitto/passwd") == "640 root mosquitto"
        assert mode(host, "/etc/mosquitto/acl") == "640 root mosquitto"
        assert mode(host, "/var/lib/mosquitto") == "750 mosquitto root"
        config = on(host, "cat", "/etc/mosquitto/mosquitto.conf").stdout
        assert "include_dir /etc/mosquitto/conf.d" not in config
        assert "allow_anonymous false" in config
        assert "autosave_on_changes true" in config and "autosave_interval 1\n" in config
        for line in on(host, "cat", "/etc/mosquitto/passwd").stdout.splitlines():
            assert re.fullmatch(r"[^:]+:\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==", line)
    assert mode(TRUCK, "/etc/mosquitto/bridges.d/linkedge-depot.conf") == "640 root mosquitto"
    assert mode(DEPOT, "/etc/mosquitto/certs/linkedge-broker.key") == "640 root mosquitto"
    bridge = on(TRUCK, "cat", "/etc/mosquitto/bridges.d/linkedge-depot.conf").stdout
    assert "bridge_insecure false" in bridge and "address mqtt-depot:8883" in bridge


def test_anonymous_and_wrong_passwords_are_refused():
    topic = f"{T}/aps/features"
    assert pub(TRUCK, None, topic, "anonymous").returncode == NOT_AUTHORIZED
    wrong = pub(TRUCK, "aps-sensor", topic, "x", password="not-the-password-000")
    assert wrong.returncode == NOT_AUTHORIZED
    assert pub(DEPOT, None, "linkedge/x", "anonymous").returncode == NOT_AUTHORIZED
    assert pub(TRUCK, "aps-sensor", topic, "right password").returncode == 0

    def over_tls(host: str, *extra: str):
        argv = ["mosquitto_pub", "-h", host, "-p", "8883", "-V", "mqttv5", "-t", f"{T}/status"]
        return on(TRUCK, *argv, "-m", "x", *extra, check=False)

    # From the truck to the depot's TLS listener, verified with the CA the role installed.
    assert over_tls("mqtt-depot", "--cafile", CA).returncode == NOT_AUTHORIZED
    refused = over_tls("mqtt-depot", "--cafile", CA, "-u", TRUCK, "-P", "not-the-password-000")
    assert refused.returncode == NOT_AUTHORIZED
    # The depot by its IP address: the certificate names mqtt-depot only, the handshake fails.
    depot_ip = on(DEPOT, "hostname", "-I").stdout.split()[0]
    by_ip = over_tls(depot_ip, "--cafile", CA, "-u", TRUCK, "-P", SECRETS["bridge"])
    assert by_ip.returncode != 0 and "TLS error" in by_ip.stderr, by_ip
    # Without the scenario's CA (the system's trust store) the certificate is not trusted.
    untrusted = over_tls("mqtt-depot", "--capath", "/etc/ssl/certs", "-u", TRUCK, "-P", "x")
    assert untrusted.returncode != 0 and "TLS error" in untrusted.stderr, untrusted


def test_acls_sensor_publishes_features_only_and_reads_nothing():
    tag = uuid.uuid4().hex[:8]
    window = ["-W", "6"]
    everything = ["linkedge/#", f"{T}/aps/predictions"]
    sensor = Listener(TRUCK, sub_argv("aps-sensor", everything, *window))
    observer = Listener(TRUCK, sub_argv("observer", [f"{T}/#", "linkedge/#"], *window))
    # A group of its own: the serving container is in linkedge-aps and would take the message.
    shared = f"$share/acl-check/{T}/aps/features"
    inference = Listener(TRUCK, sub_argv("linkedge-inference", [shared], *window))
    time.sleep(1.5)  # all three subscribed

    forged = pub(TRUCK, "aps-sensor", f"{T}/aps/predictions", f"forged-{tag}")
    assert puback(forged) == NOT_AUTHORIZED, forged.stdout + forged.stderr
    assert puback(pub(TRUCK, "aps-sensor", f"{T}/aps/features", f"features-{tag}")) == 0
    assert puback(pub(TRUCK, "linkedge-inference", f"{T}/aps/predictions", f"pred-{tag}")) == 0
    other = pub(TRUCK, "other-sensor", "linkedge/other-truck/aps/features", f"other-{tag}")
    assert puback(other) == 0  # accepted: the sensor's linkedge/# matches, the ACL decides

    got_sensor, got_observer = sensor.wait(15), observer.wait(15)
    got_inference = inference.wait(15)
    assert got_sensor == [], f"the sensor read {got_sensor}"
    assert f"{T}/aps/features features-{tag}" in got_observer, got_observer
    assert f"{T}/aps/predictions pred-{tag}" in got_observer, got_observer
    assert not [line for line in got_observer if f"forged-{tag}" in line or "other-truck" in line]
    assert got_inference == [f"{T}/aps/features features-{tag}"], got_inference
    FIGURES["acl"] = {
        "sensor_publishes_predictions_puback": NOT_AUTHORIZED,
        "sensor_received": len(got_sensor),
        "shared_subscription_received": len(got_inference),
    }


def test_queued_messages_survive_a_restart_and_a_power_cut():
    session = ["-c", "-i", f"persist-check-{uuid.uuid4().hex[:6]}"]
    topic = f"{T}/aps/predictions"
    on(TRUCK, *sub_argv("observer", [topic], *session, "-E"))  # the session, then offline
    first, second = f"before-restart-{uuid.uuid4().hex[:6]}", f"before-cut-{uuid.uuid4().hex[:6]}"
    assert puback(pub(TRUCK, "linkedge-inference", topic, first)) == 0

    started = time.monotonic()
    on(TRUCK, "systemctl", "restart", "mosquitto")
    restart_seconds = time.monotonic() - started + wait_for_broker(TRUCK)
    assert puback(pub(TRUCK, "linkedge-inference", topic, second)) == 0

    # The power cut: every process of the truck dies at once, nothing is shut down cleanly.
    subprocess.run(["docker", "kill", TRUCK], check=True, capture_output=True)
    subprocess.run(["docker", "start", TRUCK], check=True, capture_output=True)
    started = time.monotonic()
    boot_seconds = wait_for_broker(TRUCK)

    resumed = on(TRUCK, *sub_argv("observer", [topic], *session, "-C", "2", "-W", "20"))
    assert resumed.stdout.splitlines() == [f"{topic} {first}", f"{topic} {second}"], resumed
    FIGURES["persistence"] = {
        "restart_to_accepting_seconds": round(restart_seconds, 1),
        "power_cut_start_to_accepting_seconds": round(boot_seconds, 1),
        "messages_kept": 2,
    }
    wait_for_bridge()


def wait_for_bridge(timeout: float = 60) -> float:
    """Seconds until an alert published on the truck is seen on the depot."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        tag = f"bridge-probe-{uuid.uuid4().hex[:6]}"
        topic = f"{T}/aps/alerts"
        listener = Listener(DEPOT, sub_argv("depot-observer", [topic], "-C", "1", "-W", "4"))
        time.sleep(0.5)
        pub(TRUCK, "linkedge-inference", topic, tag)
        if any(tag in line for line in listener.wait(10)):
            return time.monotonic() - started
    raise AssertionError(f"no alert reached the depot for {timeout:.0f} s")


def test_store_and_forward_while_the_truck_is_cut_off():
    alerts, status = f"{T}/aps/alerts", f"{T}/status"
    wait_for_bridge()
    session = ["-c", "-i", f"depot-check-{uuid.uuid4().hex[:6]}"]
    on(DEPOT, *sub_argv("depot-observer", [alerts], *session, "-E"))
    rss_idle = broker_rss_kib(TRUCK)

    subprocess.run(["docker", "network", "disconnect", NETWORK, TRUCK], check=True)
    cut = True
    try:
        run = uuid.uuid4().hex[:6]
        padding = "x" * (PAYLOAD_BYTES - len(f"alert-{run}-00000 "))
        lines = "".join(f"alert-{run}-{index:05d} {padding}\n" for index in range(QUEUED))
        started = time.monotonic()
        on(TRUCK, *pub_lines_argv("linkedge-inference", alerts), stdin=lines, timeout=300)
        publish_seconds = time.monotonic() - started
        status_value = f"status-{run}"
        assert puback(pub(TRUCK, "linkedge-status", status, status_value, "-r")) in (0, 16)
        rss_queued = broker_rss_kib(TRUCK)

        # The depot's observer waits for them on the depot's own loopback, in the persistent
        # session that was subscribed before the cut.
        receiver = Listener(
            DEPOT, sub_argv("depot-observer", [alerts], *session, "-C", str(QUEUED), "-W", "120")
        )
        time.sleep(1.0)
        subprocess.run(["docker", "network", "connect", NETWORK, TRUCK], check=True)
        cut = False
        restored = time.monotonic()
        received = receiver.wait(130)
    finally:
        if cut:
            subprocess.run(["docker", "network", "connect", NETWORK, TRUCK], check=False)
    # Anything sent twice would now be queued in the session: resume it for a few seconds.
    time.sleep(2)
    again = on(DEPOT, *sub_argv("depot-observer", [alerts], *session, "-W", "3"), check=False)

    expected = [f"{alerts} alert-{run}-{index:05d} {padding}" for index in range(QUEUED)]
    assert len(received) == QUEUED, f"{len(received)} alerts arrived, {QUEUED} were queued"
    assert received == expected, "alerts arrived out of order"
    assert again.stdout.strip() == "", f"alerts delivered twice: {again.stdout[:300]}"
    first_at, last_at = receiver.lines[0][0], receiver.lines[QUEUED - 1][0]
    retained = on(
        DEPOT, "mosquitto_sub", "-h", "127.0.0.1", *credentials("depot-observer"), "-t", status,
        "--retained-only", "-C", "1", "-W", "10", "-v",
    )  # fmt: skip
    assert retained.stdout.strip() == f"{status} {status_value}", retained
    FIGURES["store_and_forward"] = {
        "alerts_queued": QUEUED,
        "payload_bytes": PAYLOAD_BYTES,
        "publish_while_cut_off_seconds": round(publish_seconds, 1),
        "broker_rss_idle_kib": rss_idle,
        "broker_rss_with_queue_kib": rss_queued,
        "first_alert_after_link_back_seconds": round(first_at - restored, 1),
        "all_alerts_after_link_back_seconds": round(last_at - restored, 1),
        "delivered_exactly_once_in_order": True,
        "status_retained_on_depot": True,
        "bridge_keepalive_seconds": 10,
        "bridge_restart_timeout_seconds": [1, 4],
    }


def pub_lines_argv(user: str, topic: str) -> list[str]:
    """mosquitto_pub reading one message per line from stdin, on one connection, QoS 1."""
    return ["mosquitto_pub", "-h", "127.0.0.1", "-q", "1", *credentials(user), "-t", topic, "-l"]


def test_a_password_change_reloads_the_broker_without_a_restart():
    pid = broker_pid(TRUCK)
    roles = {
        "aps-sensor": "sensor",
        "linkedge-inference": "inference",
        "linkedge-status": "status",
        "observer": "observer",
        "other-sensor": "sensor",
        "reload-check": "observer",  # the client this run adds
        "test-sensor": "sensor",
    }
    clients = [
        {"name": name, "password": SECRETS[name], "role": role} for name, role in roles.items()
    ]
    clients[4]["truck"] = "other-truck"  # as in molecule.yml
    clients[6]["extra_topics"] = [
        {"access": "read", "topic": f"{T}/aps/{leaf}"} for leaf in ("predictions", "errors")
    ]
    extra = EPHEMERAL / "mqtt-extra-client.json"
    fd = os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"mqtt_broker_clients": clients}, handle)
    try:
        rc, output = playbook("--limit", TRUCK, "-e", f"@{extra}")
    finally:
        extra.unlink()
    assert rc == 0, output[-3000:]
    assert "RUNNING HANDLER [linkedge.edge.mqtt_broker : Reload mosquitto]" in output
    assert "RUNNING HANDLER [linkedge.edge.mqtt_broker : Restart mosquitto]" not in output
    assert SECRETS["reload-check"] not in output
    assert broker_pid(TRUCK) == pid, "the broker was restarted"
    probe = ["-t", f"{T}/status", "-E"]
    # The new user connects, and its ACL applies: it reads the truck's retained status (the
    # outcome record the converge just published).
    status = on(
        TRUCK, "mosquitto_sub", "-h", "127.0.0.1", *credentials("reload-check"),
        "-t", f"{T}/status", "--retained-only", "-C", "1", "-W", "10", "-v",
    )  # fmt: skip
    assert status.stdout.startswith(f"{T}/status {{"), status
    wait_for_bridge(timeout=10)  # the bridge stayed up

    rc, output = playbook("--limit", TRUCK)  # back to the scenario's clients
    assert rc == 0, output[-3000:]
    assert "users added: none; password changed: none; removed: reload-check" in " ".join(
        output.split()
    )
    gone = on(TRUCK, "mosquitto_sub", "-h", "127.0.0.1", *credentials("reload-check"), *probe,
              "-V", "mqttv5", check=False)  # fmt: skip
    assert gone.returncode == NOT_AUTHORIZED
    assert broker_pid(TRUCK) == pid


def test_check_mode_on_the_converged_hosts_reports_no_change():
    started = time.monotonic()
    rc, output = playbook("--check", "--diff")
    assert rc == 0, output[-3000:]
    hosts = recap(output)
    assert set(hosts) == {TRUCK, DEPOT}, output[-2000:]
    for host, counters in hosts.items():
        assert counters["changed"] == 0, (host, output[-3000:])
        assert counters["failed"] == 0, (host, output[-3000:])
    FIGURES["check_mode_seconds"] = round(time.monotonic() - started, 1)

"""A throwaway Mosquitto broker on a free port: what the MQTT tests and the bench run.

``MosquittoBroker(directory, persistence=...)`` writes a password file (``mosquitto_passwd
-b``: the serving containers' user and a sensor), an ACL (the server may read features and
write answers; the sensor the reverse) and a configuration, and starts
``/usr/sbin/mosquitto`` with it. ``persistence``:

- ``"off"`` (or False): nothing saved; the tests' limits.
- ``"timed"`` (or True): sessions and queued messages saved every second and at stop (they
  survive ``restart()``); the tests' limits.
- ``"durable"``: what the ``mqtt_broker`` role writes on a truck
  (roles/mqtt_broker/templates/mosquitto.conf.j2 with its defaults): the database saved
  after every change (``autosave_on_changes true``, ``autosave_interval 1``) and the
  truck's per-client limits.
- ``"periodic"``: the truck's limits, the database saved every ``autosave_changes`` changes:
  what durable saving costs, set against it.

``message_size_limit`` replaces the truck's 256 KiB message limit (and its packet limit,
4 KiB above it).

Errors (the broker exits or does not listen) raise :class:`BrokerError`.
"""

from __future__ import annotations

import getpass
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .procs import stop_process

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
MQTT_SERVER_USER = "linkedge-inference"  # the serving containers' user in the truck's ACL
MQTT_SENSOR_USER = "sensor"
MQTT_REPLY_ROOT = "reply"  # where test clients ask for answers (MQTT 5 response topic)
# With status_users=True: a truck's status publisher and the depot's observer (fleet status).
MQTT_STATUS_USER = "status"
MQTT_DEPOT_OBSERVER_USER = "depot-observer"
CONTAINER_UID = 10001  # the image's user: a password file mounted into it must be its own
PERSISTENCE_CHOICES = ("off", "timed", "durable", "periodic")

# roles/mqtt_broker/defaults/main.yml: the truck broker's per-client limits.
TRUCK_LIMITS = (
    "max_queued_messages 10000",
    "max_queued_bytes 16777216",
    "max_inflight_messages 20",
    "queue_qos0_messages false",
    "max_packet_size 266240",
    "message_size_limit 262144",
    "set_tcp_nodelay true",
)
TEST_LIMITS = ("set_tcp_nodelay true", "max_queued_messages 100000")


class BrokerError(RuntimeError):
    """Mosquitto is missing, exited, or did not listen in time."""


def mosquitto_available() -> bool:
    return MOSQUITTO.exists() and MOSQUITTO_PASSWD.exists()


def _persistence_mode(persistence: bool | str) -> str:
    if persistence is True:
        return "timed"
    if persistence is False:
        return "off"
    if persistence not in PERSISTENCE_CHOICES:
        raise ValueError(
            f"persistence must be one of {', '.join(PERSISTENCE_CHOICES)}, got {persistence!r}"
        )
    return persistence


def wait_on(changed: threading.Condition, predicate: Callable[[], object], timeout: float) -> bool:
    """Wait until ``predicate()`` holds, re-checked whenever ``changed`` is notified and at least
    every 0.2 s; False when ``timeout`` s pass first (for the MQTT answer collectors)."""
    deadline = time.monotonic() + timeout
    with changed:
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            changed.wait(min(left, 0.2))
    return True


class MosquittoBroker:
    """``/usr/sbin/mosquitto`` with a configuration of its own on a free port. ``restart()``
    stops it (SIGTERM: it saves its database when persistence is on) and starts it again on
    the same port."""

    def __init__(
        self,
        directory: Path,
        persistence: bool | str = False,
        autosave_changes: int = 1000,
        start: bool = True,
        message_size_limit: int | None = None,
        status_users: bool = False,
    ) -> None:
        if not mosquitto_available():
            raise BrokerError(
                f"no Mosquitto broker ({MOSQUITTO}, {MOSQUITTO_PASSWD}): "
                "apt-get install mosquitto mosquitto-clients"
            )
        self.persistence = _persistence_mode(persistence)
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.passwords = {
            MQTT_SERVER_USER: secrets.token_hex(8),
            MQTT_SENSOR_USER: secrets.token_hex(8),
        }
        if status_users:
            self.passwords[MQTT_STATUS_USER] = secrets.token_hex(8)
            self.passwords[MQTT_DEPOT_OBSERVER_USER] = secrets.token_hex(8)
        self.password_files: dict[str, Path] = {}
        passwd = directory / "passwd"
        for index, (user, password) in enumerate(self.passwords.items()):
            create = ["-c"] if index == 0 else []
            subprocess.run(
                [str(MOSQUITTO_PASSWD), *create, "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
            secret = directory / f"{user}.password"
            secret.write_text(password + "\n")
            secret.chmod(0o600)
            self.password_files[user] = secret
        acl = directory / "acl"
        acl.write_text(
            f"user {MQTT_SERVER_USER}\n"
            "topic read linkedge/+/aps/features\n"
            "topic write linkedge/+/aps/predictions\n"
            "topic write linkedge/+/aps/errors\n"
            "topic write linkedge/+/aps/alerts\n"
            f"topic write {MQTT_REPLY_ROOT}/#\n"
            f"user {MQTT_SENSOR_USER}\n"
            "topic write linkedge/+/aps/features\n"
            "topic read linkedge/+/aps/#\n"
            f"topic read {MQTT_REPLY_ROOT}/#\n"
            f"user {MQTT_STATUS_USER}\n"
            "topic write linkedge/+/status\n"
            f"user {MQTT_DEPOT_OBSERVER_USER}\n"
            "topic read linkedge/+/status\n"
        )
        self.log_path = directory / "mosquitto.log"
        store = directory / "store"
        store.mkdir(exist_ok=True)
        self.store = store
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {acl}",
            f"user {getpass.getuser()}",  # started as root, it would switch to "mosquitto"
            *(TRUCK_LIMITS if self.persistence in ("durable", "periodic") else TEST_LIMITS),
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            # The truck's broker leaves "information" out: a line for every save of the
            # database, i.e. for every change with durable persistence.
            *([] if self.persistence in ("durable", "periodic") else ["log_type information"]),
            "connection_messages true",
        ]
        if message_size_limit is not None:  # a larger message (and packet) than the truck's
            lines = [
                line
                for line in lines
                if not line.startswith(("message_size_limit ", "max_packet_size "))
            ]
            lines += [
                f"message_size_limit {message_size_limit}",
                f"max_packet_size {message_size_limit + 4096}",
            ]
        if self.persistence != "off":
            lines += ["persistence true", f"persistence_location {store}/"]
        if self.persistence == "timed":
            lines += ["autosave_interval 1"]
        elif self.persistence == "durable":
            lines += ["autosave_on_changes true", "autosave_interval 1"]
        elif self.persistence == "periodic":
            lines += ["autosave_on_changes true", f"autosave_interval {autosave_changes}"]
        self.config = directory / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise BrokerError(
            f"mosquitto did not listen on {self.port} within {timeout} s:\n{self.log()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def sensor_args(self, truck: str, user: str = MQTT_SENSOR_USER) -> list[str]:
        """`linkedge-image sensor` options that reach this broker as `user` (its password file)."""
        return [
            *("--host", "127.0.0.1", "--port", str(self.port), "--truck", truck),
            *("--username", user, "--password-file", str(self.password_files[user])),
        ]

    def sensor_command(
        self, truck: str, rows: Path, count: int, out: Path, answer_timeout: float, *options: str
    ) -> list[str]:
        """A `linkedge-image sensor` run against this broker that publishes ``count`` rows of
        ``rows``, waits for their answers and writes its report to ``out``."""
        return [
            *(sys.executable, "-m", "inference_image", "sensor", *self.sensor_args(truck)),
            *("--rows", str(rows), "--count", str(count), "--wait-answers"),
            *("--timeout", f"{answer_timeout:g}", "--out", str(out), *options),
        ]

    def container_password_file(self, user: str = MQTT_SERVER_USER) -> Path:
        """A copy of ``user``'s password file the image's user can read when mounted
        read-only (owned by it when we are root, else world-readable in a private dir)."""
        copy = self.directory / "container-secrets" / f"{user}.password"
        copy.parent.mkdir(mode=0o755, exist_ok=True)
        copy.write_text(self.passwords[user] + "\n")
        if os.geteuid() == 0:
            os.chown(copy, CONTAINER_UID, CONTAINER_UID)
            copy.chmod(0o400)
        else:
            copy.chmod(0o444)
        return copy

"""The MQTT adapter's settings, from the environment (the contract's LINKEDGE_MQTT_* names).

``LINKEDGE_MQTT_HOST`` unset (or empty): no adapter. Set, the rest is checked at start-up,
before gunicorn starts: a bad value raises ValueError naming its variable, which the server
turns into a one-line message and exit status 2.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inference_image import contract

from .config import tcp_port_env

# A client id (base) is also part of file names (the slot lock, the answered-ids log).
CLIENT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
KEEPALIVE_SECONDS = 30
SESSION_EXPIRY_SECONDS = 24 * 3600  # a persistent session outlives a restart of the worker
# At most this many features messages in flight (received, not yet acknowledged) per
# worker: the MQTT 5 Receive Maximum the adapter announces to the broker.
RECEIVE_MAXIMUM = 512
BATCH_MESSAGES = 256  # messages predicted together in one model call, at most
SLOT_LOCK_DIR = Path("/tmp")  # the container's own tmpfs: slots are per container


def _password_from_file(path_text: str) -> str:
    """The password in the file (the API token file's rules: one word of printable ASCII)."""
    name = contract.ENV_MQTT_PASSWORD_FILE
    path = Path(path_text)
    password = contract.read_token_file(path, allow_empty=True, setting=name)
    if not password:
        raise ValueError(f"{name} ({path}) is empty; expected the MQTT password")
    return password


def _state_dir(path_text: str) -> Path:
    name = contract.ENV_MQTT_STATE_DIR
    path = Path(path_text)
    if not path.is_dir():
        raise ValueError(f"{name} ({path}) is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{name} ({path}) is not writable by this user (uid {os.getuid()})")
    return path


@dataclass(frozen=True)
class MqttSettings:
    host: str
    truck: str
    port: int = contract.MQTT_DEFAULT_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = ""  # the base: each worker appends "-<slot>"
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.client_id:
            object.__setattr__(self, "client_id", f"linkedge-{self.truck}-{socket.gethostname()}")

    @property
    def features_filter(self) -> str:
        """The shared subscription every serving container of the truck takes."""
        return contract.mqtt_shared_features(self.truck)

    @property
    def features_topic(self) -> str:
        return contract.mqtt_topic(self.truck, "features")

    @property
    def predictions_topic(self) -> str:
        return contract.mqtt_topic(self.truck, "predictions")

    @property
    def errors_topic(self) -> str:
        return contract.mqtt_topic(self.truck, "errors")

    @property
    def alerts_topic(self) -> str:
        return contract.mqtt_topic(self.truck, "alerts")

    def worker_client_id(self, slot: int) -> str:
        return f"{self.client_id}-{slot}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MqttSettings | None:
        """None when LINKEDGE_MQTT_HOST is unset or empty; else the checked settings."""
        env = os.environ if environ is None else environ
        host = (env.get(contract.ENV_MQTT_HOST) or "").strip()
        if not host:
            return None
        if len(host) > 253 or any(char.isspace() for char in host):
            raise ValueError(
                f"{contract.ENV_MQTT_HOST} must be a host name or address, got {host[:80]!r}"
            )
        port = tcp_port_env(env, contract.ENV_MQTT_PORT, contract.MQTT_DEFAULT_PORT)
        truck = (env.get(contract.ENV_MQTT_TRUCK) or "").strip()
        if not truck:
            raise ValueError(
                f"{contract.ENV_MQTT_TRUCK} must be set when {contract.ENV_MQTT_HOST} is "
                "(the truck's topic level: linkedge/<truck>/aps/...)"
            )
        if not re.fullmatch(contract.MQTT_TRUCK_PATTERN, truck):
            raise ValueError(
                f"{contract.ENV_MQTT_TRUCK} must match {contract.MQTT_TRUCK_PATTERN} "
                f"(one topic level), got {truck[:80]!r}"
            )
        username = (env.get(contract.ENV_MQTT_USERNAME) or "").strip() or None
        if username is not None and len(username.encode()) > 65535:
            raise ValueError(f"{contract.ENV_MQTT_USERNAME} is too long")
        password_file = env.get(contract.ENV_MQTT_PASSWORD_FILE)
        password = None
        if password_file is not None:
            if not password_file.strip():
                raise ValueError(
                    f"{contract.ENV_MQTT_PASSWORD_FILE} is set but empty; unset it to connect "
                    "without a password"
                )
            if username is None:
                raise ValueError(
                    f"{contract.ENV_MQTT_PASSWORD_FILE} needs {contract.ENV_MQTT_USERNAME}"
                )
            password = _password_from_file(password_file.strip())
        client_id = (env.get(contract.ENV_MQTT_CLIENT_ID) or "").strip()
        if client_id and not re.fullmatch(CLIENT_ID_PATTERN, client_id):
            raise ValueError(
                f"{contract.ENV_MQTT_CLIENT_ID} must match {CLIENT_ID_PATTERN}, "
                f"got {client_id[:120]!r}"
            )
        state_raw = (env.get(contract.ENV_MQTT_STATE_DIR) or "").strip()
        settings = cls(
            host=host,
            port=port,
            truck=truck,
            username=username,
            password=password,
            client_id=client_id,
            state_dir=_state_dir(state_raw) if state_raw else None,
        )
        if not re.fullmatch(CLIENT_ID_PATTERN, settings.client_id):  # the default's hostname
            raise ValueError(
                f"the default MQTT client id {settings.client_id!r} does not match "
                f"{CLIENT_ID_PATTERN}: set {contract.ENV_MQTT_CLIENT_ID}"
            )
        return settings

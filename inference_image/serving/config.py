"""Serving limits and knobs, with their environment-variable overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from inference_image.contract import (
    DEFAULT_GRPC_PORT,
    ENV_CHECK_PORT,
    ENV_GRPC_PORT,
    ENV_HOST,
    ENV_SHADOW_BUNDLE,
    MODEL_NAME,
)

from .auth import TOKEN_FILE_ENV, read_token_file
from .capture import CaptureSettings

if TYPE_CHECKING:
    from .mqtt_config import MqttSettings

MiB = 1 << 20
# gunicorn kills a worker whose heartbeat is older than its ``timeout``: the server sets
# that to LINKEDGE_REQUEST_TIMEOUT plus this, so a request that takes too long to arrive
# gets its 408 from the worker (which lives on) before gunicorn would kill it.
STUCK_WORKER_GRACE_SECONDS = 5


def positive_int_env(environ: Mapping[str, str], name: str, default: int) -> int:
    """``environ[name]`` as a positive int, ``default`` when unset or empty."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


def tcp_port_env(environ: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port from the environment, else ValueError naming the variable."""
    port = positive_int_env(environ, name, default)
    if port > 65535:
        raise ValueError(f"{name} must be a TCP port (1-65535), got {port}")
    return port


def grpc_address_env(environ: Mapping[str, str]) -> str | None:
    """``host:port`` for the gRPC endpoint from LINKEDGE_GRPC_PORT (unset or empty: None) and
    LINKEDGE_HOST (default 0.0.0.0, as for HTTP); an IPv6 host goes in brackets."""
    if not environ.get(ENV_GRPC_PORT, "").strip():
        return None
    port = tcp_port_env(environ, ENV_GRPC_PORT, DEFAULT_GRPC_PORT)
    host = (environ.get(ENV_HOST) or "0.0.0.0").strip()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class ServingConfig:
    model_name: str = MODEL_NAME
    max_body_bytes: int = 8 * MiB
    max_rows: int = 10_000
    xgboost_nthread: int = 1
    # Required on the endpoints that run the model when set; never shown in a repr.
    api_token: bytes | None = field(default=None, repr=False)
    # The MQTT adapter's settings (LINKEDGE_MQTT_*); None: no adapter.
    mqtt: MqttSettings | None = None
    # host:port of the gRPC endpoint (LINKEDGE_HOST, LINKEDGE_GRPC_PORT); None: no gRPC.
    grpc_address: str | None = None
    # The sliding window drift is computed over (LINKEDGE_DRIFT_WINDOW_SECONDS), when the
    # bundle carries a training reference.
    drift_window_seconds: int = 3600
    # Data capture into a spool (LINKEDGE_CAPTURE_*); None: no capture.
    capture: CaptureSettings | None = None
    # LINKEDGE_CHECK_PORT: requests there are checks (not observed by drift and capture).
    check_port: int | None = None
    # LINKEDGE_SHADOW_BUNDLE: a candidate's bundle answering beside the model, never returned.
    shadow_bundle: Path | None = None

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_rows", "xgboost_nthread", "drift_window_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServingConfig.{name} must be a positive integer, got {value!r}")
        if self.api_token is not None and not self.api_token:
            raise ValueError("ServingConfig.api_token must not be empty (None: no token)")
        if not self.model_name or "/" in self.model_name:
            raise ValueError(
                f"ServingConfig.model_name must be a path segment, got {self.model_name!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingConfig:
        """Defaults overridden by LINKEDGE_MAX_BODY_BYTES, LINKEDGE_MAX_ROWS,
        LINKEDGE_XGBOOST_NTHREAD, LINKEDGE_DRIFT_WINDOW_SECONDS, LINKEDGE_SHADOW_BUNDLE,
        LINKEDGE_CHECK_PORT, LINKEDGE_API_TOKEN_FILE (the file holding the API token),
        LINKEDGE_GRPC_PORT (with LINKEDGE_HOST: the gRPC endpoint; unset or empty: none), the
        MQTT adapter's LINKEDGE_MQTT_* (:mod:`.mqtt_config`) and LINKEDGE_CAPTURE_*
        (:mod:`.capture`); a bad value, or a token or password file that is unreadable or
        empty, raises ValueError naming the variable."""
        from .mqtt_config import MqttSettings  # it imports this module

        env = os.environ if environ is None else environ
        defaults = cls()
        token_file = env.get(TOKEN_FILE_ENV)
        if token_file is not None and not token_file.strip():
            raise ValueError(
                f"{TOKEN_FILE_ENV} is set but empty; unset it to serve without a token"
            )
        return cls(
            model_name=defaults.model_name,
            max_body_bytes=positive_int_env(
                env, "LINKEDGE_MAX_BODY_BYTES", defaults.max_body_bytes
            ),
            max_rows=positive_int_env(env, "LINKEDGE_MAX_ROWS", defaults.max_rows),
            xgboost_nthread=positive_int_env(
                env, "LINKEDGE_XGBOOST_NTHREAD", defaults.xgboost_nthread
            ),
            api_token=None if token_file is None else read_token_file(Path(token_file.strip())),
            mqtt=MqttSettings.from_env(env),
            grpc_address=grpc_address_env(env),
            drift_window_seconds=positive_int_env(
                env, "LINKEDGE_DRIFT_WINDOW_SECONDS", defaults.drift_window_seconds
            ),
            capture=CaptureSettings.from_env(env),
            shadow_bundle=Path(env[ENV_SHADOW_BUNDLE].strip())
            if (env.get(ENV_SHADOW_BUNDLE) or "").strip()
            else None,
            check_port=tcp_port_env(env, ENV_CHECK_PORT, 1)
            if (env.get(ENV_CHECK_PORT) or "").strip()
            else None,
        )

"""Run the serving app under gunicorn: one XGBoost thread per worker, preloaded model.

Workers are :class:`.worker.KeepAliveWorker` (gthread's keep-alive event loop, requests
served inline); ``LINKEDGE_WORKER_CLASS=sync`` or ``gthread`` selects gunicorn's own worker
instead.

With one XGBoost thread per worker (the default) the app, libxgboost and the model are
loaded once in the master and shared copy-on-write by the forked workers. libgomp is not
fork-safe: once the master has run a prediction with more than one OpenMP thread, forked
workers hang in their first prediction. So with ``xgboost_nthread > 1`` every worker loads
its own app after the fork instead (the master still verifies the bundle's checksums).

Prometheus metrics go through per-process files in PROMETHEUS_MULTIPROC_DIR so /metrics
aggregates every worker.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from inference_image import contract
from inference_image.bundle import BundleError, load_bundle

from .config import STUCK_WORKER_GRACE_SECONDS, ServingConfig, positive_int_env, tcp_port_env
from .drift_window import FILE_PREFIX as DRIFT_FILE_PREFIX
from .drift_window import FILE_SUFFIX as DRIFT_FILE_SUFFIX
from .grpc_server import check_address

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # duplicated: importing .metrics would be too early
DEFAULT_BUNDLE = contract.BUNDLE_DIR
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8080
KEEPALIVE_SECONDS = 5
WORKER_CLASSES = {
    "keepalive": "inference_image.serving.worker.KeepAliveWorker",
    "sync": "sync",
    "gthread": "gthread",
}


def default_workers() -> int:
    """One worker per CPU this process may run on (cgroup/affinity aware where possible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def prepare_multiprocess_dir() -> Path:
    """Use PROMETHEUS_MULTIPROC_DIR (created if needed, stale metric files removed as
    prometheus_client requires) or set it to a fresh temporary directory (the container's
    /tmp is a tmpfs). Call before prometheus_client is imported."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for kind in ("counter", "gauge_*", "histogram", "summary"):
            for stale in path.glob(f"{kind}_*.db"):
                stale.unlink()
        for stale in path.glob(f"{DRIFT_FILE_PREFIX}*{DRIFT_FILE_SUFFIX}"):  # drift windows
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="linkedge-prometheus-"))
        os.environ[MULTIPROC_ENV] = str(path)
    if "prometheus_client" in sys.modules:  # imported before the variable was set
        from .metrics import enable_multiprocess_values

        enable_multiprocess_values()
    return path


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    capture = getattr(server.app, "capture_settings", None)
    if capture is not None:  # the worker's open capture segment, sealed for collection
        try:
            capture.spool().recover()
        except OSError as exc:
            server.log.warning("capture spool %s: %s", capture.directory, exc)


class _LinkEdgeApplication(BaseApplication):
    def __init__(self, bundle_path: Path, config: ServingConfig, options: dict[str, Any]) -> None:
        self._bundle_path = bundle_path
        self._config = config
        self.capture_settings = config.capture  # for _child_exit
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        assert self.cfg is not None
        for key, value in self._options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import create_app

        app = create_app(self._bundle_path, self._config)
        # Everything loaded so far lives as long as the process: keep the garbage collector
        # off it, so forked workers neither spend collections on it nor dirty the pages
        # they share with the master (copy-on-write) by touching its GC headers.
        gc.collect()
        gc.freeze()
        return app


def gunicorn_options(
    host: str,
    port: int,
    workers: int,
    timeout: int,
    access_log: bool,
    preload: bool = True,
    worker_class: str = "keepalive",
    reuse_port: bool = False,
    check_port: int | None = None,
) -> dict[str, Any]:
    if worker_class not in WORKER_CLASSES:
        raise ValueError(
            f"LINKEDGE_WORKER_CLASS must be one of {', '.join(WORKER_CLASSES)}, "
            f"got {worker_class!r}"
        )
    bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    if check_port is not None:
        if check_port == port:
            raise ValueError(f"LINKEDGE_CHECK_PORT must differ from LINKEDGE_PORT ({port})")
        bind.append(f"127.0.0.1:{check_port}")
    return {
        "bind": bind,
        # SO_REUSEPORT: a new container binds the service port while the old one still serves
        # it (a zero-downtime handover); the check port is this server's alone.
        "reuse_port": reuse_port,
        "workers": workers,
        "worker_class": WORKER_CLASSES[worker_class],
        "threads": 1,
        "keepalive": KEEPALIVE_SECONDS,
        "http_parser": "auto",  # gunicorn_h1c (C) if installed; the image has the Python one
        # The keep-alive worker answers a request that takes longer than ``timeout`` to
        # arrive with 408 (or a disconnect) and lives on; gunicorn kills a worker stuck for
        # longer still (worker.py).
        "timeout": timeout + STUCK_WORKER_GRACE_SECONDS,
        "graceful_timeout": timeout,
        "preload_app": preload,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "child_exit": _child_exit,
        "control_socket_disable": True,  # gunicorn >= 25 would write one under $HOME
        "proc_name": "linkedge-inference",
    }


def run(
    bundle_path: Path,
    host: str,
    port: int,
    workers: int | None = None,
    timeout: int = 30,
    config: ServingConfig | None = None,
    access_log: bool | None = None,
    worker_class: str = "keepalive",
    reuse_port: bool = False,
    check_port: int | None = None,
) -> None:
    """Serve the bundle with gunicorn until SIGTERM/SIGINT (blocks).

    Raises BundleError before starting gunicorn if the bundle is missing or fails its
    checksums; gunicorn exits the process (status 1, or 3 if workers cannot boot) on
    other startup failures.
    """
    if workers is None:
        workers = default_workers()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if timeout < 1:
        raise ValueError(f"timeout must be at least 1 second, got {timeout}")
    if access_log is None:
        access_log = os.environ.get("LINKEDGE_ACCESS_LOG", "0") == "1"
    config = config or ServingConfig()
    if check_port is None:
        check_port = config.check_port
    elif check_port != config.check_port:  # the app tells checks from traffic by this port
        config = dataclasses.replace(config, check_port=check_port)
    preload = config.xgboost_nthread == 1  # see the module docstring: libgomp and fork()
    # Every setting is checked before anything changes the process (environment, metrics).
    options = gunicorn_options(
        host, port, workers, timeout, access_log, preload, worker_class, reuse_port, check_port
    )
    if config.mqtt is not None and worker_class != "keepalive":
        raise ValueError(
            f"{contract.ENV_MQTT_HOST} needs LINKEDGE_WORKER_CLASS=keepalive (the MQTT adapter "
            f"runs in the keep-alive worker), got {worker_class!r}"
        )
    if config.grpc_address is not None:
        if worker_class != "keepalive":
            raise ValueError(
                f"{contract.ENV_GRPC_PORT} needs LINKEDGE_WORKER_CLASS=keepalive (the gRPC "
                f"server runs in the keep-alive worker), got {worker_class!r}"
            )
        grpc_port = int(config.grpc_address.rpartition(":")[2])
        if grpc_port in (port, check_port):
            raise ValueError(
                f"{contract.ENV_GRPC_PORT} ({grpc_port}) must differ from {contract.ENV_PORT} "
                f"and {contract.ENV_CHECK_PORT}"
            )
        check_address(config.grpc_address)
    bundle_path = Path(bundle_path)
    load_bundle(bundle_path)  # fail fast, before gunicorn starts, on a missing/tampered bundle
    # libgomp spin-waits by default, which starves other workers on a loaded CPU; read
    # when libgomp loads, so set it before anything loads libxgboost.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    prepare_multiprocess_dir()
    if config.capture is not None:  # what a power cut or a crash left open, sealed now
        try:
            config.capture.spool().recover()
        except OSError as exc:  # one line and exit 2, as every bad setting
            raise ValueError(
                f"{contract.ENV_CAPTURE_DIR} ({config.capture.directory}): {exc}"
            ) from None
    if config.mqtt is not None:
        from .mqtt_claims import forget_claims

        forget_claims(config.mqtt.client_id)  # a new server: no worker has taken anything yet
    _LinkEdgeApplication(bundle_path, config, options).run()


def run_from_env(environ: Mapping[str, str] | None = None) -> None:
    """The container entrypoint: LINKEDGE_BUNDLE, LINKEDGE_HOST, LINKEDGE_PORT,
    LINKEDGE_REUSE_PORT, LINKEDGE_CHECK_PORT, LINKEDGE_WORKERS, LINKEDGE_WORKER_CLASS,
    LINKEDGE_REQUEST_TIMEOUT, LINKEDGE_ACCESS_LOG and ServingConfig's variables (among them
    LINKEDGE_GRPC_PORT). A bad setting
    or bundle exits with status 2 and a one-line message."""
    env = os.environ if environ is None else environ
    try:
        port = tcp_port_env(env, contract.ENV_PORT, DEFAULT_PORT)
        workers_raw = env.get("LINKEDGE_WORKERS", "").strip()
        config = ServingConfig.from_env(env)
        reuse_raw = env.get(contract.ENV_REUSE_PORT, "0").strip()
        if reuse_raw not in ("0", "1"):
            raise ValueError(f"{contract.ENV_REUSE_PORT} must be 0 or 1, got {reuse_raw!r}")
        run(
            Path(env.get(contract.ENV_BUNDLE) or DEFAULT_BUNDLE),
            host=env.get(contract.ENV_HOST) or DEFAULT_HOST,
            port=port,
            workers=positive_int_env(env, "LINKEDGE_WORKERS", 1) if workers_raw else None,
            timeout=positive_int_env(env, "LINKEDGE_REQUEST_TIMEOUT", 30),
            config=config,
            access_log=env.get("LINKEDGE_ACCESS_LOG", "0") == "1",
            worker_class=(env.get("LINKEDGE_WORKER_CLASS") or "keepalive").strip(),
            reuse_port=reuse_raw == "1",
            check_port=config.check_port,
        )
    except (BundleError, ValueError) as exc:  # BundleError is a ValueError; named for clarity
        print(f"linkedge-serve: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run_from_env()

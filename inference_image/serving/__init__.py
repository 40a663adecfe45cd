"""HTTP serving of a LinkEdge model bundle (Flask app, run by gunicorn).

Submodules are imported lazily: ``server`` must be able to set PROMETHEUS_MULTIPROC_DIR
before anything imports prometheus_client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import ServingConfig
    from .server import run, run_from_env

__all__ = ["ServingConfig", "create_app", "run", "run_from_env"]

_HOMES = {
    "create_app": "app",
    "ServingConfig": "config",
    "run": "server",
    "run_from_env": "server",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_HOMES[name]}", __name__), name)

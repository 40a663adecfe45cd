"""The whole run: the depot and its images, the simulated fleet, the TLS and MQTT
measurements, the budgets, and the verdict."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .budget import fleet_extrapolation, monthly_budget
from .depot import Published, build_releases_ready, publish_depot
from .depot_logs import nginx_log, registry_log
from .images import Image, release_images, synthetic_images
from .ims_probe import ims_race_probe
from .limits import raise_open_files
from .mqtt import measure_bridge
from .phases import full_pull, run_fleet
from .servers import Nginx, Registry, RegistryPusher, ensure_binary
from .settings import (
    BUILD_KEY,
    BUILD_RELEASES,
    MOSQUITTO,
    NGINX,
    REGISTRY,
    REPO,
    REPOSITORY,
    Settings,
    SetupError,
    log,
)
from .summaries import convergence, fleet_report, layer_fetches
from .tls import measure_tls


def choose_source(settings: Settings) -> str:
    if settings.source == "build" and not build_releases_ready():
        raise SetupError(
            f"{BUILD_RELEASES}/v1 and v2 are not complete (or {BUILD_KEY} is missing): "
            "bash scripts/molecule-releases.sh, or --source fabricated"
        )
    if settings.source == "auto":
        return "build" if build_releases_ready() else "fabricated"
    return settings.source


def prepare_depot(settings: Settings, work: Path) -> tuple[Published, dict[str, Image]]:
    """The published depot and the two images its releases name."""
    source = choose_source(settings)
    log(f"releases and images ({source})")
    if source == "build":
        published = publish_depot(work / "depot", work, source)
        return published, release_images(published.manifests, published.releases)
    images = synthetic_images(settings.base_layer_bytes, settings.model_layer_bytes, settings.seed)
    return publish_depot(work / "depot", work, source, images), images


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name, command in (("nginx", [NGINX, "-v"]), ("registry", [REGISTRY, "--version"])):
        with contextlib.suppress(OSError):
            result = subprocess.run(command, capture_output=True, text=True)
            versions[name] = (result.stderr or result.stdout).strip().splitlines()[0]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        **versions,
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="linkedge-depot-load-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def simulate(settings: Settings, work: Path) -> dict[str, Any]:
    """Depot, registry and pollers: the fleet's figures."""
    published, images = prepare_depot(settings, work)
    registry = Registry(work / "registry")
    nginx = Nginx(work / "nginx", published.root, settings.nginx_workers)
    limits = raise_open_files(settings.pollers * 3 + 256)
    with contextlib.ExitStack() as stack:
        registry.start()
        stack.callback(registry.stop)
        pusher = RegistryPusher(registry.port)
        for image in images.values():
            pusher.push_image(image)
        nginx.start()
        stack.callback(nginx.stop)
        pollers, fleet, timeline, watch, time_wait = asyncio.run(
            run_fleet(settings, nginx, registry, published, images)
        )
        time.sleep(1.5)  # the depot's logs of the phases end before these requests
        log("a new truck's full pull; the If-Modified-Since probe")
        pull = full_pull(settings, fleet, images["v2"])
        probe = ims_race_probe(published, nginx.port)
    logs = {"nginx": nginx_log(nginx.access_log), "registry": registry_log(registry.log_path)}
    phases = fleet_report(settings, pollers, fleet, timeline, watch, logs)
    update_records = [r for r in fleet.exchanges if r.started >= timeline.update[0]]
    model = images["v2"].layers[-1]
    return {
        "source": published.source,
        "client_limits": {**limits, "time_wait_sockets_max": time_wait["max"]},
        "depot_files": published.file_sizes(),
        "image": {
            "repository": REPOSITORY,
            "layers": len(images["v2"].layers),
            "shared_layer_bytes": sum(len(layer.data) for layer in images["v2"].layers[:-1]),
            "model_layer_bytes": len(model.data),
            "config_bytes": len(images["v2"].config.data),
            "manifest_bytes": len(images["v2"].manifest),
            "versions": {name: image.version for name, image in images.items()},
        },
        "phases": phases,
        "convergence": convergence(pollers, timeline, settings),
        "model_layer": layer_fetches(update_records, len(model.data)),
        "idle_check": idle_check(phases["idle"]),
        "sync_failures": dict(Counter(f for p in pollers for f in p.failures).most_common(5)),
        "full_pull": pull,
        "if_modified_since_probe": probe,
    }


def idle_check(idle: dict[str, Any]) -> dict[str, Any]:
    kinds = idle["by_kind"]
    polls = [kinds.get(kind, {}) for kind in ("pointer", "pointer_signature")]
    answered = sum(kind.get("requests", 0) for kind in polls)
    not_modified = sum(kind.get("status", {}).get("304", 0) for kind in polls)
    return {"poll_requests": answered, "answered_304": not_modified}


def run(settings: Settings) -> dict[str, Any]:
    for binary in (NGINX, REGISTRY, *((MOSQUITTO,) if settings.mqtt else ())):
        ensure_binary(binary, settings.install)
    started = time.time()
    with workspace() as work:
        report: dict[str, Any] = {
            "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": "python -m bench.depot_load " + " ".join(sys.argv[1:]),
            "git": git_state(),
            "machine": machine(),
            "settings": settings.as_dict(),
        }
        report.update(simulate(settings, work))
        tls = measure_tls(settings, work / "depot", work) if settings.tls else {}
        mqtt = measure_bridge(settings, work) if settings.mqtt else {}
    report["tls_idle_sync"], report["mqtt_bridge"] = tls, mqtt
    report["monthly_per_truck"] = monthly_budget(settings, tls, mqtt)
    report["fleets"] = fleet_extrapolation(settings, report, tls)
    report["ok"] = run_ok(report)
    report["seconds"] = round(time.time() - started, 1)
    return report


def run_ok(report: dict[str, Any]) -> bool:
    converge = report["convergence"]
    phases = report["phases"]
    check = report["idle_check"]
    return (
        all(phase["errors"] == 0 for phase in phases.values())
        and check["poll_requests"] == check["answered_304"]
        and converge["converged"] == converge["pollers"]
        and report["model_layer"]["pollers_fetching_it_more_than_once"] == 0
    )

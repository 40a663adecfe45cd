"""What the run is set to: the repository's paths, the servers' binaries, the depot's names,
the wire's constants, the run's Settings (from the command line), and its log on stderr."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_image.contract import IMAGE_REPOSITORY

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "bench" / "results"
BUILD_RELEASES = REPO / "build" / "releases"
BUILD_KEY = REPO / "build" / "keys" / "release-signing.key"
FIGURES_MD = REPO / "docs" / "figures.md"
PULL_FIGURES = REPO / "build" / "figures" / "pull-sync.json"
CLI = [sys.executable, "-m", "inference_image"]

NGINX = "/usr/sbin/nginx"
REGISTRY = "/usr/bin/docker-registry"
MOSQUITTO = "/usr/sbin/mosquitto"
PACKAGES = {NGINX: "nginx-light", REGISTRY: "docker-registry", MOSQUITTO: "mosquitto"}

CHANNEL, SOURCE_CHANNEL = "stable", "canary"
REPOSITORY = IMAGE_REPOSITORY  # the contract's: where the builder pushes, trucks pull
DEPOT_HOST = "depot.example.net"  # the host name in the TLS measurement (docs' example)
DEPOT_PREFIX = "/linkedge"  # the depot's URL path (docs/operating-a-fleet.md's example)
TRUCK_ID = "truck-0001"
# What a Docker engine sends (pull_v2: one Accept line per media type it reads).
ENGINE_AGENT = (
    "docker/28.2.2 go/go1.24.3 git-commit/e6534b4 kernel/6.1.0-28-amd64 os/linux arch/amd64 "
    "UpstreamClient(Docker-Client/28.2.2 \\(linux\\))"
)
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = (
    MANIFEST_V2,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DEFAULT_MODEL_LAYER_BYTES = 1 << 20  # without build/releases: ~1 MiB

MONTH_SECONDS = 30 * 24 * 3600
TARGET_BYTES_PER_MONTH = 5_000_000
MSS = 1448  # TCP payload per segment on a 1500-byte MTU path with timestamps
IPV4_TCP_HEADER = 52  # IPv4 20 + TCP 20 + timestamps option 12
IPV6_TCP_HEADER = 72
TCP_INFO_SEGS = 136  # offset of tcpi_segs_out, tcpi_segs_in in struct tcp_info (Linux >= 4.2)
FLEETS = (10_000, 100_000)
BANDWIDTHS_MBIT = (100, 1000)


class SetupError(RuntimeError):
    """The run cannot start (a tool, a port, a release); the message says what to do."""


STARTED = time.monotonic()


def log(message: str) -> None:
    print(
        f"[depot-load {time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True
    )


@dataclass(frozen=True)
class Settings:
    pollers: int
    interval: float  # wall-clock seconds that stand for one real interval
    real_interval: float  # edge_manager_interval (OnUnitActiveSec)
    real_delay: float  # edge_manager_randomized_delay (RandomizedDelaySec)
    request_gap: float  # seconds between two get_url runs of one sync (not compressed)
    idle_cycles: float
    source: str  # auto | build | fabricated
    base_layer_bytes: int
    model_layer_bytes: int
    nginx_workers: int
    fetch_timeout: float
    fetch_retries: int
    fetch_delay: float
    seed: int
    tls: bool
    tls_repeats: int
    tls_cpu_requests: int
    mqtt: bool
    mqtt_keepalive: int
    mqtt_pings: int
    install: bool

    @property
    def scale(self) -> float:
        """Real seconds per simulated second."""
        return self.real_interval / self.interval

    @property
    def delay(self) -> float:
        return self.real_delay / self.scale

    @property
    def mean_period(self) -> float:
        return self.interval + self.delay / 2

    @property
    def max_period(self) -> float:
        return self.interval + self.delay

    def as_dict(self) -> dict[str, Any]:
        return {
            "pollers": self.pollers,
            "interval_wall_seconds": self.interval,
            "real_interval_seconds": self.real_interval,
            "real_randomized_delay_seconds": self.real_delay,
            "time_scale": round(self.scale, 3),
            "randomized_delay_wall_seconds": round(self.delay, 3),
            "equivalent_fleet_at_real_interval": round(self.pollers * self.scale),
            "request_gap_seconds": self.request_gap,
            "idle_cycles": self.idle_cycles,
            "source": self.source,
            "nginx_workers": self.nginx_workers,
            "fetch_timeout_seconds": self.fetch_timeout,
            "fetch_retries": self.fetch_retries,
            "seed": self.seed,
        }

"""The command line: ``python -m bench.depot_load``'s options, a run or ``--render``, the
results files and the exit status."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from .report import markdown
from .run import run
from .settings import DEFAULT_MODEL_LAYER_BYTES, DEFAULT_OUT, Settings, SetupError


class OneLineParser(argparse.ArgumentParser):
    """A user error is one line on stderr and exit status 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
        return value

    return parse


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m bench.depot_load",
        description="Simulated pollers against a real depot (nginx + docker-registry), and the "
        "idle cost of a sync on a cellular link. docs/pull-at-scale.md.",
    )
    add = parser.add_argument
    add("--pollers", type=positive(int), default=2000, help="simulated trucks (default: 2000)")
    add(
        "--interval",
        type=positive(float),
        default=60.0,
        help="wall-clock seconds that stand for one real interval (default: 60: the 30-min "
        "cycle in 60 s)",
    )
    add(
        "--real-interval",
        type=positive(float),
        default=1800.0,
        help="the timer's interval it stands for, s (edge_manager_interval; default: 1800)",
    )
    add(
        "--real-randomized-delay",
        type=non_negative,
        default=600.0,
        help="the timer's RandomizedDelaySec, s (edge_manager_randomized_delay; default: 600), "
        "compressed like the interval",
    )
    add(
        "--request-gap",
        type=non_negative,
        default=0.4,
        help="seconds between two get_url runs of one sync, not compressed (default: 0.4, "
        "measured with ansible-playbook on this machine)",
    )
    add(
        "--idle-cycles",
        type=positive(float),
        default=1.0,
        help="idle phase length in mean timer periods (default: 1)",
    )
    add(
        "--source",
        choices=("auto", "build", "fabricated"),
        default="auto",
        help="build: build/releases/v1+v2 and their real image layers; fabricated: placeholder "
        "releases signed with a throwaway key and a synthetic image; auto: build when complete",
    )
    add(
        "--base-layer-mb",
        type=positive(float),
        default=150.0,
        help="fabricated: the image's shared base layer, MB (default: 150)",
    )
    add(
        "--model-layer-bytes",
        type=positive(int),
        default=DEFAULT_MODEL_LAYER_BYTES,
        help="fabricated: the model layer, bytes (default: 1 MiB)",
    )
    add(
        "--nginx-workers",
        type=positive(int),
        default=os.cpu_count() or 1,
        help="nginx worker_processes (default: the machine's cores, as `auto`)",
    )
    add(
        "--fetch-timeout",
        type=positive(float),
        default=30.0,
        help="seconds per request (edge_manager_fetch_timeout; default: 30)",
    )
    add(
        "--fetch-retries",
        type=int,
        choices=range(0, 10),
        default=3,
        metavar="N",
        help="retries of a failed request (edge_manager_fetch_retries; default: 3)",
    )
    add(
        "--fetch-delay",
        type=non_negative,
        default=5.0,
        help="seconds between retries (edge_manager_fetch_delay; default: 5)",
    )
    add("--seed", type=int, default=1, help="random seed of the timers and layers (default: 1)")
    add("--no-tls", action="store_true", help="skip the idle-sync bytes measurement")
    add(
        "--tls-repeats",
        type=positive(int),
        default=5,
        help="syncs per TLS variant; the median is kept (default: 5)",
    )
    add(
        "--tls-cpu-requests",
        type=positive(int),
        default=300,
        help="requests per variant for nginx's CPU per handshake (default: 300)",
    )
    add("--no-mqtt", action="store_true", help="skip the MQTT bridge measurement")
    add(
        "--mqtt-keepalive",
        type=positive(int),
        default=5,
        help="the bridge's keepalive_interval during the probe, s (default: 5)",
    )
    add(
        "--mqtt-pings",
        type=positive(int),
        default=3,
        help="keep-alive exchanges to observe per TLS version (default: 3)",
    )
    add(
        "--no-install",
        action="store_true",
        help="do not apt-get install nginx-light, docker-registry or mosquitto when missing",
    )
    add("--out", type=Path, default=DEFAULT_OUT, help="results directory (default: bench/results)")
    add(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: write the .md of an earlier results file (into --out, --name)",
    )
    add("--name", default="depot-load", help="results file name, without suffix")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        pollers=args.pollers,
        interval=args.interval,
        real_interval=args.real_interval,
        real_delay=args.real_randomized_delay,
        request_gap=args.request_gap,
        idle_cycles=args.idle_cycles,
        source=args.source,
        base_layer_bytes=int(args.base_layer_mb * 1_000_000),
        model_layer_bytes=args.model_layer_bytes,
        nginx_workers=args.nginx_workers,
        fetch_timeout=args.fetch_timeout,
        fetch_retries=args.fetch_retries,
        fetch_delay=args.fetch_delay,
        seed=args.seed,
        tls=not args.no_tls,
        tls_repeats=args.tls_repeats,
        tls_cpu_requests=args.tls_cpu_requests,
        mqtt=not args.no_mqtt,
        mqtt_keepalive=args.mqtt_keepalive,
        mqtt_pings=args.mqtt_pings,
        install=not args.no_install,
    )


def render(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        report = json.loads(args.render.read_text())
        text = markdown(report)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"--render {args.render}: not a depot_load results file ({exc!r})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.name):
        parser.error(f"--name {args.name!r}: use letters, digits, '.', '_' and '-'")
    if args.render is not None:
        return render(parser, args)
    settings = settings_from(args)
    try:
        report = run(settings)
    except (SetupError, OSError, subprocess.SubprocessError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)
    return 0 if report["ok"] else 1

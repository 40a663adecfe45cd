"""``python -m bench``: LinkEdge's real image against MLServer, side by side, in one run.

Exit status: 0 when every answer was right, 1 when a server answered wrongly (or with
errors under load), 2 when the bench could not run (no image, no Docker, no wrk...).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .broker import BrokerError
from .capture import CaptureBench, capture_markdown
from .grpc_case import GrpcBench
from .grpc_report import grpc_markdown
from .mqtt import MqttBench, mqtt_markdown
from .report import markdown, slow_clients_markdown, soak_markdown
from .resilience import SlowClientBench, SoakBench
from .run import Bench, Settings
from .servers import ServerError
from .tools import REPO, BenchSetupError, bench_python, ensure_bench_venv, ensure_wrk, log

DEFAULT_OUT = REPO / "bench" / "results"
# not throughput cases: resilience.py, mqtt.py, grpc_case.py
SPECIAL_CASES = ("slow-clients", "soak", "mqtt", "grpc", "capture")
GRPC_SECONDS = 6.0  # --case grpc: per case and server (3 rounds of 2 s; 6 cases, 3 targets)
GRPC_QUIET_WAIT = 20.0  # --case grpc: per case, at most
# --case capture: 10 rounds of 6 s per case and server (alone), then 10 together: a 5 % target
# needs more rounds than this machine's round-to-round noise allows with 3
CAPTURE_SECONDS, CAPTURE_ROUNDS = 60.0, 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--image", default="linkedge/aps-classifier:perf", help="image to run")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=REPO / "build" / "perf" / "bundle",
        help="the bundle the image was built from: bodies, expected answers, MLServer's model",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="latest.json/.png/.md")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to test the bench")
    parser.add_argument(
        "--seconds",
        type=float,
        help="per case and server (default 12, grpc 6, capture 60, smoke 1)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds per case; median kept (default 3, capture 10)",
    )
    parser.add_argument("--warmup", type=float, help="per case (default 2, smoke 0)")
    parser.add_argument("--cold-starts", type=int, help="fresh containers timed (default 5)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="before each case, wait up to this many seconds for other work on the machine "
        "to fall under 0.3 cores (default 90, grpc 20, smoke 0)",
    )
    parser.add_argument(
        "--no-mlserver", action="store_true", help="LinkEdge only (default in --smoke)"
    )
    parser.add_argument("--mlserver", action="store_true", help="with MLServer even in --smoke")
    parser.add_argument("--no-plot", action="store_true", help="skip the matplotlib plot")
    parser.add_argument(
        "--build",
        action="store_true",
        help="train the bundle if it is missing and build the image from this checkout first",
    )
    parser.add_argument(
        "--platform",
        help="with --build: build the image for this platform (linux/arm64 runs under QEMU on "
        "x86: its figures are written as latest-arm64-emulated.*, labelled emulated)",
    )
    parser.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="CASE",
        help="run only this case (repeatable): a throughput case's key (single-predict, "
        f"batch-100-json, ...), or one of {', '.join(SPECIAL_CASES)} on its own "
        "(written to OUT/CASE.json/.md/.png, beside latest.*)",
    )
    parser.add_argument(
        "--slow-seconds",
        type=float,
        help="slow-clients: each phase, alone and beside the slow clients (default 40, smoke 4)",
    )
    parser.add_argument(
        "--slow-connections",
        type=int,
        default=64,
        help="slow-clients: slow connections (half slow heads, half slow bodies; default 64)",
    )
    parser.add_argument(
        "--soak-requests",
        type=int,
        help="soak: requests in all (default 5,000,000, smoke 20,000)",
    )
    parser.add_argument(
        "--soak-connections", type=int, default=8, help="soak: wrk connections (default 8)"
    )
    parser.add_argument(
        "--soak-slow-clients",
        type=int,
        default=8,
        help="soak: slow connections trickling beside it (default 8; 0: none)",
    )
    parser.add_argument(
        "--segment-seconds",
        type=float,
        default=5.0,
        help="soak: seconds of load between two memory samples (default 5)",
    )
    parser.add_argument(
        "--capture-rate",
        type=float,
        default=0.01,
        help="capture: share of the neg answers captured (every pos is; default 0.01)",
    )
    parser.add_argument(
        "--capture-control",
        action="store_true",
        help="capture: a control run, the second server without capture too: its drop is this "
        "machine's noise floor (written as capture-control.*)",
    )
    parser.add_argument(
        "--capture-cases",
        help="capture: the cases to run, comma-separated (default: all four; e.g. "
        "batch-100-real for the truck's batched mix alone, with more rounds)",
    )
    parser.add_argument(
        "--mqtt-seconds", type=float, help="mqtt: seconds per MQTT case (default 12, smoke 3)"
    )
    parser.add_argument(
        "--mqtt-rates",
        help="mqtt: single-record messages/s, comma-separated; the first is the target rate, "
        "the next look for the ceiling (default 5000,6000,7000,8000; smoke 200)",
    )
    parser.add_argument(
        "--mqtt-batch-rate",
        type=float,
        help="mqtt: 100-row messages/s (default 400, smoke 20)",
    )
    parser.add_argument(
        "--mqtt-periodic-changes",
        type=int,
        default=1000,
        help="mqtt: the 'periodic' broker saves its database every N changes (default 1000)",
    )
    parser.add_argument(
        "--mqtt-durable-messages",
        type=int,
        help="mqtt: messages per case on the durable broker, at most (default 2000, smoke 200)",
    )
    parser.add_argument(
        "--grpc-concurrency",
        help="grpc: requests in flight per case, comma-separated (default 1,4,16; smoke 2)",
    )
    parser.add_argument(
        "--grpc-channels",
        type=int,
        default=8,
        help="grpc: channels (HTTP/2 connections) at most, min(in flight, this) (default 8)",
    )
    return parser.parse_args(argv)


def numbers(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(item) for item in text.split(",")) if text else default


def build(image: str, bundle: Path, platform: str | None = None) -> None:
    """The bundle (trained once, 12 s) and the image from the current source (cached layers)."""
    cli = [sys.executable, "-m", "inference_image"]
    if not (bundle / "SHA256SUMS").exists():
        log(f"training {bundle}")
        subprocess.run([*cli, "train", "--out", str(bundle)], check=True, stdout=subprocess.DEVNULL)
    log(f"building {image} from {bundle}" + (f" for {platform}" if platform else ""))
    subprocess.run(
        [*cli, "build", "--bundle", str(bundle), "--tag", image]
        + (["--platform", platform] if platform else []),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    smoke = args.smoke
    special = [case for case in args.case if case in SPECIAL_CASES]
    if special and len(args.case) > 1:
        print(f"bench: error: --case {special[0]} runs on its own", file=sys.stderr)
        return 2
    with_mlserver = (args.mlserver or not smoke) and not args.no_mlserver
    if special in (["soak"], ["mqtt"], ["capture"]):
        with_mlserver = False  # the soak is about LinkEdge's own memory; MQTT is LinkEdge's
    grpc = special == ["grpc"]
    capture = special == ["capture"]
    plot = not args.no_plot and special not in (["mqtt"], ["grpc"], ["capture"])  # plot.py: no
    try:
        if args.platform and not args.build:
            print("bench: error: --platform builds the image: give --build too", file=sys.stderr)
            return 2
        if args.build:
            build(args.image, args.bundle, args.platform)
        wrk = ensure_wrk()
        venv = ensure_bench_venv() if (with_mlserver or plot) else None
        settings = Settings(
            image=args.image,
            bundle=args.bundle,
            mode="smoke" if smoke else "full",
            seconds=args.seconds
            or (1.0 if smoke else GRPC_SECONDS if grpc else CAPTURE_SECONDS if capture else 12.0),
            rounds=args.rounds or (1 if smoke else CAPTURE_ROUNDS if capture else 3),
            warmup_seconds=args.warmup if args.warmup is not None else (0.0 if smoke else 2.0),
            cold_starts=args.cold_starts or (1 if smoke else 5),
            quiet_wait=args.quiet_wait
            if args.quiet_wait is not None
            else (0.0 if smoke else GRPC_QUIET_WAIT if grpc else 90.0),
            mlserver_venv=venv if with_mlserver else None,
            cases=tuple(args.case),
            slow_seconds=args.slow_seconds or (4.0 if smoke else 40.0),
            slow_connections=args.slow_connections,
            soak_requests=args.soak_requests or (20_000 if smoke else 5_000_000),
            soak_connections=args.soak_connections,
            soak_slow_clients=args.soak_slow_clients,
            segment_seconds=args.segment_seconds,
            mqtt_seconds=args.mqtt_seconds or (3.0 if smoke else 12.0),
            mqtt_rates=tuple(float(rate) for rate in args.mqtt_rates.split(","))
            if args.mqtt_rates
            else ((200.0,) if smoke else (5000.0, 6000.0, 7000.0, 8000.0)),
            mqtt_batch_rate=args.mqtt_batch_rate or (20.0 if smoke else 400.0),
            mqtt_periodic_changes=args.mqtt_periodic_changes,
            mqtt_durable_messages=args.mqtt_durable_messages or (200 if smoke else 2000),
            grpc_concurrency=numbers(args.grpc_concurrency, (2,) if smoke else (1, 4, 16)),
            grpc_channels=args.grpc_channels,
            capture_rate=args.capture_rate,
            capture_cases=tuple(args.capture_cases.split(",")) if args.capture_cases else (),
            capture_control=args.capture_control,
        )
        runner = {
            "slow-clients": SlowClientBench,
            "soak": SoakBench,
            "mqtt": MqttBench,
            "grpc": GrpcBench,
            "capture": CaptureBench,
        }.get(special[0] if special else "", Bench)
        report = runner(settings, wrk).run()
    except (
        BenchSetupError,
        BrokerError,
        ServerError,
        ValueError,
        OSError,
        subprocess.CalledProcessError,
    ) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    kind = name = special[0] if special else "latest"
    if kind == "capture" and args.capture_control:
        name = "capture-control"  # never in place of the measured figures
    if report.get("settings", {}).get("image_emulated"):
        # Never in place of the hardware figures: latest-arm64-emulated.*
        name = f"{kind}-{report['settings']['image_architecture']}-emulated"
    results = args.out / f"{name}.json"
    results.write_text(json.dumps(report, indent=2) + "\n")
    render = {
        "slow-clients": slow_clients_markdown,
        "soak": soak_markdown,
        "mqtt": mqtt_markdown,
        "grpc": grpc_markdown,
        "capture": capture_markdown,
    }.get(kind, markdown)
    table = render(report)
    (args.out / f"{name}.md").write_text(table)
    if plot and venv is not None:
        plot = subprocess.run(
            [
                str(bench_python(venv)),
                str(Path(__file__).with_name("plot.py")),
                str(results),
                str(args.out / f"{name}.png"),
            ],
            capture_output=True,
            text=True,
        )
        if plot.returncode != 0:
            log(f"plot failed: {plot.stderr[-500:]}")
    print(table)
    log(f"wrote {results}")
    if not report["ok"]:
        for failure in report["verification"]["failures"]:
            print(f"bench: FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

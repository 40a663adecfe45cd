"""Run the test suite's long parts side by side: each lane is a list of shell commands run in order,
and the lanes run at the same time (make test: the Molecule scenarios in one lane, pytest at a
lower CPU priority in the other).

Part of a Molecule scenario's time is waiting (systemd booting, a broker's keepalive, a drift
window, a power cut's restart); a lane at a lower priority (nice) takes that time without
slowing the other's timed parts. Two scenarios at once were measured slower on a 2-core machine
(every phase CPU-bound), so the scenarios share one lane. Every line a lane prints is streamed
with its lane's name (so a CI log cut off by a timeout still shows where each lane was) and kept
whole in <log-dir>/<lane>.log. A lane goes on after a failed
command (the scenarios after it still run); the exit status is 1 when any command failed.
The summary lists every command's time and status, and the machine's CPU use while they ran.

    python scripts/lanes.py --log-dir build/ci-logs \
        --lane pytest "nice -n 10 .venv/bin/pytest -q tests" \
        --lane molecule "make molecule-pull" "make molecule"
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CPU_SAMPLE_SECONDS = 10.0


@dataclass
class Step:
    command: str
    seconds: float = 0.0
    returncode: int | None = None


@dataclass
class Lane:
    name: str
    steps: list[Step]
    log_path: Path


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class CpuSampler(threading.Thread):
    """Samples the machine's CPU busy share every CPU_SAMPLE_SECONDS into a log."""

    def __init__(self, log_path: Path) -> None:
        super().__init__(daemon=True)
        self.log_path = log_path
        self.samples: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        busy, total = cpu_times()
        with self.log_path.open("w") as log:
            while not self.stopped.wait(CPU_SAMPLE_SECONDS):
                now_busy, now_total = cpu_times()
                if now_total > total:
                    share = 100.0 * (now_busy - busy) / (now_total - total)
                    self.samples.append(share)
                    log.write(f"{time.strftime('%H:%M:%S')} {share:5.1f}\n")
                    log.flush()
                busy, total = now_busy, now_total


def run_lane(lane: Lane, print_lock: threading.Lock) -> None:
    with lane.log_path.open("w") as log:
        for step in lane.steps:
            started = time.monotonic()
            announce(print_lock, lane.name, f"started: {step.command}")
            process = subprocess.Popen(
                ["bash", "-c", step.command],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Python tools (pytest's progress dots) write to a pipe in blocks otherwise.
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                text=True,
                errors="replace",
            )
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                with print_lock:
                    sys.stdout.write(f"[{lane.name}] {line}")
                    sys.stdout.flush()
            step.returncode = process.wait()
            step.seconds = time.monotonic() - started
            log.flush()
            announce(
                print_lock,
                lane.name,
                f"finished ({'ok' if step.returncode == 0 else f'exit {step.returncode}'}, "
                f"{step.seconds:.0f} s): {step.command}",
            )


def announce(print_lock: threading.Lock, lane: str, message: str) -> None:
    with print_lock:
        print(f"lanes: {time.strftime('%H:%M:%S')} [{lane}] {message}", flush=True)


def summary(lanes: list[Lane], wall_seconds: float, cpu: list[float]) -> str:
    rows = ["lanes: summary", f"{'lane':<14} {'seconds':>8}  status  command"]
    for lane in lanes:
        for step in lane.steps:
            status = "ok" if step.returncode == 0 else f"exit {step.returncode}"
            rows.append(f"{lane.name:<14} {step.seconds:>8.0f}  {status:<6}  {step.command}")
    rows.append(
        f"wall time {wall_seconds:.0f} s; the serial sum would be "
        f"{sum(s.seconds for lane in lanes for s in lane.steps):.0f} s"
    )
    if cpu:
        rows.append(
            f"CPU busy: mean {sum(cpu) / len(cpu):.0f} %, "
            f"{sum(1 for share in cpu if share >= 95) * 100 // len(cpu)} % of samples "
            f"at 95 % or more"
        )
    return "\n".join(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-dir", type=Path, required=True, help="where each lane's log goes")
    parser.add_argument(
        "--lane",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "COMMAND"),
        help="a lane's name, then its shell commands, run in order",
    )
    args = parser.parse_args(argv)
    for lane in args.lane:
        if len(lane) < 2:
            parser.error(f"lane {lane[0]!r} has no command: give --lane NAME COMMAND [COMMAND ...]")
    names = [lane[0] for lane in args.lane]
    if len(set(names)) != len(names):
        parser.error(f"lane names must differ: {', '.join(names)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    lanes = [
        Lane(name, [Step(command) for command in commands], args.log_dir / f"{name}.log")
        for name, *commands in args.lane
    ]
    sampler = CpuSampler(args.log_dir / "cpu.log")
    sampler.start()
    print_lock = threading.Lock()
    started = time.monotonic()
    threads = [threading.Thread(target=run_lane, args=(lane, print_lock)) for lane in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sampler.stopped.set()
    print(summary(lanes, time.monotonic() - started, sampler.samples), flush=True)
    return 0 if all(step.returncode == 0 for lane in lanes for step in lane.steps) else 1


if __name__ == "__main__":
    sys.exit(main())

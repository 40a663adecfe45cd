"""``--case capture``: what data capture costs in throughput (issue target: at most 5 %).

The same image runs twice, side by side and hardened: without capture, and with capture on
(LINKEDGE_CAPTURE_DIR on a host directory; ``--capture-rate`` of the "neg" answers, 1 % by
default, plus every "pos" answer).
Both get the standard throughput cases' bodies (1 record and 100 rows, JSON, made of the
bundle's smoke vectors, nearly half of them "pos" and so always captured) and a truck's mix
(one real record answered "neg"; 100 real rows of the unlabeled sample) in interleaved rounds,
so a burst of other work on the machine hits both alike; each figure is its median round.
Then the same number of rounds with both servers loaded at once ("together"): the two
containers share the CPU (each its own cgroup), so whatever else slows the machine during a
round slows both alike, within the round. The target's figure is the drop at equal CPU: per
round, 1 - (CPU per request off) / (CPU per request on), what a serving container held to a
CPU budget loses; its median over the rounds. (The raw requests/s of a together round also
depend on how the kernel split the CPU between the two, which is recorded.) The alternating
rounds give each server's throughput alone.
Drift counting is on in both (it is not optional when the bundle has a reference), so the
difference is capture's alone. The containers are then killed (``docker rm --force``),
the spool recovered as the service's next start would, and read back: every segment whole
and its records naming the served model.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from inference_image import contract
from inference_image.capture_spool import OPEN_DIR, SEGMENT_SUFFIX, CaptureSpool, read_segment
from inference_image.data import default_data_dir, load_aps_csv
from inference_image.serving.capture import CaptureSettings, RequestCapture

from .bodies import BodyFactory, rows_of
from .cases import Case
from .load import LoadError, measure
from .run import Bench, Settings
from .servers import LinkEdgeContainer
from .tools import log

# The standard bodies (the smoke vectors: nearly half of them "pos", each always captured) and
# a truck's mix: real rows of the unlabeled APS sample (a few percent "pos").
REAL_CASES = ("single-predict-neg", "batch-100-real")
CASES = {
    "full": ("single-predict", "batch-100-json", *REAL_CASES),
    "smoke": ("single-predict",),
}
REAL_ROWS_FILE = "aps_failure_test_set.unlabeled-sample.csv"
SPOOL_MOUNT = contract.CAPTURE_MOUNT
TARGET_DROP = 0.05
IN_PROCESS_REQUESTS = 3000
CAPTURE_KEY = "linkedge-capture"


class CapturingContainer(LinkEdgeContainer):
    """The capturing server; before it is removed, its own count of the rows it answered and
    of the rows it captured (its /metrics)."""

    answered = captured = 0.0

    def stop(self) -> None:
        if self.container_id:
            # The workers' writer threads write what was answered a moment later: read until
            # the count stands still (at most a few seconds).
            counts, deadline = (-1.0, -1.0), time.monotonic() + 5
            with contextlib.suppress(OSError, ValueError):
                while time.monotonic() < deadline:
                    now = self._counts()
                    if now == counts:
                        break
                    counts = now
                    time.sleep(0.3)
            if counts[0] >= 0:
                self.answered += counts[0]
                self.captured += counts[1]
        super().stop()

    def _counts(self) -> tuple[float, float]:
        """(rows answered, rows captured) on the server's /metrics."""
        answered = captured = 0.0
        with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "linkedge_predictions_total":
                    answered += sample.value
                elif sample.name == "linkedge_capture_records_total":
                    captured += sample.value
        return answered, captured


class CaptureBench(Bench):
    def __init__(self, settings: Settings, wrk: str) -> None:
        cases = settings.capture_cases or CASES[settings.mode]
        unknown = sorted(set(cases) - set(CASES["full"]))
        if unknown:
            raise ValueError(
                f"--capture-cases: no case {', '.join(unknown)} (there are "
                f"{', '.join(CASES['full'])})"
            )
        super().__init__(replace(settings, cases=cases, mlserver_venv=None), wrk)
        self.spool: Path | None = None
        self.capturing: CapturingContainer | None = None
        self.captured_shares: dict[str, float] = {}  # per case: its rows capture should keep
        # Per case: capture's own CPU per request, measured in this process (no noise of load).
        self.in_process_cpu_us: dict[str, float] = {}
        self._case_rows: dict[str, np.ndarray] = {}  # the real-mix cases' rows
        # Per case: the rounds with both servers loaded at once (see run_together).
        self.together: dict[str, list[dict[str, dict[str, Any]]]] = {}
        # The container's user (10001) owns what it writes there: cleaned up as far as we may.
        self._spool_dir = tempfile.TemporaryDirectory(
            prefix="linkedge-capture-bench-", ignore_cleanup_errors=True
        )

    def available_cases(self, factory: BodyFactory) -> list[Case]:
        cases = self._real_mix(factory, super().available_cases(factory))
        for case in cases:
            body = case.bodies.get("linkedge")
            if body is not None:
                positive = body.labels.count("pos") / len(body.labels)
                share = positive + self.settings.capture_rate * (1 - positive)
                if self.settings.capture_control:
                    share = 0.0  # the second server captures nothing
                self.captured_shares[case.key] = round(share, 4)
                rows = self._case_rows.get(case.key)
                if rows is None:
                    rows = rows_of(factory.bundle, body.rows)
                self.in_process_cpu_us[case.key] = capture_cpu_us_per_request(
                    rows, body.probabilities, np.array(body.labels) == "pos", self.settings
                )
        return cases

    def _real_mix(self, factory: BodyFactory, cases: list[Case]) -> list[Case]:
        if self.settings.mode == "smoke":
            return cases
        data_dir = default_data_dir()
        if data_dir is None or not (data_dir / REAL_ROWS_FILE).is_file():
            raise ValueError(
                f"no {REAL_ROWS_FILE} for the real-mix cases: set LINKEDGE_DATA_DIR or provide "
                "../shared/aps"
            )
        rows = load_aps_csv(data_dir / REAL_ROWS_FILE).features[:1000]
        _probabilities, labels = factory.expected(rows)
        negative = rows[[labels.index("neg")]]
        self._case_rows = {"single-predict-neg": negative, "batch-100-real": rows[:100]}
        return [
            *cases,
            Case(
                "single-predict-neg",
                "1 real record answered neg, /predict JSON",
                1,
                16,
                {"linkedge": factory.predict(1, rows=negative, key="predict-1-neg")},
            ),
            Case(
                "batch-100-real",
                "100 real rows of the unlabeled sample, V2 JSON",
                100,
                4,
                {"linkedge": factory.v2_json(100, key="v2-json-100-real", rows=rows)},
            ),
        ]

    def _servers(self, workdir: Path) -> list[Any]:
        # Not in WORKDIR: Bench.run removes that before run() below reads the spool.
        self.spool = Path(self._spool_dir.name)
        os.chmod(self.spool, 0o777)  # the image's user (10001) writes it
        if self.settings.capture_control:  # the same pair with capture off in both
            self.capturing = CapturingContainer(
                self.settings.image, key=CAPTURE_KEY, label="LinkEdge, capture off (control)"
            )
        else:
            self.capturing = CapturingContainer(
                self.settings.image,
                key=CAPTURE_KEY,
                label=f"LinkEdge, capture on ({self.settings.capture_rate:.0%} + every pos)",
                env={
                    contract.ENV_CAPTURE_DIR: SPOOL_MOUNT,
                    contract.ENV_CAPTURE_RATE: str(self.settings.capture_rate),
                },
                mounts=[(self.spool, SPOOL_MOUNT, False)],
            )
        return [LinkEdgeContainer(self.settings.image), self.capturing]

    def run_case(self, case: Case, servers: list[Any], bodies_dir: Path) -> dict[str, Any]:
        """The alternating rounds (each server alone), then as many rounds together."""
        results = super().run_case(case, servers, bodies_dir)
        self.together[case.key] = self.run_together(case, servers, bodies_dir)
        return results

    def run_together(
        self, case: Case, servers: list[Any], bodies_dir: Path
    ) -> list[dict[str, dict[str, Any]]]:
        """``rounds`` rounds in which one wrk per server runs at the same time, for the same
        seconds: per round and server, its requests/s, CPU per request and CPU share."""
        loads = []
        for server in servers:
            body = case.bodies.get(server.kind)
            if body is not None:
                loads.append((server, body, bodies_dir / f"{body.key}.body"))
        seconds = self.settings.seconds / self.settings.rounds
        rounds: list[dict[str, dict[str, Any]]] = []
        for _index in range(self.settings.rounds):
            with ThreadPoolExecutor(len(loads)) as pool:
                started = {
                    server.key: pool.submit(
                        measure, self.wrk, server, body, body_file, case.connections, seconds
                    )
                    for server, body, body_file in loads
                }
                try:
                    figures = {key: future.result() for key, future in started.items()}
                except LoadError as exc:
                    self.failures.append(f"{case.key} (together): {exc}")
                    continue
            for key, measured in figures.items():
                self._check_errors(f"{key} {case.key} (together)", measured)
            rounds.append(
                {
                    key: {
                        "requests_per_s": measured["requests_per_s"],
                        "server_cpu_us_per_request": measured["server_cpu_us_per_request"],
                        "server_cpu_cores": measured["server_cpu_cores"],
                    }
                    for key, measured in figures.items()
                }
            )
        if rounds:
            log(
                f"{case.key:<20} together: "
                + "; ".join(
                    f"{key} {[r[key]['requests_per_s'] for r in rounds if key in r]} req/s"
                    for key in rounds[0]
                )
            )
        return rounds

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            self._spool_dir.cleanup()

    def _run(self) -> dict[str, Any]:
        report = super().run()  # `docker rm --force`: the workers die as in a power cut
        drops = {}
        for case in report.get("cases", []):
            off, on = case["results"]["linkedge"], case["results"][CAPTURE_KEY]
            together = together_figures(self.together.get(case["key"], []))
            drops[case["key"]] = {
                "requests_per_s_off": off["requests_per_s"],
                "requests_per_s_on": on["requests_per_s"],
                # The target's figure: the drop at equal CPU of the rounds with both servers
                # loaded at once (a slow spell of the machine hits both within the round).
                "drop": together["drop_at_equal_cpu"],
                "together": together,
                # Each server alone, one after the other in each round.
                "alternating_drop": paired_drop(by_round(off), by_round(on)),
                "rounds_drop": round_drops(by_round(off), by_round(on)),
                "drop_of_medians": round(1 - on["requests_per_s"] / off["requests_per_s"], 4)
                if off["requests_per_s"]
                else None,
                # What the servers themselves spent per request (their cgroups' CPU time).
                "cpu_us_per_request_off": median(off["rounds_server_cpu_us_per_request"]),
                "cpu_us_per_request_on": median(on["rounds_server_cpu_us_per_request"]),
                # Capture's own work (sampling, the copy, the writer thread's encoding and
                # writing), timed in this process, and its share of the server's CPU per request.
                "in_process_cpu_us": self.in_process_cpu_us.get(case["key"]),
                "in_process_share": share_of(
                    self.in_process_cpu_us.get(case["key"]),
                    median(off["rounds_server_cpu_us_per_request"]),
                ),
                "captured_share": self.captured_shares.get(case["key"]),
            }
        assert self.spool is not None
        # What the next start of the service does: seal what the killed workers left open.
        spool = CaptureSpool(self.spool, 1 << 40, 1 << 20)
        recovered = spool.recover()
        segments = spool.sealed()
        records = 0
        for path in segments:
            try:
                items = read_segment(path)
            except ValueError as exc:
                self.failures.append(f"capture spool: {exc}")
                continue
            records += len(items)
            if any(item["model_version"] != report["settings"]["model_version"] for item in items):
                self.failures.append(f"capture spool: {path.name} names another model")
        left_open = list((self.spool / OPEN_DIR).glob(f"*{SEGMENT_SUFFIX}"))
        if left_open:
            self.failures.append(f"capture spool: {len(left_open)} segments still open")
        answered = self.capturing.answered if self.capturing else 0.0
        captured = self.capturing.captured if self.capturing else 0.0
        dropped_segments, dropped_bytes = spool.dropped()
        report["capture"] = {
            # A control run: the second server captured nothing; its "drop" is the noise floor.
            "control": self.settings.capture_control,
            "rate": self.settings.capture_rate,
            # What the bodies made it capture: the cases' rows are not a truck's mix of pos.
            "rows_answered": int(answered),
            "rows_captured": int(captured),
            "captured_share": round(captured / answered, 4) if answered else None,
            "dropped_segments": dropped_segments,
            "dropped_bytes": dropped_bytes,
            "target_drop": TARGET_DROP,
            "cases": drops,
            "within_target": all(
                entry["drop"] is not None and entry["drop"] <= TARGET_DROP
                for entry in drops.values()
            ),
            # A truck's mix: the real rows' cases (the smoke vectors are nearly half "pos").
            "within_target_real_mix": all(
                drops[key]["drop"] is not None and drops[key]["drop"] <= TARGET_DROP
                for key in REAL_CASES
                if key in drops
            )
            if any(key in drops for key in REAL_CASES)
            else None,
            # Capture's own CPU, as a share of a request's, for every case (free of load noise).
            "within_target_in_process": all(
                entry["in_process_share"] is not None and entry["in_process_share"] <= TARGET_DROP
                for entry in drops.values()
            ),
            "segments": len(segments),
            "sealed_by_recovery": len(recovered),
            "records": records,
            "bytes": sum(path.stat().st_size for path in segments),
        }
        report["ok"] = not self.failures
        report["verification"] = {"checks": self.checks, "failures": self.failures}
        return report


def together_figures(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The rounds with both servers at once: each round's drop in requests/s, and its drop at
    equal CPU (1 - CPU per request off / on), their medians, and the CPU each server used."""
    both = [r for r in rounds if "linkedge" in r and CAPTURE_KEY in r]

    def by_index(key: str, figure: str) -> dict[int, float]:
        return {index: r[key][figure] for index, r in enumerate(both)}

    rps_off = by_index("linkedge", "requests_per_s")
    rps_on = by_index(CAPTURE_KEY, "requests_per_s")
    cpu_off = by_index("linkedge", "server_cpu_us_per_request")
    cpu_on = by_index(CAPTURE_KEY, "server_cpu_us_per_request")
    return {
        "rounds": len(both),
        "drop": paired_drop(rps_off, rps_on),
        "rounds_drop": round_drops(rps_off, rps_on),
        # 1 - CPU per request off / on: round_drops' 1 - b / a with a = on, b = off
        "drop_at_equal_cpu": paired_drop(cpu_on, cpu_off),
        "rounds_drop_at_equal_cpu": round_drops(cpu_on, cpu_off),
        "requests_per_s_off": median([r["linkedge"]["requests_per_s"] for r in both]),
        "requests_per_s_on": median([r[CAPTURE_KEY]["requests_per_s"] for r in both]),
        "cpu_cores_off": median([r["linkedge"]["server_cpu_cores"] for r in both]),
        "cpu_cores_on": median([r[CAPTURE_KEY]["server_cpu_cores"] for r in both]),
    }


def share_of(part: float | None, whole: float | None) -> float | None:
    return round(part / whole, 4) if part is not None and whole else None


def capture_cpu_us_per_request(
    rows: np.ndarray,
    probabilities: np.ndarray,
    positive: np.ndarray,
    settings: Settings,
    requests: int = IN_PROCESS_REQUESTS,
) -> float:
    """What capture itself costs per request of ROWS: the serving code's RequestCapture, its
    writer thread included, into a spool on this machine's disk (CPU time of all threads)."""
    with tempfile.TemporaryDirectory(prefix="linkedge-capture-cost-") as directory:
        capture = RequestCapture(
            CaptureSettings(Path(directory), rate=settings.capture_rate), "bench"
        )
        capture.writer()  # the thread started before the clock
        started = time.process_time()
        for _request in range(requests):
            capture.observe(rows, probabilities, positive)
        if not capture.writer().close(120):
            raise ValueError("capture's writer did not finish its rows within 120 s")
        return round((time.process_time() - started) / requests * 1e6, 1)


def median(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(statistics.median(known), 1) if known else None


def by_round(figures: dict[str, Any]) -> dict[int, float]:
    """A server's requests/s by round (a round that failed for it is absent)."""
    return dict(zip(figures["rounds_index"], figures["rounds_requests_per_s"], strict=True))


def round_drops(off: dict[int, float], on: dict[int, float]) -> list[float]:
    """1 - on/off of each round both servers were measured in, in round order."""
    return [
        round(1 - on[index] / off[index], 4)
        for index in sorted(off)
        if on.get(index) is not None and off[index]
    ]


def paired_drop(off: dict[int, float], on: dict[int, float]) -> float | None:
    """The median over rounds of 1 - on/off (None without a round measured on both)."""
    drops = round_drops(off, on)
    return round(statistics.median(drops), 4) if drops else None


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def capture_markdown(report: dict[str, Any]) -> str:
    capture = report["capture"]
    title = "throughput with capture off and on"
    if capture.get("control"):
        title = (
            "control run: the same pair with capture off in both (every drop below is this "
            "machine's noise, not capture's cost)"
        )
    lines = [
        f"# Data capture: {title}",
        "",
        f"Image `{report['settings']['image']}`, model `{report['settings']['model_version']}`, "
        f"{report['settings']['rounds']} rounds of "
        f"{report['settings']['seconds_per_case'] / report['settings']['rounds']:.1f} s per "
        "case and server, each server alone in turn (their order turning round every round), "
        "then as many rounds with both loaded at once; the target's drop is the median of the "
        "together rounds' drops at equal CPU (1 - CPU per request off / on), "
        f"{report['started']}, git `{report['git'].get('commit', '?')[:12]}`. "
        f"Capture: {capture['rate']:.0%} of the neg answers plus every pos; over all cases "
        f"that was **{_share(capture['captured_share'])} of the rows** "
        f"({capture['rows_captured']} of {capture['rows_answered']}). The smoke-vector bodies "
        "are nearly half pos (each always captured); the real-row cases are a truck's mix. "
        f"Target: at most {capture['target_drop']:.0%} fewer requests/s.",
        "",
        "Both servers at once (the target's figures):",
        "",
        "| case | rows captured | drop at equal CPU (rounds' median) | rounds' drops at equal "
        "CPU | off → on, req/s | drop in req/s | CPU cores used, off / on |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, entry in capture["cases"].items():
        together = entry.get("together") or {}
        lines.append(
            f"| {key} | {_share(entry.get('captured_share'))} "
            f"| **{_share(entry['drop'])}** "
            f"| {', '.join(_share(v) for v in together.get('rounds_drop_at_equal_cpu', []))} "
            f"| {together.get('requests_per_s_off')} → {together.get('requests_per_s_on')} "
            f"| {_share(together.get('drop'))} "
            f"| {together.get('cpu_cores_off')} / {together.get('cpu_cores_on')} |"
        )
    lines += [
        "",
        "Each server alone, in turn:",
        "",
        "| case | off, req/s | on, req/s | drop (rounds' median) | rounds' drops "
        "| server CPU µs/request off → on | capture's own CPU µs/request |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, entry in capture["cases"].items():
        rounds = ", ".join(_share(value) for value in entry.get("rounds_drop", []))
        lines.append(
            f"| {key} | {entry['requests_per_s_off']} | {entry['requests_per_s_on']} "
            f"| {_share(entry.get('alternating_drop'))} | {rounds} "
            f"| {entry.get('cpu_us_per_request_off')} → {entry.get('cpu_us_per_request_on')} "
            f"| {entry.get('in_process_cpu_us')} ({_share(entry.get('in_process_share'))}) |"
        )
    real_mix = capture.get("within_target_real_mix")
    lines += [
        "",
        "Within the target for a truck's mix (the real-row cases): "
        f"**{'n/a' if real_mix is None else 'yes' if real_mix else 'no'}**; for every case: "
        f"**{'yes' if capture['within_target'] else 'no'}**. The alternating rounds' drops "
        "show this machine's noise: the same server alone varies by more than the target from "
        "one round to the next; loaded together, a slow spell hits both within the round. "
        "The last column has no such noise: capture's own work per request (the "
        "serving code's RequestCapture with the case's rows, its writer thread included, timed "
        "in the bench's process) and its share of the capture-off server's CPU per request; "
        "within the target for every case: "
        f"**{'yes' if capture.get('within_target_in_process') else 'no'}**. The containers "
        "are removed with `docker rm --force` (their workers killed, as by a power cut); the "
        f"spool's recovery then sealed the {capture['sealed_by_recovery']} segments they had "
        f"open. Kept at the end: {capture['segments']} sealed segments, {capture['records']} "
        f"records, {capture['bytes']} bytes, every one read back whole; dropped oldest first "
        f"for the budget: {capture['dropped_segments']} segments, "
        f"{capture['dropped_bytes']} bytes.",
        "",
    ]
    return "\n".join(lines)

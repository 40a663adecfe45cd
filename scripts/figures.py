#!/usr/bin/env python3
"""Render docs/figures.md: the one place for LinkEdge's measured figures.

Every figure comes from a file a run wrote, with the date and commit of that run:

    bench/results/latest.json              `make bench` (LinkEdge vs MLServer), rendered with
                                           bench/report.py's own table
    build/figures/<scenario>.json          the Molecule scenarios fleet, resilience, mqtt, pull
                                           (`make test`), written by their `figures` fixture
    build/fuzz/summary.json                tests/fuzz (`make test`)
    build/releases/current/manifest.json   the newest release playbooks/build.yml published
                                           (`make release`, run in `make test`'s checks lane)

A source that is absent is listed as not measured yet; nothing is carried over by hand.

    python scripts/figures.py            # write docs/figures.md
    python scripts/figures.py --check    # exit 1 when docs/figures.md differs from the sources

Standard library only (plus bench/report.py from this repository).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NOT_MEASURED = "not measured yet: run `make test`"

# What each scenario figure means, in the order the scenario measures them. Figures a scenario
# records that are not listed here are rendered too, under their own key, after these.
SCENARIOS: dict[str, tuple[str, str, dict[str, str]]] = {
    "fleet": (
        "Fleet scenario (`molecule test -s fleet`)",
        "Four simulated trucks on v1; rollout of v2 while fleet-truck-4 is cut off, rerun, "
        "fleet-wide rollback. A prober per truck opens a new connection every 50 ms during "
        "the rollout and the rollback.",
        {
            "status_seconds": "`status.yml` on the four trucks, s",
            "bad_canary": "a version failing its smoke vectors, stopped at the canary "
            "(rolled back; the others `not_reached`): s, reason, bytes sent",
            "tampered_manifest": "a release whose signed manifest was altered, refused at the "
            "canary before anything was sent: s, reason",
            "truck_4_cut_off_after_canary": "fleet-truck-4 cut off once the canary served v2",
            "rollout_v2_3_trucks_seconds": "rollout of v2: 3 trucks updated, 1 cut off "
            "(`pending`), s",
            "bytes_per_truck_model_only": "bytes sent per truck for the model-only update "
            "(delta transfer)",
            "full_image_archive_bytes": "the full `docker save` archive of v2, bytes",
            "serving_gap_module_seconds": "serving gap per truck as `inference_container` "
            "measured it, s",
            "prober_rollout": "probers during the rollout: requests, failed requests, longest "
            "time between two answers (s)",
            "rerun_seconds": "rerun of the rollout, catching up the cut-off truck only, s",
            "rollback_seconds": "fleet-wide `rollback.yml` (nothing sent), s",
            "prober_rollback": "probers during the rollback: requests, failed requests, longest "
            "time between two answers (s)",
        },
    ),
    "resilience": (
        "Resilience scenario (`molecule test -s resilience`)",
        "One truck whose Docker root is a small tmpfs. `seconds_to_serving`: from the power "
        "cut (`docker kill` of the truck) until it served again after booting; `served_after`: "
        "the versions it answered with; `rerun`: the rollout run again afterwards.",
        {
            "full_disk": "full disk: free bytes, the refusal (before anything was touched), s, "
            "what served after, then the rollout once room was made",
            "cut_candidate_beside_serving": "power cut while the candidate was checked beside "
            "the serving container",
            "cut_new_beside_old": "power cut while the new and the old container served the "
            "port together",
            "cut_during_transfer": "power cut during the transfer of the full archive",
            "cut_during_load": "power cut during `docker load`",
        },
    ),
    "mqtt": (
        "MQTT bus scenario: the broker (`molecule test -s mqtt`, tests/test_mqtt.py)",
        "A truck and a depot broker (role mqtt_broker; save after every change), the truck "
        "bridged to the depot over TLS.",
        {
            "acl": "ACLs: PUBACK reason code of a sensor publishing predictions (135: not "
            "authorized), messages a sensor received, messages the inference user's shared "
            "subscription received",
            "persistence": "queued QoS 1 messages kept across a broker restart and a power cut; "
            "seconds until the broker accepted clients again",
            "store_and_forward": "alerts queued on the truck while it was cut off from the "
            "depot, the broker's memory idle and with the queue, how long the bridge took "
            "once the link was back, exactly once and in order",
        },
    ),
    "mqtt-serving": (
        "MQTT bus scenario: predictions over MQTT under faults (tests/test_serving.py)",
        "The truck serves release v1 over HTTP and MQTT; the sensor simulator publishes rows of "
        "the unlabeled APS sample from the host (QoS 1) while each fault happens. Per case: "
        "messages sent, answered, lost, answered twice, redelivered by the broker (the same "
        "answer delivered again, not a second answer), publish-to-answer latency in ms.",
        {
            "equal_to_predict_batch_1": "200 single-record messages; answers equal to "
            "`/predict`'s for the same rows",
            "equal_to_predict_batch_100": "2 messages of 100 rows; answers equal to `/predict`'s",
            "alerts_at_depot": "alerts (pos rows) that reached the depot over the bridge",
            "switch": "rollout of v2 (handover on the shared subscription) at 100 messages/s",
            "switch_rollout_seconds": "that rollout, s",
            "broker_restart": "`systemctl restart mosquitto` at 100 messages/s",
            "power_cut": "power cut of the truck (`docker kill`, `docker start`) at 50 messages/s",
            "power_cut_seconds_to_answering": "from the power cut until the truck answered over "
            "MQTT again, s",
        },
    ),
    "mqtt-telemetry": (
        "MQTT bus scenario: monitoring, drift, capture, retraining, shadow "
        "(tests/test_telemetry.py)",
        "The truck runs the role monitoring (node exporter, vmagent forwarding every 5 s) and "
        "sends to the depot's Prometheus (same role, depot mode, TLS); its serving container "
        "captures every answer (256 KiB segments) and keeps a 2-minute drift window. The drift "
        "alert's `for:` is 30 s in the scenario (10 min as shipped).",
        {
            "truck_monitoring_memory_mib": "memory of the monitoring parts on the truck "
            "(systemd MemoryCurrent), MiB",
            "truck_monitoring_memory_mib_total": "both together, MiB",
            "forwarder_gap": "the depot's Prometheus stopped for about 60 s, the forwarder "
            "restarted meanwhile: 5-s scrapes of the gap expected and delivered, s until all "
            "arrived",
            "drift_psi_max_unshifted": "largest PSI over 1,000 unshifted real rows",
            "drift_to_alert_seconds": "from the first row with `aa_000` x 10 until "
            "LinkEdgeDriftAboveThreshold fired in Prometheus, s",
            "drift_rows_sent_until_alert": "shifted rows sent until then",
            "drift_psi_shifted_feature": "the shifted feature's PSI at the depot",
            "drift_alert_for": "the rule's `for:` in the scenario",
            "capture_power_cut_seconds_to_serving": "power cut after 600 answered rows until "
            "serving again, s",
            "capture_collected": "`collect.yml` after the power cut: segments, bytes, the "
            "marked rows answered and collected (each once)",
            "retrain": "train on the official sample plus every collected row (labelled by one "
            "maintenance window) and the paired gate against release v2's parameters",
            "shadow": "release v1 in shadow beside v2 (`inference_service_shadow_image`): rows, "
            "agreement of the labels, at the depot",
        },
    ),
    "pull": (
        "Pull scenario: three trucks syncing from a depot (`molecule test -s pull`)",
        "A depot (nginx over HTTPS, docker-registry over TLS, Mosquitto) and three trucks in "
        "pull mode with a 40 s timer and up to 15 s of jitter; no controller runs unless the "
        "row says so. Bytes are what a truck's record counts: the depot's files plus the "
        "compressed layers its engine pulled.",
        {
            "first_install_seconds": "v1 published to both channels until all three trucks "
            "served it (first sync: the whole image), s",
            "first_install_bytes_per_truck": "bytes per truck for that first install",
            "image_bytes_in_registry": "the whole image as the registry holds it (compressed "
            "layers), bytes",
            "model_only_update": "v2 on `canary`: bytes the canary fetched, the new model "
            "layer's compressed size, the whole image, and the sync's duration",
            "promotion_to_stable_truck_seconds": "`channel promote` until the online stable "
            "truck served v2, s",
            "offline_truck_catch_up_seconds": "link back until the cut-off truck served v2, s",
            "promotion_converged_seconds": "`channel promote` until the whole fleet served v2 "
            "(the cut-off truck included), s",
            "registry_down_reason": "the reason a truck reported while the registry was down",
            "power_cut_serving_again_seconds": "power cut mid-pull until the truck served "
            "(v2, complete) again, s",
            "power_cut_completed_seconds": "power cut until the truck served v3 (parked again "
            "after the deferral), s",
            "refused": "reasons reported for a replayed, an altered and a wrongly signed pointer",
            "keys": "the rotated-to key, the revoked key, and the revoked key's refusal",
            "capture_upload_sync_seconds": "the sync that uploaded pull-truck-2's sealed "
            "capture segments to the depot, s",
            "capture_upload_rows": "marked rows that reached the depot's capture/, each once",
        },
    ),
}


# --- reading the sources -----------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """PATH decoded, or None when it is absent; a file that is not JSON stops the run."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise SystemExit(f"figures: {path} is not JSON ({exc}): run what writes it again") from None


def file_time(path: Path) -> str:
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ") + " (file time)"


def commit_text(git: dict[str, Any] | None) -> str:
    """`abcdef123456`, `abcdef123456 (dirty)` or `not recorded`."""
    commit = (git or {}).get("commit")
    if not commit:
        return "not recorded"
    return f"`{str(commit)[:12]}`" + (" (dirty)" if (git or {}).get("dirty") else "")


def release_commit(source_commit: str | None) -> dict[str, Any]:
    """release.source_commit() writes `<sha>` or `<sha>-dirty`."""
    if not source_commit or source_commit == "unknown":
        return {}
    return {
        "commit": source_commit.removesuffix("-dirty"),
        "dirty": source_commit.endswith("-dirty"),
    }


# --- Markdown helpers --------------------------------------------------------------------------


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def value_text(value: Any) -> str:
    """A figure as one table cell: numbers with thousands separators, nested values inline."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(value_text(item) for item in value) if value else "none"
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            text = value_text(item)
            parts.append(
                f"{key}: ({text})" if isinstance(item, dict) and item else f"{key}: {text}"
            )
        return "; ".join(parts) if parts else "none"
    return str(value)


def table(head: tuple[str, str], rows: Iterable[tuple[str, str]]) -> list[str]:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {cell(name)} | {cell(text)} |" for name, text in rows]
    return lines


# --- the sections ------------------------------------------------------------------------------


class Source:
    """One file the figures come from, for the table of sources."""

    def __init__(self, label: str, path: Path, root: Path, written_by: str) -> None:
        self.label, self.path, self.written_by = label, path, written_by
        self.relative = path.relative_to(root).as_posix()
        self.measured = NOT_MEASURED
        self.commit = ""

    def row(self) -> str:
        measured = self.measured if self.commit == "" else f"{self.measured}, commit {self.commit}"
        return f"| {self.label} | `{self.relative}` | {self.written_by} | {cell(measured)} |"


def bench_section(root: Path, source: Source) -> list[str]:
    lines = ["## Serving: LinkEdge vs MLServer (`make bench`)", ""]
    report = read_json(source.path)
    if report is None:
        return [*lines, "Not measured yet: run `make bench`.", ""]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bench.report import markdown  # the table bench/results/latest.md has, not a copy

    source.measured = f"{report.get('started', '?')} to {report.get('finished', '?')}"
    source.commit = commit_text(report.get("git"))
    lines += [
        f"Measured {source.measured}, commit {source.commit}, on "
        f"{(report.get('machine') or {}).get('cpus', '?')} cores; method in "
        "[performance.md](performance.md).",
        "",
        markdown(report).rstrip("\n"),
        "",
    ]
    plot = source.path.with_name("latest.png")
    if plot.is_file():
        lines += [f"![LinkEdge vs MLServer](../{plot.relative_to(root).as_posix()})", ""]
    return lines


# Bench cases with a report of their own: (file stem, title, renderer in bench/report.py).
BENCH_CASES = (
    (
        "slow-clients",
        "Serving beside 64 slow clients (`python -m bench --build --case slow-clients`)",
        "slow_clients_markdown",
    ),
    (
        "soak",
        "Soak: memory over millions of requests (`python -m bench --case soak`)",
        "soak_markdown",
    ),
    (
        "mqtt",
        "Predictions over MQTT beside HTTP (`python -m bench --case mqtt`)",
        "mqtt:mqtt_markdown",
    ),
    (
        "grpc",
        "Open Inference Protocol over gRPC: LinkEdge vs MLServer (`python -m bench --case grpc`)",
        "grpc_report:grpc_markdown",
    ),
)


def bench_case_section(root: Path, source: Source, title: str, renderer: str) -> list[str]:
    lines = [f"## {title}", ""]
    report = read_json(source.path)
    if report is None:
        return [*lines, f"Not measured yet: run {source.written_by}.", ""]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import importlib

    module, _, function = renderer.rpartition(":")  # "[module:]function" of bench/
    bench_report = importlib.import_module(f"bench.{module or 'report'}")  # its own table

    source.measured = f"{report.get('started', '?')} to {report.get('finished', '?')}"
    source.commit = commit_text(report.get("git"))
    lines += [
        f"Measured {source.measured}, commit {source.commit}.",
        "",
        getattr(bench_report, function)(report).rstrip("\n"),
        "",
    ]
    plot = source.path.with_suffix(".png")
    if plot.is_file():
        lines += [f"![{source.label}](../{plot.relative_to(root).as_posix()})", ""]
    return lines


def release_section(source: Source) -> list[str]:
    lines = ["## Model and release (`make release`)", ""]
    manifest = read_json(source.path)
    if manifest is None:
        return [*lines, NOT_MEASURED.capitalize() + " (or `make release`).", ""]
    source.measured = str(manifest.get("built_at") or file_time(source.path))
    source.commit = commit_text(release_commit(manifest.get("source_commit")))
    card = read_json(source.path.parent / "bundle" / "model_card.json") or {}
    metrics = card.get("metrics") or {}
    train = (card.get("data") or {}).get("train") or {}
    rows: list[tuple[str, str]] = [
        ("model version", str(manifest.get("version", "-"))),
        ("training data", value_text(train) if train else "-"),
        ("cost ratio, repeated nested CV mean (1.0 = predicting all negative)",
         value_text(manifest.get("cost_ratio"))),
        ("its standard deviation across repetitions", value_text(manifest.get("cost_ratio_std"))),
    ]  # fmt: skip
    repeated = metrics.get("repeated_cv")
    if repeated:
        rows.append(("repeated nested CV", str(repeated.get("method", "-"))))
        rows.append(
            (
                "cost ratio per repetition",
                ", ".join(f"{rep['cost_ratio']:.4f}" for rep in repeated.get("per_repetition", [])),
            )
        )
        rows.append(("95 % interval of the mean", value_text(repeated.get("cost_ratio_ci95"))))
        rows.append(("training + evaluation, s", value_text(repeated.get("seconds"))))
    if metrics.get("out_of_fold"):
        oof = {k: v for k, v in metrics["out_of_fold"].items() if k != "fold_thresholds"}
        rows.append(("out-of-fold confusion and cost (repetition 0)", value_text(oof)))
    if metrics.get("test"):
        rows.append(("official test set", value_text(metrics["test"])))
    rows += [
        ("`docker save` archive, bytes", value_text(manifest.get("archive_bytes"))),
        ("image build to published release, s", value_text(manifest.get("build_seconds"))),
    ]
    return [
        *lines,
        f"Built {source.measured}, commit {source.commit}.",
        "",
        *table(("figure", "value"), rows),
        "",
    ]


def fuzz_section(source: Source) -> list[str]:
    lines = ["## Fuzzing (`tests/fuzz`)", ""]
    summary = read_json(source.path)
    if summary is None:
        return [*lines, NOT_MEASURED.capitalize() + " (or `.venv/bin/pytest tests/fuzz`).", ""]
    source.measured = file_time(source.path)
    source.commit = "not recorded"
    rows = [
        ("cases", value_text(summary.get("total_cases"))),
        ("server errors (5xx)", value_text(summary.get("total_server_errors"))),
        ("status codes", value_text(summary.get("status_counts"))),
        ("seconds", value_text(summary.get("seconds"))),
    ]
    rows += [
        (f"cases of `{target}`", value_text(figures.get("cases")))
        for target, figures in (summary.get("targets") or {}).items()
    ]
    return [*lines, f"Written {source.measured}.", "", *table(("figure", "value"), rows), ""]


def scenario_section(name: str, source: Source) -> list[str]:
    title, about, meanings = SCENARIOS.get(name, (f"Scenario `{name}`", "", {}))
    lines = [f"## {title}", ""]
    record = read_json(source.path)
    if record is None:
        return [*lines, NOT_MEASURED.capitalize() + ".", ""]
    if not isinstance(record, dict):
        raise SystemExit(f"figures: {source.path} is not a JSON object: run the scenario again")
    figures = record.get("figures", record)  # the bare figures of an older file, too
    source.measured = str(record.get("finished") or file_time(source.path))
    source.commit = commit_text(record.get("git"))
    ordered = [key for key in meanings if key in figures]
    ordered += sorted(key for key in figures if key not in meanings)
    rows = [(meanings.get(key, f"`{key}`"), value_text(figures[key])) for key in ordered]
    intro = f"{about} " if about else ""
    return [
        *lines,
        f"{intro}Measured {source.measured}, commit {source.commit}.",
        "",
        *table(("figure", "value"), rows),
        "",
    ]


def scenario_of(figures_name: str) -> str:
    """The Molecule scenario that writes build/figures/<figures_name>.json (mqtt-serving: mqtt)."""
    return figures_name.split("-")[0]


def render(root: Path) -> str:
    bench = Source("bench", root / "bench" / "results" / "latest.json", root, "`make bench`")
    release = Source(
        "release", root / "build" / "releases" / "current" / "manifest.json", root,
        "`make release` (run by `make test`)",
    )  # fmt: skip
    fuzz = Source("fuzz", root / "build" / "fuzz" / "summary.json", root, "`make test`")
    figures_dir = root / "build" / "figures"
    names = list(SCENARIOS) + sorted(
        path.stem for path in figures_dir.glob("*.json") if path.stem not in SCENARIOS
    )
    scenarios = {
        name: Source(
            name,
            figures_dir / f"{name}.json",
            root,
            f"`make test` or `make molecule-{scenario_of(name)}`"
            if name in SCENARIOS
            else "`make test`",
        )
        for name in names
    }
    cases = {
        stem: Source(stem, root / "bench" / "results" / f"{stem}.json", root,
                     f"`python -m bench --case {stem}`")
        for stem, _title, _renderer in BENCH_CASES
    }  # fmt: skip
    body = bench_section(root, bench)  # each section fills in its source's date and commit
    for stem, title, renderer in BENCH_CASES:
        body += bench_case_section(root, cases[stem], title, renderer)
    for name in names:
        body += scenario_section(name, scenarios[name])
    body += release_section(release) + fuzz_section(fuzz)
    sources = [bench, *cases.values(), *scenarios.values(), release, fuzz]
    head = [
        "# Measured figures",
        "",
        "<!-- Generated by `python scripts/figures.py`: do not edit by hand. -->",
        "",
        "The one place for LinkEdge's measured figures: every other document links here. This",
        "page is generated by `python scripts/figures.py` from the files the runs below write;",
        "a source that is absent says so. Run `make test` (scenarios, fuzzing, release) or",
        "`make bench`, then `python scripts/figures.py`, and commit the result.",
        "",
        "| source | file | written by | measured |",
        "|---|---|---|---|",
        *(source.row() for source in sources),
        "",
    ]
    text = "\n".join(head + body).rstrip("\n") + "\n"
    # Paths the runs recorded (bundles, builds) are written relative to the repository: the
    # page must not name the machine it was made on.
    return text.replace(f"{root}/", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO, help="repository (default: this one)")
    parser.add_argument("--out", type=Path, help="output (default: ROOT/docs/figures.md)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when OUT is out of date"
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    out = args.out or root / "docs" / "figures.md"
    text = render(root)
    if args.check:
        current = out.read_text() if out.is_file() else ""
        if current != text:
            print(f"figures: {out} is out of date: run python scripts/figures.py", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    print(f"figures: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

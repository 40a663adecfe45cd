"""The load benchmark's harness in its few-second smoke mode against the real image.

Asserts the shape of what it records and that it refuses wrong answers; never a speed.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench.capture import CAPTURE_KEY, by_round, paired_drop

pytestmark = pytest.mark.docker
REPO = Path(__file__).resolve().parents[2]
BROKERS = ("durable", "periodic")  # bench/mqtt.py: the truck's broker, and saving less often


def run_bench(image: str, bundle: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--no-plot",
            "--image",
            image,
            "--bundle",
            str(bundle),
            "--out",
            str(out),
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_smoke_run_records_every_figure(built_image, real_bundle, tmp_path: Path) -> None:
    result = run_bench(built_image.tag, real_bundle.path, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["ok"] is True and report["mode"] == "smoke"
    assert report["verification"]["failures"] == []
    assert report["verification"]["checks"] >= 5
    assert set(report["load_average"]) >= {"start", "end", "min_1m_during", "max_1m_during"}
    assert report["machine"]["cpus"] >= 1 and report["git"]["commit"]
    server = report["servers"]["linkedge"]
    assert server["image_size_mb"] == round(built_image.size_bytes / 1e6, 1)
    assert 0 < server["cold_start_s"] < 60 and server["cold_start_runs_s"]
    memory = server["memory_after_load"]
    assert len(memory["processes"]) == 3  # gunicorn master + 2 workers
    assert 0 < memory["pss_mib"] <= memory["rss_sum_mib"]
    assert {case["key"] for case in report["cases"]} >= {"single-predict", "batch-100-binary"}
    for case in report["cases"]:
        figures = case["results"]["linkedge"]
        assert figures["requests"] > 0 and figures["non_2xx"] == 0
        expected_rows = figures["requests_per_s"] * case["rows"]
        assert figures["rows_per_s"] == pytest.approx(expected_rows, rel=1e-3)
        latency = figures["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        assert figures["server_cpu_us_per_request"] > 0
    table = (tmp_path / "latest.md").read_text()
    assert table.startswith("| case |") and "all answers correct" in table
    assert table in result.stdout


def test_wrong_answers_fail_the_run(built_image, tiny_bundle, tmp_path: Path) -> None:
    """The image serves the real model; expecting the tiny model's answers must fail."""
    result = run_bench(built_image.tag, tiny_bundle.path, tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["ok"] is False
    failures = report["verification"]["failures"]
    assert any("smoke vectors before load" in f and "expected probability" in f for f in failures)
    assert "bench: FAILED" in result.stderr


def test_mqtt_smoke_run_records_every_figure(built_image, real_bundle, tmp_path: Path) -> None:
    """``--case mqtt --smoke``: broker (durable, then periodic) + the image with its MQTT
    adapter + the sensor, a few seconds at a low rate; every message answered once."""
    from bench.broker import mosquitto_available

    if not mosquitto_available():
        pytest.skip("no Mosquitto broker (apt-get install mosquitto mosquitto-clients)")
    result = run_bench(built_image.tag, real_bundle.path, tmp_path, "--case", "mqtt")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "mqtt.json").read_text())
    assert report["ok"] is True and report["case"] == "mqtt" and report["mode"] == "smoke"
    assert report["verification"]["failures"] == []
    assert report["verification"]["checks"] >= 8  # MQTT + HTTP, before and after, per broker
    cases = {case["key"]: case for case in report["mqtt_cases"]}
    assert set(cases) == {
        f"{kind}-{broker}" for kind in ("single-200", "batch-100-20") for broker in BROKERS
    }
    for case in cases.values():
        assert case["sent"] > 0 and case["lost"] == 0 and case["duplicated"] == 0
        assert case["answered"] == case["sent"] and case["errors"] == 0
        assert case["rows"] == case["sent"] * case["batch"]
        latency = case["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        assert case["server_cpu_us_per_message"] > 0 and case["broker_cpu_cores"] >= 0
        assert case["sensor_cpu_cores"] >= 0 and case["other_cpu_cores"] >= 0
        assert case["broker_rss_mib"] > 0 and case["container_pss_mib"] > 0
    batch = cases["batch-100-20-periodic"]
    assert batch["rows_per_s"] == pytest.approx(batch["answered_per_s"] * 100, rel=1e-3)
    http = report["http"]
    assert http["key"] == "single-predict" and http["requests"] > 0 and http["non_2xx"] == 0
    assert set(report["brokers"]) == set(BROKERS)
    assert "autosave_on_changes true" in report["brokers"]["durable"]["config"]
    assert "autosave_interval 1" in report["brokers"]["durable"]["config"]
    for memory in (entry["memory_after_load"] for entry in report["servers"].values()):
        assert len(memory["processes"]) == 3  # gunicorn master + 2 workers
    for broker in BROKERS:  # the smoke rate is far below the target's: not judged
        assert report["target"][broker]["met"] is None
    table = (tmp_path / "mqtt.md").read_text()
    assert table.startswith("| case |") and "all answers correct" in table
    assert "HTTP 1 record" in table and table in result.stdout


def test_grpc_smoke_run_records_every_figure(built_image, real_bundle, tmp_path: Path) -> None:
    """``--case grpc --smoke``: ModelInfer over gRPC (bench/grpc_load.py) for 1 record and
    100 rows beside LinkEdge's HTTP binary figure, and MLServer's gRPC when build/bench-venv
    is there already; every answer verified, no error."""
    pytest.importorskip("grpc")
    from bench.tools import bench_venv_ready

    with_mlserver = bench_venv_ready()
    extra = ("--mlserver",) if with_mlserver else ()
    result = run_bench(built_image.tag, real_bundle.path, tmp_path, "--case", "grpc", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "grpc.json").read_text())
    assert report["ok"] is True and report["case"] == "grpc" and report["mode"] == "smoke"
    assert report["verification"]["failures"] == []
    # HTTP and gRPC smoke vectors before and after, each body's gRPC and HTTP answer
    assert report["verification"]["checks"] >= 8
    expected = {"linkedge-grpc", "linkedge-http"} | (
        {"mlserver-1t-grpc"} if with_mlserver else set()
    )
    cases = {case["key"]: case for case in report["grpc_cases"]}
    assert set(cases) == {"single-c2", "batch-100-c2"}
    for case in cases.values():
        assert case["concurrency"] == 2 and case["channels"] == 2
        assert set(case["results"]) == expected
        for key, figures in case["results"].items():
            assert figures["requests"] > 0 and figures["requests_per_s"] > 0
            expected_rows = figures["requests_per_s"] * case["rows"]
            assert figures["rows_per_s"] == pytest.approx(expected_rows, rel=1e-3)
            latency = figures["latency_ms"]
            assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
            assert figures["server_cpu_us_per_request"] > 0
            if key.endswith("-grpc"):
                assert figures["client"] == "python-grpcio"
                assert figures["errors"] == {} and figures["mismatched"] == 0
                assert figures["client_cpu_cores"] > 0
            else:
                assert figures["client"] == "wrk" and figures["non_2xx"] == 0
    server = report["servers"]["linkedge"]
    assert server["grpc_port"] > 0 and len(server["memory_after_load"]["processes"]) == 3
    if with_mlserver:
        assert set(report["ratios"]) == set(cases)
    table = (tmp_path / "grpc.md").read_text()
    assert table.startswith("| rows |") and "all answers correct" in table
    assert "caps the absolute gRPC figures" in table and table in result.stdout


def test_capture_smoke_run_records_the_drop_and_a_whole_spool(
    built_image, real_bundle, tmp_path: Path
) -> None:
    """``--case capture --smoke``: the image with capture off and on; both answer right, the
    killed containers' spool is recovered and read back whole."""
    extra = ("--case", "capture", "--capture-rate", "1")  # every answer: records for sure
    result = run_bench(built_image.tag, real_bundle.path, tmp_path, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "capture.json").read_text())
    assert report["ok"] is True and report["verification"]["failures"] == []
    capture = report["capture"]
    entry = capture["cases"]["single-predict"]
    assert entry["requests_per_s_off"] > 0 and entry["requests_per_s_on"] > 0
    (case,) = [case for case in report["cases"] if case["key"] == "single-predict"]
    off, on = (by_round(case["results"][key]) for key in ("linkedge", CAPTURE_KEY))
    assert entry["alternating_drop"] == paired_drop(off, on) is not None
    # and as many rounds with both servers loaded at once: the target's drop is theirs
    together = entry["together"]
    assert together["rounds"] == report["settings"]["rounds"] == len(together["rounds_drop"])
    at_equal_cpu = together["rounds_drop_at_equal_cpu"]
    assert entry["drop"] == pytest.approx(statistics.median(at_equal_cpu), abs=1e-4)
    assert together["requests_per_s_off"] > 0 and together["requests_per_s_on"] > 0
    assert together["cpu_cores_off"] > 0 and together["cpu_cores_on"] > 0
    assert capture["rate"] == 1.0 and capture["segments"] >= 1 and capture["bytes"] > 0
    # rate 1: every row answered by the capturing server (its own counts) was captured
    assert capture["rows_captured"] == capture["rows_answered"] > 0
    assert capture["records"] >= 0.5 * entry["requests_per_s_on"]  # about a second of load
    table = (tmp_path / "capture.md").read_text()
    assert table.count("| single-predict |") == 2 and "Both servers at once" in table

"""Data capture in the served app: every "pos" answer and a sample of the others, with inputs,
outputs, model version and time, into the spool; its state on /metrics; settings from the
environment with errors that name the variable."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inference_image.bundle import ModelBundle
from inference_image.capture_spool import read_segment
from inference_image.serving.app import create_app
from inference_image.serving.capture import CaptureSettings, ChosenRows, RowSampler, SpoolWriter
from inference_image.serving.config import ServingConfig
from tests.conftest import synthetic_aps

from .test_app import metric_samples, post_json
from .test_drift_metrics import records


def captured(directory: Path, client) -> list[dict]:
    client.application.extensions["linkedge"]["endpoints"].observers["capture"].seal()
    return [
        item for path in sorted((directory / "sealed").iterdir()) for item in read_segment(path)
    ]


def serve(tiny_bundle: ModelBundle, directory: Path, rate: float):
    # Room for every row the tests send: none is dropped for the budget.
    settings = CaptureSettings(directory, rate=rate, budget_bytes=1 << 23, segment_bytes=1 << 16)
    return create_app(tiny_bundle, ServingConfig(capture=settings)).test_client()


def test_every_pos_answer_is_captured_with_what_was_answered(tiny_bundle, tmp_path) -> None:
    client = serve(tiny_bundle, tmp_path, rate=0.0)
    rows, _ = synthetic_aps(300, seed=9)
    answer = post_json(client, "/predict", {"instances": records(rows)}).get_json()
    positives = [i for i, p in enumerate(answer["predictions"]) if p["label"] == "pos"]
    assert positives, "the rows should include pos answers"
    kept = captured(tmp_path, client)
    assert len(kept) == len(positives)
    for item, index in zip(kept, positives, strict=True):
        assert item["label"] == "pos" and item["sampled"] == "pos"
        assert item["probability"] == answer["predictions"][index]["probability"]
        assert item["model_version"] == tiny_bundle.version and item["time"] > 1.7e9
        inputs = np.array([np.nan if v is None else v for v in item["inputs"]], dtype=np.float32)
        np.testing.assert_array_equal(inputs, rows[index])  # float32, missing as null


def test_the_rate_samples_the_other_answers(tiny_bundle, tmp_path) -> None:
    client = serve(tiny_bundle, tmp_path, rate=0.5)
    rows, _ = synthetic_aps(2000, seed=10)
    answer = post_json(client, "/predict", {"instances": records(rows)}).get_json()
    negatives = sum(p["label"] == "neg" for p in answer["predictions"])
    kept = captured(tmp_path, client)
    sampled = sum(item["sampled"] == "rate" for item in kept)
    assert 0.4 * negatives < sampled < 0.6 * negatives
    samples = metric_samples(client)
    assert samples[("linkedge_capture_records_total", ())] == len(kept)
    assert samples[("linkedge_capture_spool_bytes", ())] > 0
    assert samples[("linkedge_capture_spool_budget_bytes", ())] == 1 << 23
    assert samples[("linkedge_capture_dropped_segments_total", ())] == 0


def test_the_sampler_takes_each_row_alike_at_the_rate_across_requests() -> None:
    """Drawn as gaps, the sample is still each row on its own with probability RATE: the
    share, and every position of a request alike, over requests of uneven sizes."""
    sampler = RowSampler(0.05, np.random.default_rng(7))
    sizes = np.random.default_rng(8).integers(1, 200, size=20_000)
    per_position = np.zeros(200)
    total = 0
    for size in sizes.tolist():
        picks = sampler.sample(size)
        assert picks == sorted(set(picks)) and all(0 <= pick < size for pick in picks)
        per_position[picks] += 1
        total += len(picks)
    rows = int(sizes.sum())
    assert abs(total / rows - 0.05) < 0.002  # about 100,000 rows sampled of 2,000,000
    # each position of a request at the rate alike: positions 0-49 as often as 50-99, per
    # request that has the position
    present = np.array([(sizes > position).sum() for position in range(200)])
    shares = per_position[:100] / present[:100]
    assert abs(shares[:50].mean() - shares[50:].mean()) < 0.003
    assert RowSampler(0.0, np.random.default_rng()).sample(1000) == []
    assert RowSampler(1.0, np.random.default_rng()).sample(5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LINKEDGE_CAPTURE_RATE": "2"}, "LINKEDGE_CAPTURE_RATE must be between 0 and 1"),
        ({"LINKEDGE_CAPTURE_RATE": "often"}, "LINKEDGE_CAPTURE_RATE must be a float"),
        ({"LINKEDGE_CAPTURE_BUDGET_BYTES": "4096"}, "LINKEDGE_CAPTURE_BUDGET_BYTES"),
        ({"LINKEDGE_CAPTURE_SEGMENT_SECONDS": "0"}, "LINKEDGE_CAPTURE_SEGMENT_SECONDS"),
    ],
)
def test_bad_capture_settings_name_the_variable(tmp_path, environ, message) -> None:
    with pytest.raises(ValueError, match=message):
        ServingConfig.from_env({"LINKEDGE_CAPTURE_DIR": str(tmp_path), **environ})


def test_no_directory_no_capture(tmp_path) -> None:
    assert ServingConfig.from_env({}).capture is None
    settings = ServingConfig.from_env({"LINKEDGE_CAPTURE_DIR": str(tmp_path)}).capture
    assert settings is not None and settings.rate == 0.01


def test_requests_on_the_check_port_are_not_captured_nor_counted_for_drift(
    tiny_bundle, tmp_path
) -> None:
    """inference_container smoke-checks a new container on its check port: not traffic."""
    settings = CaptureSettings(tmp_path, rate=1.0, budget_bytes=1 << 20, segment_bytes=1 << 16)
    app = create_app(tiny_bundle, ServingConfig(capture=settings, check_port=9999))
    client = app.test_client()
    rows, _ = synthetic_aps(10, seed=12)
    body = {"instances": records(rows)}
    checked = client.post("/predict", json=body, base_url="http://127.0.0.1:9999")
    assert checked.status_code == 200
    assert metric_samples(client)[("linkedge_drift_window_rows", ())] == 0
    served = client.post("/predict", json=body, base_url="http://127.0.0.1:8080")
    assert served.status_code == 200
    assert len(captured(tmp_path, client)) == 10
    assert metric_samples(client)[("linkedge_drift_window_rows", ())] == 10


def test_the_check_port_comes_from_the_environment(tmp_path) -> None:
    assert ServingConfig.from_env({"LINKEDGE_CHECK_PORT": "18081"}).check_port == 18081
    with pytest.raises(ValueError, match="LINKEDGE_CHECK_PORT"):
        ServingConfig.from_env({"LINKEDGE_CHECK_PORT": "0"})


def test_a_quiet_service_seals_its_old_segment_without_another_request(
    tiny_bundle, tmp_path
) -> None:
    settings = CaptureSettings(
        tmp_path, rate=1.0, budget_bytes=1 << 20, segment_bytes=1 << 16, segment_seconds=1
    )
    client = create_app(tiny_bundle, ServingConfig(capture=settings)).test_client()
    rows, _ = synthetic_aps(7, seed=21)
    assert post_json(client, "/predict", {"instances": records(rows)}).status_code == 200
    sealed = tmp_path / "sealed"
    deadline = time.monotonic() + 10
    while not list(sealed.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)  # no request: only the sealing timer can seal it
    segments = list(sealed.iterdir())
    assert len(segments) == 1, "the old segment was not sealed without a request"
    assert len(read_segment(segments[0])) == 7


def test_rows_beyond_the_writers_queue_are_lost_and_counted_never_waited_for(
    tmp_path,
) -> None:
    spool = CaptureSettings(tmp_path, budget_bytes=1 << 20, segment_bytes=1 << 16).spool()
    lost: list[tuple[int, str]] = []
    written: list[int] = []
    writer = SpoolWriter(spool, "v1", written.append, lambda n, why: lost.append((n, why)), 10)
    rows = np.ones((8, 3), dtype=np.float32)

    def chosen(count: int) -> ChosenRows:
        return ChosenRows(1.0, rows[:count], np.full(count, 0.9), np.ones(count, dtype=bool))

    with spool._lock:  # the disk is slow: the writer waits on the spool
        assert writer.submit(chosen(8)) == 8
        started = time.monotonic()
        assert writer.submit(chosen(5)) == 0  # beyond the queue: lost at once
        assert time.monotonic() - started < 0.5
        assert writer.submit(chosen(2)) == 2
    assert writer.flush(10)
    assert lost == [(5, "queue_full")]
    assert sum(written) == 10
    assert len(read_segment(spool.seal())) == 10


def test_rows_still_queued_when_the_process_exits_are_written(tmp_path) -> None:
    """A worker's graceful stop (sys.exit) writes what waits for the writer thread."""
    program = f"""
import sys
import numpy as np
from pathlib import Path
from inference_image.serving.capture import CaptureSettings, RequestCapture
capture = RequestCapture(CaptureSettings(Path({str(tmp_path)!r}), rate=1.0), "v1")
for _ in range(20):
    capture.observe(np.ones((500, 170)), np.full(500, 0.1), np.zeros(500, dtype=bool))
sys.exit(0)
"""
    subprocess.run([sys.executable, "-c", program], check=True, cwd=Path(__file__).parents[2])
    spool = CaptureSettings(tmp_path).spool()
    spool.recover()  # the process's open segment, as the service's next start seals it
    assert sum(len(read_segment(path)) for path in spool.sealed()) == 10_000


def test_a_backlog_is_written_in_pieces_so_no_segment_grows_past_its_size(tmp_path) -> None:
    """A writer far behind (a slow disk) appends what waits in pieces: segments stay near
    segment_bytes, never one huge segment the depot's upload limit would refuse."""
    spool = CaptureSettings(tmp_path, budget_bytes=1 << 24, segment_bytes=1 << 16).spool()
    written: list[int] = []
    writer = SpoolWriter(spool, "v1", written.append, lambda n, why: None)
    rows = np.random.default_rng(3).random((3000, 170)).astype(np.float32)
    with spool._lock:  # the disk stalls while 3,000 rows arrive
        assert writer.submit(ChosenRows(1.0, rows, np.full(3000, 0.9), np.ones(3000, bool))) > 0
    assert writer.flush(30)
    spool.seal()
    sizes = [path.stat().st_size for path in spool.sealed()]
    assert sum(written) == 3000 and len(sizes) > 10
    assert max(sizes) < 2 * (1 << 16), sizes


def test_one_request_larger_than_the_queue_is_still_taken_when_nothing_waits(tmp_path) -> None:
    spool = CaptureSettings(tmp_path, budget_bytes=1 << 24, segment_bytes=1 << 16).spool()
    lost: list[tuple[int, str]] = []
    writer = SpoolWriter(spool, "v1", lambda n: None, lambda n, why: lost.append((n, why)), 10)
    rows = np.ones((50, 3), dtype=np.float32)
    assert writer.submit(ChosenRows(1.0, rows, np.full(50, 0.9), np.ones(50, bool))) == 50
    assert writer.close(10)
    assert lost == []


def test_rows_written_before_a_failed_seal_count_as_captured_and_come_back(
    tmp_path, caplog
) -> None:
    """The seal after a write fails (here: `sealed` is a file, so the segment cannot be moved
    into it): the rows are on disk, so they count as captured, not lost, and the next start's
    recovery seals them whole."""
    spool = CaptureSettings(tmp_path, budget_bytes=1 << 20, segment_bytes=1024).spool()
    (tmp_path / "sealed").rmdir()
    (tmp_path / "sealed").write_text("not a directory\n")
    lost: list[tuple[int, str]] = []
    written: list[int] = []
    writer = SpoolWriter(spool, "v1", written.append, lambda n, why: lost.append((n, why)))
    rows = np.ones((4, 170), dtype=np.float32)  # about 4 KB: more than a segment
    with caplog.at_level("ERROR", logger="linkedge.serving"):
        for _ in range(3):
            assert writer.submit(ChosenRows(1.0, rows, np.full(4, 0.9), np.ones(4, bool))) == 4
            assert writer.flush(10)
    assert lost == [] and sum(written) == 12
    logged = [r for r in caplog.records if "could not be sealed" in r.getMessage()]
    assert len(logged) == 1  # once per kind, not per segment
    (tmp_path / "sealed").unlink()
    (tmp_path / "sealed").mkdir()
    CaptureSettings(tmp_path).spool().recover()  # the next start
    assert sum(len(read_segment(path)) for path in spool.sealed()) == 12

"""Captured rows as training data: maintenance windows label them by truck and time, rows
outside a window or in windows that disagree are counted and left out, a bad labels file is a
one-line error, and the captured files are part of the build's input fingerprint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference_image.capture_spool import CaptureSpool
from inference_image.captured import LABELS_FILE, load_captured, load_labels
from inference_image.data import DataFormatError
from inference_image.release import input_fingerprint
from inference_image.schema import APS_FEATURES
from inference_image.training import TrainingParams

from .aps_files import synthetic_aps, write_aps_file

REPO = Path(__file__).resolve().parents[2]
WIDTH = len(APS_FEATURES)
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def capture(data_dir: Path, truck: str, rows: np.ndarray, times: list[float]) -> None:
    spool = CaptureSpool(data_dir / "captured" / truck, 1 << 24, 1 << 16)
    for row, moment in zip(rows, times, strict=True):
        spool.append([{"time": moment, "inputs": row.astype(np.float32), "label": "neg"}])
    spool.seal()
    # collect keeps only the sealed segments, flat in the truck's directory
    for path in (spool.directory / "sealed").iterdir():
        path.rename(spool.directory / path.name)
    for name in ("sealed", "open"):
        (spool.directory / name).rmdir()


def labels(data_dir: Path, text: str) -> Path:
    path = data_dir / LABELS_FILE
    path.write_text("truck,start,end,aps_failure\n" + text)
    return path


def test_windows_label_rows_by_truck_and_time(tmp_path: Path) -> None:
    rows, _ = synthetic_aps(8, seed=1)
    capture(tmp_path, "truck-1", rows[:4], [T0, T0 + 100, T0 + 200, T0 + 5000])
    capture(tmp_path, "truck-2", rows[4:], [T0, T0 + 100, T0 + 200, T0 + 300])
    labels(
        tmp_path,
        f"truck-1,2027-01-15T08:00:00Z,{T0 + 150},yes\n"  # rows 0 and 1: pos
        f"truck-1,{T0 + 150},{T0 + 250},no\n"  # row 2: neg; row 3 (T0+5000): unlabelled
        f"truck-2,{T0},{T0 + 300},no\n"
        f"truck-2,{T0 + 250},{T0 + 400},yes\n",  # row 7 (T0+300): both: conflicting
    )
    captured = load_captured(tmp_path, WIDTH)
    assert captured.rows == 6 and captured.labels.tolist() == [1, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(captured.features, rows[[0, 1, 2, 4, 5, 6]])  # NaN kept
    record = captured.record
    assert (record["segments"], record["records"]) == (2, 8)
    assert (record["unlabelled"], record["conflicting"], record["positives"]) == (1, 1, 2)
    assert record["trucks"] == ["truck-1", "truck-2"] and record["label_windows"] == 4


def test_no_captured_data_is_no_rows(tmp_path: Path) -> None:
    captured = load_captured(tmp_path, WIDTH)
    assert captured.rows == 0 and captured.features.shape == (0, WIDTH)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("truck-1,2027-01-15,2027-01-16,maybe\n", r"line 2: aps_failure 'maybe' is not yes or no"),
        ("truck-1,yesterday,2027-01-16,yes\n", r"line 2: 'yesterday' is not a time"),
        ("truck-1,2027-01-16,2027-01-15,no\n", r"line 2: the window ends before it starts"),
        ("truck-1,nan,2027-01-15,no\n", r"line 2: 'nan' is not a time"),
        (",2027-01-15,2027-01-16,no\n", r"line 2: no truck"),
    ],
)
def test_a_bad_label_line_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataFormatError, match=message):
        load_labels(labels(tmp_path, text))


def test_a_labels_file_without_its_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / LABELS_FILE
    path.write_text("truck,when,failed\n")
    with pytest.raises(DataFormatError, match="missing start, end, aps_failure"):
        load_labels(path)


def test_captured_files_change_the_input_fingerprint(tmp_path: Path) -> None:
    from inference_image.cli import _data_files

    features, labels_ = synthetic_aps(50, seed=2)
    write_aps_file(tmp_path / "aps_failure_training_set.csv", features, labels_)
    before = input_fingerprint(_data_files(tmp_path), {})
    capture(tmp_path, "truck-1", features[:3], [T0, T0 + 1, T0 + 2])
    with_rows = input_fingerprint(_data_files(tmp_path), {})
    labels(tmp_path, f"truck-1,{T0},{T0 + 10},no\n")
    with_labels = input_fingerprint(_data_files(tmp_path), {})
    assert len({before["fingerprint"], with_rows["fingerprint"], with_labels["fingerprint"]}) == 3
    assert any(name.startswith("captured/truck-1/") for name in with_rows["data"])


def test_training_uses_the_labelled_captured_rows(tmp_path: Path) -> None:
    from inference_image.train_bundle import train_to_bundle

    features, labels_ = synthetic_aps(400, seed=3)
    write_aps_file(tmp_path / "aps_failure_training_set.csv", features[:300], labels_[:300])
    capture(tmp_path, "truck-1", features[300:], [T0 + i for i in range(100)])
    window = "\n".join(
        f"truck-1,{T0 + i},{T0 + i},{'yes' if labels_[300 + i] else 'no'}" for i in range(90)
    )
    labels(tmp_path, window + "\n")
    params = TrainingParams(n_estimators=10, max_depth=3, nthread=1)
    bundle = train_to_bundle(tmp_path, tmp_path / "bundle", params, evaluate=False).bundle
    card = bundle.card
    # The drift reference is the official rows only: captured ones lean towards positives.
    assert bundle.reference is not None and bundle.reference["rows"] == 300
    assert card["data"]["captured"]["rows"] == 90
    assert card["data"]["captured"]["unlabelled"] == 10
    assert card["data"]["captured"]["positives"] == int(labels_[300:390].sum())
    assert card["data"]["train"]["rows"] == 390


def test_a_bad_labels_file_stops_train_with_one_line(tmp_path: Path) -> None:
    features, labels_ = synthetic_aps(50, seed=4)
    write_aps_file(tmp_path / "aps_failure_training_set.csv", features, labels_)
    labels(tmp_path, "truck-1,2027-01-15,2027-01-16,maybe\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inference_image",
            "train",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "bundle"),
            "--skip-evaluation",
            "--n-estimators",
            "5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "aps_failure 'maybe' is not yes or no" in lines[0], lines


def test_the_gate_compares_on_the_same_rows_train_used(tmp_path: Path) -> None:
    """`compare` (the build's paired gate) reads the captured rows as `train` did: the
    dataset identity it checks the recorded fold plan against is the same."""
    import json

    from inference_image.captured import training_data
    from inference_image.train_bundle import train_to_bundle

    features, labels_ = synthetic_aps(500, seed=5)
    write_aps_file(tmp_path / "aps_failure_training_set.csv", features[:400], labels_[:400])
    capture(tmp_path, "truck-1", features[400:], [T0 + i for i in range(100)])
    labels(tmp_path, f"truck-1,{T0},{T0 + 1000},no\n")
    combined, record = training_data(tmp_path, WIDTH)
    assert combined.rows == 500 and record["rows"] == 100
    params = TrainingParams(n_estimators=8, max_depth=3, nthread=1, repetitions=2, outer_folds=3)
    bundle = train_to_bundle(tmp_path, tmp_path / "bundle", params).bundle
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inference_image",
            "compare",
            "--champion",
            str(bundle.path),
            "--challenger",
            str(bundle.path),
            "--data",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    comparison = json.loads(result.stdout)
    assert comparison["refused"] is False
    # The same rows, folds and seeds as at training: the card's figures are reused as they are
    # (other rows would have been evaluated again).
    assert comparison["challenger"]["source"] == "recorded in the model card"

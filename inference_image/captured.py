"""Rows the trucks captured, labelled by maintenance records, as more training data.

Inside the data directory (``--data``), beside the official files::

    captured/<truck>/<segment>.jsonl   what `collect` brought home (inference_image.capture_spool)
    maintenance-labels.csv             truck,start,end,aps_failure

A captured row is labelled when one maintenance window of its truck contains its time: ``yes``
(``pos``, ``1``, ``true``) for an APS failure, ``no`` (``neg``, ``0``, ``false``) for none;
``start`` and ``end`` are ISO 8601 times (a time without a zone is UTC) or seconds since the
epoch, both included. A row inside no window is unlabelled and one inside windows that
disagree is conflicting: neither is used, both are counted in the model card. Every file is
part of the build's input fingerprint, so new captured data or labels make a new release.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .capture_spool import SEGMENT_SUFFIX, SpoolError, segment_records
from .data import ApsDataset, DataFormatError, find_training_file, load_aps_csv

CAPTURED_DIR = "captured"
LABELS_FILE = "maintenance-labels.csv"
LABEL_COLUMNS = ("truck", "start", "end", "aps_failure")
YES, NO = ("yes", "pos", "1", "true"), ("no", "neg", "0", "false")


@dataclass(frozen=True)
class Window:
    truck: str
    start: float
    end: float
    failure: bool


@dataclass(frozen=True)
class CapturedRows:
    features: np.ndarray  # (rows, features) float32, NaN = missing
    labels: np.ndarray  # (rows,) int8, 1 = pos
    record: dict[str, Any]  # for the model card

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


def segment_files(data_dir: Path) -> list[Path]:
    """Every collected segment, sorted (captured/<truck>/<segment>)."""
    return sorted((Path(data_dir) / CAPTURED_DIR).glob(f"*/*{SEGMENT_SUFFIX}"))


def captured_files(data_dir: Path) -> list[Path]:
    """The labels file and every segment, sorted: what the input fingerprint covers."""
    labels = Path(data_dir) / LABELS_FILE
    return ([labels] if labels.is_file() else []) + segment_files(data_dir)


def fingerprint_name(path: Path) -> str:
    """A data file's name in the input fingerprint: ``captured/<truck>/<segment>`` for a
    captured segment (segment names are unique per truck only), the file's name otherwise."""
    if path.parts[-3:-2] == (CAPTURED_DIR,):
        return "/".join(path.parts[-3:])
    return path.name


def _time(text: str, path: Path, line: int) -> float:
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
        raise DataFormatError(path, f"{text!r} is not a time", line)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DataFormatError(
            path,
            f"{text!r} is not a time (ISO 8601, e.g. 2026-11-30T08:00:00Z, or seconds since "
            "the epoch)",
            line,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def load_labels(path: Path) -> list[Window]:
    """The maintenance windows of PATH; DataFormatError naming the line for a bad one."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in LABEL_COLUMNS if name not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(
                path,
                f"the header must name {', '.join(LABEL_COLUMNS)}; missing {', '.join(missing)}",
                1,
            )
        windows = []
        for number, row in enumerate(reader, start=2):
            answer = (row["aps_failure"] or "").strip().lower()
            if answer not in YES + NO:
                raise DataFormatError(
                    path, f"aps_failure {row['aps_failure']!r} is not yes or no", number
                )
            start = _time(row["start"] or "", path, number)
            end = _time(row["end"] or "", path, number)
            if end < start:
                raise DataFormatError(path, "the window ends before it starts", number)
            truck = (row["truck"] or "").strip()
            if not truck:
                raise DataFormatError(path, "no truck", number)
            windows.append(Window(truck, start, end, answer in YES))
    return windows


def load_captured(data_dir: Path, feature_count: int) -> CapturedRows:
    """The labelled captured rows of DATA_DIR (none when it has no captured data)."""
    data_dir = Path(data_dir)
    segments = segment_files(data_dir)
    labels_path = data_dir / LABELS_FILE
    windows = load_labels(labels_path) if labels_path.is_file() else []
    digest = hashlib.sha256(labels_path.read_bytes() if labels_path.is_file() else b"")
    by_truck: dict[str, list[Window]] = {}
    for window in windows:
        by_truck.setdefault(window.truck, []).append(window)
    features: list[list[float]] = []
    labels: list[int] = []
    counts = {"segments": 0, "records": 0, "unlabelled": 0, "conflicting": 0}
    for path in segments:
        truck = path.parent.name
        data = path.read_bytes()  # read once: parsed and digested
        try:
            records = segment_records(data, path)
        except (SpoolError, ValueError) as exc:
            raise DataFormatError(path, f"not a whole capture segment: {exc}") from None
        counts["segments"] += 1
        digest.update(data)
        for index, item in enumerate(records):
            counts["records"] += 1
            inputs = item.get("inputs")
            if not isinstance(inputs, list) or len(inputs) != feature_count:
                raise DataFormatError(path, f"record {index} has no {feature_count} inputs")
            moment = float(item.get("time", 0))
            verdicts = {w.failure for w in by_truck.get(truck, ()) if w.start <= moment <= w.end}
            if not verdicts:
                counts["unlabelled"] += 1
                continue
            if len(verdicts) > 1:
                counts["conflicting"] += 1
                continue
            features.append([np.nan if value is None else float(value) for value in inputs])
            labels.append(1 if verdicts.pop() else 0)
    rows = np.array(features, dtype=np.float32).reshape(len(features), feature_count)
    label_array = np.array(labels, dtype=np.int8)
    record: dict[str, Any] = {
        **counts,
        "rows": len(labels),
        "positives": int(label_array.sum()),
        "trucks": sorted({path.parent.name for path in segments}),
        # The labels and every segment: the captured rows' identity.
        "sha256": digest.hexdigest(),
        "labels_file": LABELS_FILE if labels_path.is_file() else None,
        "label_windows": len(windows),
    }
    return CapturedRows(rows, label_array, record)


def training_data(data_dir: Path, feature_count: int) -> tuple[ApsDataset, dict[str, Any]]:
    """The official training file plus the labelled captured rows (in that order), and the
    captured rows' record: what `train` trains on and the gate's `compare` cross-validates on,
    alike. With captured rows the dataset's identity (its ``sha256``, which the fold plans
    record) covers the official file, the segments and the labels."""
    official = load_aps_csv(find_training_file(data_dir), require_labels=True)
    captured = load_captured(data_dir, feature_count)
    if not captured.rows:
        return official, captured.record
    identity = hashlib.sha256(official.sha256.encode())
    identity.update(captured.record["sha256"].encode())
    combined = ApsDataset(
        features=np.concatenate([official.features, captured.features]),
        labels=np.concatenate([official.labels, captured.labels]),  # type: ignore[list-item]
        source=official.source,
        sha256=identity.hexdigest(),
    )
    return combined, captured.record

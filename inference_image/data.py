"""Read the APS Failure at Scania Trucks files in their official format.

The official files have a 20-line licence preamble, a header line, CRLF line endings,
``na`` for missing values and a ``class`` column of ``neg``/``pos``. The unlabeled request
sample has the header without ``class`` and no preamble. Every format problem is reported
as a :class:`DataFormatError` naming the file, line and column.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import sha256_file
from .schema import APS_FEATURES, LABEL_COLUMN, LABELS, MISSING_TOKEN

TRAIN_FILES = ("aps_failure_training_set.csv", "aps_failure_training_set.sample.csv")
TEST_FILE = "aps_failure_test_set.csv"
REQUEST_SAMPLE_FILE = "aps_failure_test_set.unlabeled-sample.csv"
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "aps"
MAX_PREAMBLE_LINES = 40
FLOAT32_MAX = float(np.finfo(np.float32).max)


class DataFormatError(ValueError):
    """A data file is missing or not in the APS format."""

    def __init__(
        self, path: Path, message: str, line: int | None = None, column: str | None = None
    ):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.column = column


@dataclass(frozen=True)
class ApsDataset:
    features: np.ndarray  # (rows, 170) float32, NaN = missing
    labels: np.ndarray | None  # (rows,) int8, 1 = pos; None for unlabeled files
    source: Path
    sha256: str

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def positives(self) -> int:
        return int(self.labels.sum()) if self.labels is not None else 0


def default_data_dir() -> Path | None:
    """``LINKEDGE_DATA_DIR``, else ``../shared/aps`` beside the checkout when it exists."""
    configured = os.environ.get("LINKEDGE_DATA_DIR")
    if configured:
        return Path(configured)
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None


def find_training_file(data_dir: Path) -> Path:
    """The full official training file if present, else the shared sample."""
    for name in TRAIN_FILES:
        candidate = Path(data_dir) / name
        if candidate.is_file():
            return candidate
    raise DataFormatError(
        Path(data_dir),
        f"no training file ({' or '.join(TRAIN_FILES)}); "
        "pass --data DIR or fetch the official files with `python -m inference_image download`",
    )


def find_test_file(data_dir: Path) -> Path | None:
    """The official labeled test file, when present."""
    candidate = Path(data_dir) / TEST_FILE
    return candidate if candidate.is_file() else None


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read().splitlines()
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _find_header(path: Path, lines: list[str]) -> tuple[int, bool]:
    """Index of the header line and whether it has the class column."""
    for index, line in enumerate(lines[:MAX_PREAMBLE_LINES]):
        first = line.split(",", 1)[0].strip()
        if first in (LABEL_COLUMN, APS_FEATURES[0]):
            return index, first == LABEL_COLUMN
    raise DataFormatError(
        path,
        f"no header line in the first {MAX_PREAMBLE_LINES} lines "
        f"(expected one starting with '{LABEL_COLUMN},{APS_FEATURES[0]}' or '{APS_FEATURES[0]}')",
    )


def _check_header(path: Path, header: list[str], labeled: bool, line_number: int) -> None:
    expected = ([LABEL_COLUMN] if labeled else []) + list(APS_FEATURES)
    names = [name.strip() for name in header]
    if names == expected:
        return
    for position, (got, want) in enumerate(zip(names, expected, strict=False), start=1):
        if got != want:
            raise DataFormatError(
                path, f"header has '{got}' where '{want}' belongs", line_number, f"{position}"
            )
    raise DataFormatError(
        path, f"header has {len(names)} columns, expected {len(expected)}", line_number
    )


def _parse_value(text: str) -> float:
    if text == MISSING_TOKEN:
        return math.nan
    return float(text)


def _locate_bad_value(path: Path, fields: list[str], line_number: int, offset: int) -> None:
    for position, text in enumerate(fields):
        column = APS_FEATURES[position]
        if text == MISSING_TOKEN:
            continue
        try:
            value = float(text)
        except ValueError:
            raise DataFormatError(
                path,
                f"non-numeric value '{text}' (use '{MISSING_TOKEN}' for missing)",
                line_number,
                column,
            ) from None
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise DataFormatError(
                path, f"value '{text}' is not a finite 32-bit number", line_number, column
            )


def load_aps_csv(path: Path, require_labels: bool = False) -> ApsDataset:
    """Parse one APS file (labeled or not) into float32 features and int8 labels."""
    path = Path(path)
    lines = _read_lines(path)
    header_index, labeled = _find_header(path, lines)
    header_line = header_index + 1
    _check_header(path, lines[header_index].split(","), labeled, header_line)
    if require_labels and not labeled:
        raise DataFormatError(path, f"has no '{LABEL_COLUMN}' column: it cannot train or score")
    offset = 1 if labeled else 0
    width = len(APS_FEATURES) + offset
    body = [
        (number, line) for number, line in enumerate(lines[header_index + 1 :], header_line + 1)
    ]
    body = [(number, line) for number, line in body if line.strip()]
    if not body:
        raise DataFormatError(path, "has a header but no data rows")
    features = np.empty((len(body), len(APS_FEATURES)), dtype=np.float32)
    labels = np.empty(len(body), dtype=np.int8) if labeled else None
    for row, (number, line) in enumerate(body):
        fields = line.split(",")
        if len(fields) != width:
            raise DataFormatError(path, f"has {len(fields)} columns, expected {width}", number)
        if labeled:
            label = fields[0].strip()
            if label not in LABELS:
                raise DataFormatError(
                    path, f"class '{label}' is not one of {', '.join(LABELS)}", number, LABEL_COLUMN
                )
            labels[row] = LABELS.index(label)  # type: ignore[index]
        values = fields[offset:]
        lowered = line.lower()
        if "nan" in lowered or "inf" in lowered:  # float() accepts these; the format does not
            _locate_bad_value(path, values, number, offset)
        try:
            with np.errstate(over="ignore"):  # overflow becomes inf, reported below
                features[row] = [_parse_value(text) for text in values]
        except ValueError:
            _locate_bad_value(path, values, number, offset)
            raise
    infinite = np.argwhere(np.isinf(features))
    if infinite.size:
        row = infinite[0][0]
        number, line = body[row]
        _locate_bad_value(path, line.split(",")[offset:], number, offset)
    return ApsDataset(features=features, labels=labels, source=path, sha256=sha256_file(path))

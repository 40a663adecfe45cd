from pathlib import Path

import numpy as np
import pytest

from inference_image.data import DataFormatError, find_training_file, load_aps_csv
from inference_image.schema import APS_FEATURES

from .aps_files import synthetic_aps, write_aps_file

SHARED = Path(__file__).resolve().parents[3] / "shared" / "aps"


def test_reads_official_format_with_preamble_crlf_and_na(tmp_path):
    features, labels = synthetic_aps(50)
    path = write_aps_file(tmp_path / "train.csv", features, labels)
    dataset = load_aps_csv(path, require_labels=True)
    assert dataset.features.shape == (50, 170)
    assert dataset.features.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(dataset.features), np.isnan(features))
    np.testing.assert_array_equal(dataset.features, features)
    np.testing.assert_array_equal(dataset.labels, labels)
    assert len(dataset.sha256) == 64


def test_reads_unlabeled_file_without_preamble_and_lf(tmp_path):
    features, _ = synthetic_aps(10)
    path = write_aps_file(tmp_path / "req.csv", features, None, preamble=False, newline="\n")
    dataset = load_aps_csv(path)
    assert dataset.labels is None
    assert dataset.rows == 10


def test_unlabeled_file_cannot_train(tmp_path):
    features, _ = synthetic_aps(10)
    path = write_aps_file(tmp_path / "req.csv", features, None, preamble=False)
    with pytest.raises(DataFormatError, match="has no 'class' column"):
        load_aps_csv(path, require_labels=True)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared APS sample not on this machine")
def test_reads_the_shared_sample_as_documented():
    dataset = load_aps_csv(find_training_file(SHARED), require_labels=True)
    assert (dataset.rows, dataset.positives) == (7000, 130)
    assert dataset.sha256 == "06b003c045877ec77228ac0257d832649848cfe85d258401e9fb43f852e5d355"


def _corrupt(tmp_path: Path, edit) -> Path:
    features, labels = synthetic_aps(20)
    path = write_aps_file(tmp_path / "bad.csv", features, labels)
    lines = path.read_bytes().decode().split("\r\n")
    edit(lines)
    path.write_bytes("\r\n".join(lines).encode())
    return path


HEADER = 20  # index of the header line after the 20-line preamble


def _set_cell(lines, line_index, column, text):
    cells = lines[line_index].split(",")
    cells[column] = text
    lines[line_index] = ",".join(cells)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda lines: _set_cell(lines, HEADER, 3, "xx_999"),
            r"line 21, column 4: header has 'xx_999'",
        ),
        (
            lambda lines: lines.__setitem__(HEADER, lines[HEADER] + ",extra"),
            r"line 21: header has 172",
        ),
        (
            lambda lines: lines.__setitem__(HEADER + 3, lines[HEADER + 3] + ",1"),
            r"line 24: has 172 columns",
        ),
        (
            lambda lines: _set_cell(lines, HEADER + 2, 0, "maybe"),
            r"line 23, column class: class 'maybe'",
        ),
        (
            lambda lines: _set_cell(lines, HEADER + 5, 2, "12a"),
            r"line 26, column ab_000: non-numeric value '12a'",
        ),
        (
            lambda lines: _set_cell(lines, HEADER + 5, 7, "NaN"),
            r"line 26, column ag_000: value 'NaN'",
        ),
        (lambda lines: _set_cell(lines, HEADER + 5, 9, "inf"), r"column ag_002: value 'inf'"),
        (
            lambda lines: _set_cell(lines, HEADER + 5, 9, "1e39"),
            r"column ag_002: value '1e39' is not a finite",
        ),
        (
            lambda lines: _set_cell(lines, HEADER + 1, 1, ""),
            r"line 22, column aa_000: non-numeric value ''",
        ),
        (lambda lines: lines.__setitem__(slice(0, None), lines[:25][:0]), r"no header line"),
        (lambda lines: lines.__setitem__(slice(HEADER + 1, None), []), r"no data rows"),
    ],
)
def test_bad_files_name_file_line_and_column(tmp_path, edit, message):
    path = _corrupt(tmp_path, edit)
    with pytest.raises(DataFormatError, match=message) as info:
        load_aps_csv(path, require_labels=True)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataFormatError, match="file not found"):
        load_aps_csv(tmp_path / "absent.csv")
    with pytest.raises(DataFormatError, match="no training file"):
        find_training_file(tmp_path)


def test_binary_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataFormatError, match="not UTF-8"):
        load_aps_csv(path)


def test_feature_order_is_the_official_one():
    assert APS_FEATURES[:3] == ("aa_000", "ab_000", "ac_000")
    assert APS_FEATURES[-1] == "eg_000"
    assert len(set(APS_FEATURES)) == 170

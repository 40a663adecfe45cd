"""The capture spool: bounded by its budget, oldest dropped first and counted, and whole after a
process is killed mid-write or a file system leaves a torn tail (a power cut)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inference_image.capture_spool import (
    OPEN_DIR,
    CaptureSpool,
    SpoolError,
    decode_lines,
    encode_record,
    read_segment,
)

REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def record(number: int, width: int = 20) -> dict:
    return {"n": number, "inputs": [float(number)] * width, "label": "neg"}


def all_records(spool: CaptureSpool) -> list[dict]:
    return [item for path in spool.sealed() for item in read_segment(path)]


def test_records_come_back_from_sealed_segments_in_order(tmp_path: Path) -> None:
    spool = CaptureSpool(tmp_path, budget_bytes=1 << 20, segment_bytes=4096)
    for number in range(100):
        spool.append([record(number)])
    spool.seal()
    assert [item["n"] for item in all_records(spool)] == list(range(100))
    assert len(spool.sealed()) > 2  # 4 KiB segments
    assert not list((tmp_path / OPEN_DIR).iterdir())


def test_a_segment_is_sealed_when_it_is_old_enough(tmp_path: Path) -> None:
    clock = Clock()
    spool = CaptureSpool(tmp_path, 1 << 20, 1 << 16, segment_seconds=60, clock=clock)
    spool.append([record(1)])
    assert spool.sealed() == []
    clock.now += 61
    spool.append([record(2)])
    assert [item["n"] for item in all_records(spool)] == [1, 2]


def test_the_budget_drops_the_oldest_segments_and_counts_them(tmp_path: Path) -> None:
    spool = CaptureSpool(tmp_path, budget_bytes=20_000, segment_bytes=2048)
    for number in range(400):
        spool.append([record(number)])
    spool.seal()
    state = spool.state()
    assert state.sealed_bytes + state.open_bytes <= 20_000
    assert state.dropped_segments > 0 and state.dropped_bytes > 0
    kept = [item["n"] for item in all_records(spool)]
    assert kept == list(range(kept[0], 400))  # what is left is the newest, without a gap
    written = sum(len(encode_record(record(number))) for number in range(400))
    assert state.sealed_bytes + state.dropped_bytes == written  # every byte kept or counted


def test_settings_that_cannot_hold_two_segments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match="two segments"):
        CaptureSpool(tmp_path, budget_bytes=3000, segment_bytes=2048)


def test_a_torn_tail_is_cut_and_the_rest_sealed(tmp_path: Path) -> None:
    spool = CaptureSpool(tmp_path, 1 << 20, 1 << 16)
    spool.append([record(number) for number in range(5)])
    spool._file.write(encode_record(record(5))[:-30])  # a write cut short by the power
    spool._file.close()
    other = tmp_path / OPEN_DIR / "999999-00000000000000000001.jsonl"
    other.write_bytes(encode_record(record(6)) + b"\x00" * 512)  # zeros after a crash
    empty = tmp_path / OPEN_DIR / "999998-00000000000000000001.jsonl"
    empty.write_bytes(b"\x00" * 100)
    sealed = CaptureSpool(tmp_path, 1 << 20, 1 << 16).recover()
    assert len(sealed) == 2 and not empty.exists()
    assert sorted(item["n"] for path in sealed for item in read_segment(path)) == [0, 1, 2, 3, 4, 6]


def test_a_flipped_byte_is_a_torn_line(tmp_path: Path) -> None:
    line = bytearray(encode_record(record(1)) + encode_record(record(2)))
    line[20] ^= 0x01
    records, good = decode_lines(bytes(line))
    assert records == [] and good == 0


WRITER = """
import sys
from pathlib import Path
from inference_image.capture_spool import CaptureSpool
spool = CaptureSpool(Path(sys.argv[1]), budget_bytes=1 << 30, segment_bytes=8192)
number = 0
while True:
    spool.append([{"n": number + k, "inputs": [1.5] * 170} for k in range(3)])
    number += 3
"""


@pytest.mark.parametrize("run", range(3))
def test_killed_mid_write_the_spool_recovers_whole(tmp_path: Path, run: int) -> None:
    """SIGKILL at an arbitrary moment (the closest a test gets to pulling the power from a
    process): after recovery every segment reads whole and the records have no gap."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO, env={**os.environ}
    )
    time.sleep(0.4 + run * 0.37)
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    spool = CaptureSpool(tmp_path, 1 << 30, 8192)
    spool.recover()
    numbers = [item["n"] for item in all_records(spool)]
    assert len(numbers) > 100
    assert numbers == list(range(len(numbers)))  # the batches of 3 landed whole, in order
    assert len(numbers) % 3 == 0


def test_recover_leaves_a_live_writer_s_segment_open(tmp_path: Path) -> None:
    """A new container starts (and recovers) while the old one still serves: the old
    writers' segments are locked, so only the dead one's is sealed."""
    spool = CaptureSpool(tmp_path, 1 << 20, 1 << 16)
    spool.append([record(1)])
    dead = tmp_path / OPEN_DIR / "424242-00000000000000000001.jsonl"
    dead.write_bytes(encode_record(record(2)))
    (sealed,) = CaptureSpool(tmp_path, 1 << 20, 1 << 16).recover()
    assert read_segment(sealed) == [record(2)]
    assert len(list((tmp_path / OPEN_DIR).iterdir())) == 1  # ours, still open
    spool.append([record(3)])
    spool.seal()
    assert sorted(item["n"] for item in all_records(spool)) == [1, 2, 3]


def _count_drops(directory: Path, times: int) -> None:
    spool = CaptureSpool(directory, budget_bytes=1 << 20, segment_bytes=1 << 16)
    for _ in range(times):
        spool._count_dropped(1, 10)


def test_drop_counts_from_several_processes_add_up(tmp_path: Path) -> None:
    """Workers that drop segments at the same time: every drop counted (dropped.json is
    read, added to and replaced under a lock)."""
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_count_drops, args=(tmp_path, 200)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    spool = CaptureSpool(tmp_path, budget_bytes=1 << 20, segment_bytes=1 << 16)
    assert spool.dropped() == (800, 8000)

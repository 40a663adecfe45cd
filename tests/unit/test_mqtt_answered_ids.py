"""What the MQTT adapter remembers to answer each id once: the answered-ids window and its
log (answered_log.py), the workers' shared claims (mqtt_claims.py), the stable worker
slots (mqtt_slot.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from inference_image.serving.answered_log import AnsweredIds, log_path, prune_logs
from inference_image.serving.mqtt_claims import SharedClaims, claims_path, forget_claims
from inference_image.serving.mqtt_slot import claim_slot, lock_path


def test_the_window_keeps_the_last_ids_in_memory():
    ids = AnsweredIds(window=3)
    ids.add([b'"a"', b'"b"'])
    ids.add([b'"c"', b'"a"'])  # "a" again: still one entry
    assert len(ids) == 3 and b'"a"' in ids
    ids.add([b'"d"'])
    assert b'"a"' not in ids and {b'"b"', b'"c"', b'"d"'} == {k for k in ids._order}


def test_the_log_is_appended_and_read_back(tmp_path: Path):
    path = log_path(tmp_path, "client-0")
    assert path.name == "answered-client-0.log"
    ids = AnsweredIds(window=10, path=path)
    ids.add([b'"a"', b"7"])
    ids.add([b'"b"'])
    ids.close()
    assert path.read_bytes() == b'"a"\n7\n"b"\n'
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = AnsweredIds(window=10, path=path)
    assert all(key in again for key in (b'"a"', b"7", b'"b"')) and b'"c"' not in again
    again.close()


def test_a_torn_last_line_is_cut_off(tmp_path: Path):
    path = tmp_path / "answered-x.log"
    path.write_bytes(b'"a"\n"b"\n"tor')  # a power cut in the middle of a write
    ids = AnsweredIds(window=10, path=path)
    assert b'"a"' in ids and b'"b"' in ids and b'"tor' not in ids
    ids.add([b'"c"'])
    ids.close()
    assert path.read_bytes() == b'"a"\n"b"\n"c"\n'


def test_the_log_is_compacted_past_twice_the_window(tmp_path: Path):
    path = tmp_path / "answered-x.log"
    ids = AnsweredIds(window=4, path=path)
    for number in range(9):
        ids.add([str(number).encode()])
    # 9 lines > 2 x 4: rewritten with the window's 4 ids.
    assert path.read_bytes() == b"5\n6\n7\n8\n"
    ids.add([b"9"])
    ids.close()
    assert path.read_bytes() == b"5\n6\n7\n8\n9\n"
    assert not (tmp_path / "answered-x.log.new").exists()
    reread = AnsweredIds(window=4, path=path)
    assert b"5" not in reread and all(str(n).encode() in reread for n in range(6, 10))
    reread.close()


def test_a_long_log_is_compacted_when_read(tmp_path: Path):
    path = tmp_path / "answered-x.log"
    path.write_bytes(b"".join(b"%d\n" % number for number in range(100)))
    ids = AnsweredIds(window=10, path=path)
    ids.close()
    assert path.read_bytes() == b"".join(b"%d\n" % number for number in range(90, 100))


def test_logs_not_written_for_a_day_are_pruned(tmp_path: Path):
    old, fresh, kept = (tmp_path / f"answered-{name}.log" for name in ("old", "new", "mine"))
    for path in (old, fresh, kept):
        path.write_text("1\n")
    day_ago = time.time() - 90_000
    os.utime(old, (day_ago, day_ago))
    os.utime(kept, (day_ago, day_ago))
    (tmp_path / "other.txt").write_text("x")
    assert prune_logs(tmp_path, 86_400, keep=kept) == [old]
    assert not old.exists() and fresh.exists() and kept.exists()


def test_claims_are_shared_by_the_workers(tmp_path: Path):
    path = claims_path(tmp_path, "base")
    worker0 = SharedClaims(path, "base-0", window=100)
    worker1 = SharedClaims(path, "base-1", window=100)
    assert worker0.claim([b'"a"', b'"b"', b'"a"']) == {}
    assert worker1.claim([b'"b"', b'"c"']) == {b'"b"': "base-0"}
    assert worker0.claim([b'"a"', b'"c"']) == {b'"c"': "base-1"}  # its own "a": not taken
    # A restarted worker 1 (same slot, same client id) owns what it claimed before.
    worker1.close()
    restarted = SharedClaims(path, "base-1", window=100)
    assert restarted.claim([b'"c"']) == {}
    restarted.close()
    worker0.close()
    forget_claims("base", tmp_path)
    assert not path.exists()


def test_claims_keep_the_last_window_ids(tmp_path: Path):
    path = claims_path(tmp_path, "base")
    worker0 = SharedClaims(path, "base-0", window=10)
    worker1 = SharedClaims(path, "base-1", window=10)
    worker0.claim([str(number).encode() for number in range(30)])
    assert worker1.claim([b"0"]) == {}  # forgotten: beyond the window
    assert worker1.claim([b"29"]) == {b"29": "base-0"}
    worker0.close()
    worker1.close()


def test_a_broken_claims_table_turns_the_check_off(tmp_path: Path):
    path = claims_path(tmp_path, "base")
    claims = SharedClaims(path, "base-0", window=10)
    claims._db.execute("DROP TABLE claims")  # as if the table were unusable
    assert claims.claim([b"1"]) == {}
    claims.close()
    assert claims.claim([b"1"]) == {}


def test_slots_go_to_the_first_free_index_and_come_back(tmp_path: Path):
    first = claim_slot("base", 2, tmp_path)
    second = claim_slot("base", 2, tmp_path)
    assert (first.index, second.index) == (0, 1)
    assert claim_slot("base", 2, tmp_path) is None  # all taken
    other = claim_slot("other", 2, tmp_path)
    assert other.index == 0  # another client id: slots of its own
    other.release()
    first.release()  # the worker of slot 0 died: its replacement gets slot 0 again
    again = claim_slot("base", 2, tmp_path)
    assert again.index == 0
    assert lock_path("base", 1, tmp_path) == tmp_path / "linkedge-mqtt-slot-base-1"
    again.release()
    second.release()

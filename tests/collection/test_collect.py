"""playbooks/collect.yml from the installed collection: a truck's sealed capture segments come
home incrementally, each once and whole, and leave the truck only once received. The truck is
this machine over a local connection; its spool is written by the serving code's own writer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from inference_image.capture_spool import CaptureSpool, read_segment
from tests.ansible_modules.run_module import run_module

from .conftest import Installed


def write_segments(spool: Path, first: int, count: int) -> list[int]:
    """COUNT sealed segments of 5 records each, numbered from FIRST."""
    writer = CaptureSpool(spool, budget_bytes=1 << 20, segment_bytes=1 << 16)
    numbers = []
    for segment in range(count):
        batch = [first + segment * 5 + k for k in range(5)]
        writer.append([{"n": n, "inputs": [1.0, None], "label": "neg"} for n in batch])
        writer.seal()
        numbers += batch
    return numbers


def collected(directory: Path) -> list[int]:
    return [item["n"] for path in sorted(directory.glob("*.jsonl")) for item in read_segment(path)]


def collect(installed: Installed, spool: Path, home: Path):
    inventory = installed.outside / "collect-inventory.ini"
    inventory.write_text(
        "[trucks]\n"
        f"truck-1 ansible_connection=local ansible_python_interpreter={sys.executable} "
        "ansible_become=false\n"
    )
    extra = json.dumps(
        {"inference_service_capture": {"dir": str(spool)}, "linkedge_collect_dir": str(home)}
    )
    return installed.run(
        "ansible-playbook", "-i", inventory, "linkedge.edge.collect", "-e", extra, timeout=300
    )


def test_collect_brings_segments_home_once_and_whole(installed: Installed, tmp_path: Path):
    spool, home = tmp_path / "spool", tmp_path / "home"
    first = write_segments(spool, 0, 3)
    result = collect(installed, spool, home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert collected(home / "truck-1") == first
    assert list((spool / "sealed").iterdir()) == []  # received, then deleted on the truck
    assert list((home / "truck-1" / ".incoming").iterdir()) == []

    again = collect(installed, spool, home)  # nothing new: nothing fetched, nothing twice
    assert again.returncode == 0, again.stdout[-3000:]
    assert collected(home / "truck-1") == first

    later = write_segments(spool, 100, 2)  # incremental
    third = collect(installed, spool, home)
    assert third.returncode == 0, third.stdout[-3000:]
    assert collected(home / "truck-1") == first + later


def test_a_fetched_file_that_does_not_match_stays_out(tmp_path: Path) -> None:
    """The controller side alone: a damaged fetch is not received (so not deleted on the
    truck), a missing one is reported as missing, a good one moves into place once."""
    spool, home = tmp_path / "spool", tmp_path / "home"
    write_segments(spool, 0, 3)
    listing = run_module("capture_segments", {"dir": str(spool)})
    good, damaged, gone = listing["segments"]
    incoming = home / ".incoming"
    incoming.mkdir(parents=True)
    for segment in (good, damaged):
        data = (spool / "sealed" / segment["name"]).read_bytes()
        (incoming / segment["name"]).write_bytes(data if segment is good else data[:-10])
    args = {"dir": str(home), "incoming": str(incoming), "receive": listing["segments"]}
    received = run_module("capture_segments", args)
    assert received["changed"] and received["received"] == [good["name"]]
    assert received["mismatched"] == [damaged["name"]] and received["missing"] == [gone["name"]]
    assert (home / good["name"]).exists() and not (home / damaged["name"]).exists()
    again = run_module("capture_segments", args)
    assert not again["changed"] and again["received"] == [good["name"]]

    remove = {"dir": str(spool), "remove": [good["name"]]}
    preview = run_module("capture_segments", remove, check=True)
    assert preview["changed"] and (spool / "sealed" / good["name"]).exists()
    removed = run_module("capture_segments", remove)
    assert removed["removed"] == [good["name"]]
    assert not (spool / "sealed" / good["name"]).exists()
    assert not run_module("capture_segments", remove)["changed"]
    bad = run_module("capture_segments", {"dir": str(spool), "remove": ["../../etc/passwd"]})
    assert bad.failed and "not a capture segment's name" in bad.result["msg"]

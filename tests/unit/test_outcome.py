"""The one outcome record (plugins/module_utils/outcome.py): what each truck's run reports.

Built from the results the inference_service role registers, as Ansible hands them to
linkedge.edge.outcome_record; the Molecule scenarios check the same records end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .fakes_docker import module_utils

outcome = module_utils("outcome")

RELEASE = {"version": "v2", "image_id": "sha256:" + "2" * 64, "key_id": "ab" * 32}
BEFORE = {
    "serving": {"model_version": "v1", "image_id": "sha256:" + "1" * 64},
    "previous": None,
}
SWITCHED = {
    "changed": True,
    "outcome": "updated",
    "model_version": "v2",
    "image_id": RELEASE["image_id"],
    "previous_model_version": "v1",
    "previous_image_id": BEFORE["serving"]["image_id"],
    "serving_gap_seconds": 0.0,
    "cold_start_seconds": 0.3,
}
PROBED = {"model_version": "v2", "smoke_vectors_checked": 30}
DELTA = {"path": "/c/delta-1.tar", "size_bytes": 184320, "full": False, "would_fail": False}


def record(check_mode: bool = False, **steps) -> dict:
    params = {"truck": "truck-1", "operation": "rollout", "release": RELEASE, "before": BEFORE}
    params.update(steps)
    return outcome.build_record(params, check_mode, now=1000.0)


def test_an_update_reports_versions_bytes_and_the_delta():
    got = record(transfer=DELTA, switch=SWITCHED, probe=PROBED, started=990.0)
    assert got["outcome"] == "updated" and got["reason"] is None
    assert (got["previous_version"], got["new_version"], got["serving_version"]) == (
        "v1",
        "v2",
        "v2",
    )
    assert got["image_id"] == RELEASE["image_id"] and got["key_id"] == RELEASE["key_id"]
    assert got["bytes_transferred"] == 184320 and got["delta"] is True
    assert got["duration_seconds"] == 10.0 and got["smoke_vectors_checked"] == 30
    assert list(got) == list(outcome.FIELDS)


def test_the_same_release_again_is_unchanged_and_sends_nothing():
    same = dict(SWITCHED, changed=False, outcome="unchanged")
    got = record(switch=same, probe=PROBED)
    assert got["outcome"] == "unchanged" and not got["changed"]
    assert got["bytes_transferred"] == 0 and got["delta"] is False


@pytest.mark.parametrize(
    ("failed_task", "prefix"),
    [
        ("Verify | Check the signature on the truck", "release refused: "),
        ("Transfer | Build (or reuse) the archive", "transfer failed: "),
        ("Switch | Make the release the serving container", "switch failed: "),
        ("an unnamed task", ""),
    ],
)
def test_a_failure_names_its_stage_and_what_still_serves(failed_task, prefix):
    failure = {"failed": True, "msg": "needs 300 MiB free, only 64 MiB free"}
    got = record(failure=failure, failed_task=failed_task)
    assert got["outcome"] == "failed"
    assert got["reason"] == prefix + "needs 300 MiB free, only 64 MiB free"
    assert got["serving_version"] == "v1" and got["image_id"] == BEFORE["serving"]["image_id"]
    assert got["bytes_transferred"] == 0 and not got["changed"]


def test_a_refused_release_reports_the_modules_sentence_not_its_reason_code():
    failure = {
        "failed": True,
        "reason": "bad_signature",
        "msg": "signature does not match the trusted key ab12: the manifest was altered",
    }
    got = record(transfer=DELTA, failure=failure, failed_task="Verify | Check the signature")
    assert got["outcome"] == "failed"
    assert got["reason"] == (
        "release refused: signature does not match the trusted key ab12: the manifest was altered"
    )


def test_a_registry_down_is_a_failed_transfer_not_an_unreachable_truck():
    """image_pull's words about the registry ("connection refused") with its reason code: the
    truck answered; it is not `pending`."""
    failure = {
        "failed": True,
        "reason": "registry_unavailable",
        "msg": 'pulling pull-depot:5000/linkedge/aps-classifier:v2 failed: Get "https://'
        'pull-depot:5000/v2/": dial tcp 172.18.0.5:5000: connect: connection refused (3 '
        "attempts): the registry is down or unreachable",
    }
    got = record(failure=failure, failed_task="Transfer | Pull the image from the registry")
    assert got["outcome"] == "failed", got
    assert got["reason"].startswith("transfer failed: pulling pull-depot:5000/"), got
    assert got["serving_version"] == "v1"
    # The same words without a module's reason code: the connection to the truck was lost.
    lost = record(failure={"failed": True, "msg": "ssh: connect: connection refused"})
    assert lost["outcome"] == "pending", lost


def test_a_rolled_back_switch_serves_the_previous_version():
    failure = {
        "failed": True,
        "outcome": "rolled_back",
        "rolled_back": True,
        "reason": "candidate failed its smoke vectors",
        "previous_model_version": "v1",
        "previous_image_id": BEFORE["serving"]["image_id"],
    }
    got = record(transfer=DELTA, failure=failure, failed_task="Switch | Make ...")
    assert got["outcome"] == "rolled_back"
    assert got["reason"] == "candidate failed its smoke vectors"  # the module's own words
    assert got["serving_version"] == "v1" and got["image_id"] == BEFORE["serving"]["image_id"]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (
            {
                "msg": "Module result deserialization failed: No start of json char found",
                "module_stderr": "Error response from daemon: Container t1 is paused, unpause",
            },
            "unreachable: Error response from daemon: Container t1 is paused, unpause",
        ),
        (
            {"unreachable": True, "msg": "Failed to connect to the host via ssh: refused"},
            "unreachable: Failed to connect to the host via ssh: refused",
        ),
        (
            {"msg": 'Data could not be sent to remote host "10.0.0.9".'},
            'unreachable: Data could not be sent to remote host "10.0.0.9".',
        ),
    ],
)
def test_a_lost_connection_is_pending_in_words(failure, reason):
    got = record(failure=failure, failed_task="Transfer | Send the archive to the truck")
    assert got["outcome"] == "pending" and got["reason"] == reason


def test_an_ordinary_failure_is_not_taken_for_a_lost_connection():
    assert not outcome.transport_lost({"msg": "signature does not match the trusted key"})
    assert not outcome.transport_lost(None)


def test_check_mode_says_what_would_happen():
    full = {"path": "/r/a.tar", "size_bytes": 9, "full": True, "would_fail": False}
    assert record(True, transfer=full, switch={"changed": True})["outcome"] == "would_update"
    assert record(True, transfer=full, switch={"changed": True})["bytes_transferred"] == 0
    refused = dict(full, would_fail=True, disk_space={"msg": "needs 1 GiB free"})
    got = record(True, transfer=refused)
    assert (got["outcome"], got["reason"]) == ("would_fail", "needs 1 GiB free")
    assert record(True, switch={"changed": False})["outcome"] == "unchanged"


def test_a_rollback_is_recorded_as_such():
    back = dict(SWITCHED, model_version="v1", image_id=BEFORE["serving"]["image_id"])
    got = outcome.build_record(
        {
            "truck": "truck-1",
            "operation": "rollback",
            "release": {"version": "v1", "image_id": BEFORE["serving"]["image_id"]},
            "before": {"serving": {"model_version": "v2"}},
            "switch": back,
            "probe": {"model_version": "v1"},
        },
        False,
        now=5.0,
    )
    assert (got["operation"], got["outcome"], got["previous_version"]) == (
        "rollback",
        "updated",
        "v2",
    )
    assert got["serving_version"] == "v1" and got["bytes_transferred"] == 0


def test_serving_since_is_kept_while_the_same_version_serves():
    updated = record(switch=SWITCHED, probe=PROBED)
    assert updated["serving_since"] == 1000.0 and updated["channel"] is None
    after = dict(BEFORE, serving={"model_version": "v2", "image_id": RELEASE["image_id"]})
    params = {"truck": "truck-1", "release": RELEASE, "before": after}
    again = outcome.build_record(params, False, now=2000.0, last=updated)
    assert again["outcome"] == "unchanged" and again["serving_since"] == 1000.0
    # Another version than the last record's, or no record: unknown, never a guess.
    assert outcome.build_record(params, False, now=2000.0)["serving_since"] is None
    other = dict(updated, serving_version="v9")
    assert outcome.build_record(params, False, now=2000.0, last=other)["serving_since"] is None


def test_a_pull_sync_carries_its_channel_sequence_and_downloaded_bytes():
    pull = {"channel": "stable", "sequence": 7, "bytes_fetched": 209_000_000, "deferred": None}
    got = record(transfer=dict(DELTA, full=True), switch=SWITCHED, probe=PROBED, pull=pull)
    assert got["outcome"] == "updated" and got["channel"] == "stable" and got["sequence"] == 7
    assert got["bytes_transferred"] == 209_000_000  # from the depot, not the local copy
    # The image from the depot's registry (image_pull): its layers count too.
    pulled = {"size_bytes": 5_000_000, "layers_pulled": 1, "layers_present": 9, "full": False}
    from_registry = record(transfer=pulled, switch=SWITCHED, probe=PROBED, pull=pull)
    assert from_registry["bytes_transferred"] == 214_000_000 and from_registry["delta"] is True
    pinned = record(pull=dict(pull, sequence=None, bytes_fetched=0))
    assert pinned["outcome"] == "unchanged" and pinned["sequence"] is None
    assert pinned["bytes_transferred"] == 0


def test_a_deferred_sync_changes_nothing_and_says_why():
    pull = {"channel": "stable", "sequence": 3, "bytes_fetched": 0}
    got = record(pull=dict(pull, deferred="guard_file: /run/parked does not exist"))
    assert got["outcome"] == "deferred" and not got["changed"]
    assert got["reason"] == "guard_file: /run/parked does not exist"
    assert got["serving_version"] == "v1" and got["new_version"] == "v2"
    assert "deferred" in outcome.OUTCOMES


def test_a_depot_that_refuses_connections_is_a_failure_not_an_unreachable_truck():
    # As the sync reports it: the code and the sentence in `reason`, no `msg`.
    failure = {"reason": "depot_unavailable: pointer_fetch: Request failed: Connection refused"}
    got = record(failure=failure, failed_task="Sync | pointer_fetch")
    assert got["outcome"] == "failed" and got["reason"] == failure["reason"]


def test_the_state_file_is_replaced_whole(tmp_path: Path):
    path = tmp_path / "lib" / "last-outcome.json"
    first = record(switch=SWITCHED, probe=PROBED)
    outcome.write_state(str(path), first)
    assert outcome.read_state(str(path)) == first
    second = dict(first, outcome="unchanged")
    outcome.write_state(str(path), second)
    assert json.loads(path.read_text()) == second
    assert [p.name for p in path.parent.iterdir()] == ["last-outcome.json"]  # no temporaries
    path.write_text("{not json")
    assert outcome.read_state(str(path)) is None  # a torn file never breaks edge_facts


def test_the_textfile_is_valid_exposition_for_the_node_exporter(tmp_path: Path):
    """promtool (Debian's prometheus) checks the metrics the textfile collector will read."""
    import shutil
    import subprocess

    import pytest

    path = tmp_path / "node-exporter" / "linkedge.prom"
    updated = record(switch=SWITCHED, probe=PROBED)
    outcome.write_textfile(str(path), dict(updated, channel='st"able', sequence=7))
    text = path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["linkedge.prom"]  # no temporaries
    assert 'linkedge_truck_last_outcome{outcome="updated"} 1' in text
    assert 'linkedge_truck_last_outcome{outcome="failed"} 0' in text
    assert f'version="{updated["serving_version"]}"' in text and 'channel="st\\"able"' in text
    assert "linkedge_truck_sequence_seen 7" in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing: apt-get install prometheus (make test-tools)")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    with pytest.raises(ValueError, match=r"\*\.prom"):
        outcome.write_textfile(str(tmp_path / "linkedge.txt"), updated)

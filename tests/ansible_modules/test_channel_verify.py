"""linkedge.edge.channel_verify through ansible-playbook: a truck accepts the channel's current
pointer, once, and refuses replays, altered pointers, wrong or revoked keys and other channels,
each with a message and a machine-readable reason.

Real keys, real signed releases in a real depot (inference_image.channels, as CI writes it),
the pointer "fetched" by copying it as a truck's sync would, the module run as Ansible runs it
(Debian's python3 with python3-cryptography, as on a truck, when present).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference_image import channels, signing
from tests.unit.test_channels import make_release

from .run_module import run_module
from .test_release_verify import TRUCK_PYTHON


@dataclass(frozen=True)
class Fleet:
    depot: Path
    truck: Path  # the truck's directory: fetched pointers and the state file
    old: signing.KeyPair
    new: signing.KeyPair
    releases: dict[str, Path]

    @property
    def state_file(self) -> Path:
        return self.truck / "state" / "channel-state.json"

    def publish(self, channel: str, version: str, pair: signing.KeyPair | None = None) -> dict:
        key = (pair or self.old).private_key
        return channels.publish(self.depot, channel, self.releases[version], key)

    def fetch(self, channel: str, name: str | None = None) -> Path:
        """Copy the depot's pointer and signature to the truck (what the sync's fetch does)."""
        pointer = self.truck / f"{name or channel}.json"
        source = self.depot / "channels" / f"{channel}.json"
        shutil.copyfile(source, pointer)
        shutil.copyfile(f"{source}.sig", f"{pointer}.sig")
        return pointer

    def args(self, pointer: Path, channel: str = "stable", **extra) -> dict:
        return {
            "pointer": str(pointer),
            "channel": channel,
            "state_file": str(self.state_file),
            "public_key": self.old.public_key.read_text(),
            **extra,
        }


@pytest.fixture(scope="module")
def key_pairs(tmp_path_factory) -> tuple[signing.KeyPair, signing.KeyPair]:
    return (
        signing.generate_key_pair(tmp_path_factory.mktemp("old-key")),
        signing.generate_key_pair(tmp_path_factory.mktemp("new-key")),
    )


@pytest.fixture
def fleet(tmp_path, key_pairs) -> Fleet:
    old, new = key_pairs
    depot = tmp_path / "depot"
    releases = {
        version: make_release(depot / "releases", version, old.private_key)
        for version in ("v1", "v2")
    }
    truck = tmp_path / "truck"
    truck.mkdir()
    return Fleet(depot, truck, old, new, releases)


def _run(args: dict, check: bool = False):
    return run_module("channel_verify", args, check=check, python=TRUCK_PYTHON)


def _refused(result, reason: str) -> str:
    assert result.failed and result["verified"] is False, result.result
    assert result["reason"] == reason, result["msg"]
    assert result["msg"].endswith("the pointer was not applied"), result["msg"]
    return result["msg"]


def test_the_current_pointer_is_accepted_once_then_idempotent(fleet):
    fleet.publish("stable", "v1")
    pointer = fleet.fetch("stable")
    checked = _run(fleet.args(pointer), check=True)
    assert checked["changed"] is True and checked["verified"] is True
    assert not fleet.state_file.exists()  # check mode writes nothing
    first = _run(fleet.args(pointer))
    assert not first.failed, first.result
    assert first["changed"] is True and first["sequence"] == 1
    assert first["previous_sequence"] is None and first["previous_version"] is None
    assert first["version"] == "v1" and first["channel"] == "stable"
    assert first["manifest_path"] == "releases/v1/manifest.json"
    assert first["key_id"] == fleet.old.key_id
    assert first["pointer"]["image_id"] == first["image_id"]
    manifest = fleet.depot / first["manifest_path"]
    assert first["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    state = json.loads(fleet.state_file.read_text())
    assert state["channels"]["stable"]["sequence"] == 1
    assert state["channels"]["stable"]["pointer_sha256"] == first["pointer_sha256"]
    before = fleet.state_file.read_bytes()
    again = _run(fleet.args(pointer))
    assert not again.failed and again["changed"] is False
    assert again["previous_sequence"] == 1 and again["previous_version"] == "v1"
    assert fleet.state_file.read_bytes() == before


def test_a_replayed_old_pointer_is_refused_and_a_rollback_is_not_a_replay(fleet):
    fleet.publish("stable", "v1")
    old_pointer = fleet.fetch("stable", "stable-seq1")
    fleet.publish("stable", "v2")
    assert not _run(fleet.args(fleet.fetch("stable"))).failed
    state = fleet.state_file.read_bytes()
    replayed = _run(fleet.args(old_pointer))
    message = _refused(replayed, "replayed")
    assert message.startswith(
        f"channel pointer {old_pointer} has sequence 1 (version v1), lower than sequence 2 "
        "(version v2) this truck already accepted for channel stable: an old pointer was replayed"
    )
    assert replayed["sequence"] == 1 and replayed["previous_sequence"] == 2
    assert fleet.state_file.read_bytes() == state  # a refusal never touches the state
    channels.rollback(fleet.depot, "stable", fleet.old.private_key)  # back to v1, sequence 3
    back = _run(fleet.args(fleet.fetch("stable")))
    assert not back.failed, back.result
    assert (back["version"], back["sequence"], back["previous_sequence"]) == ("v1", 3, 2)
    assert back["pointer"]["action"] == "rollback"


def test_an_equal_sequence_with_other_content_is_refused(fleet):
    fleet.publish("stable", "v1")
    pointer = fleet.fetch("stable")
    assert not _run(fleet.args(pointer)).failed
    forged = json.loads(pointer.read_text())
    forged["version"] = "v2"  # same sequence, other content, validly signed (a CI fault)
    data = channels.pointer_bytes(forged)
    pointer.write_bytes(data)
    record = signing.sign_bytes(signing.load_private_key(fleet.old.private_key), data)
    Path(f"{pointer}.sig").write_text(json.dumps(record))
    message = _refused(_run(fleet.args(pointer)), "sequence_conflict")
    assert "which this truck already accepted with other content (version v1)" in message


def test_an_altered_pointer_a_wrong_key_and_a_wrong_channel_are_refused(fleet, tmp_path):
    fleet.publish("stable", "v1")
    fleet.publish("canary", "v2")
    pointer = fleet.fetch("stable")
    text = pointer.read_text()
    pointer.write_text(text.replace('"version": "v1"', '"version": "v2"'))
    altered = _refused(_run(fleet.args(pointer)), "bad_signature")
    assert altered.startswith(
        f"signature does not match the trusted key {fleet.old.key_id}: the channel pointer was "
        "altered or signed by another key; publish the channel again"
    )
    pointer.write_text(text)
    wrong_key = _refused(_run(fleet.args(pointer, public_key=fleet.new.public_key.read_text())),
                         "unknown_key")  # fmt: skip
    assert f"(the signature file names key {fleet.old.key_id})" in wrong_key
    canary = fleet.fetch("canary")
    wrong_channel = _refused(_run(fleet.args(canary)), "wrong_channel")
    assert wrong_channel.startswith(
        f"channel pointer {canary} is for channel 'canary', this truck follows 'stable'"
    )
    assert not fleet.state_file.exists()


def test_rotation_and_revocation(fleet):
    fleet.publish("stable", "v1")  # signed with the old key
    both = {"public_key": "", "public_keys": [fleet.old.public_key.read_text(),
                                              fleet.new.public_key.read_text()]}  # fmt: skip
    accepted = _run(fleet.args(fleet.fetch("stable"), **both))
    assert not accepted.failed and accepted["key_id"] == fleet.old.key_id
    assert accepted["trusted_key_ids"] == sorted([fleet.old.key_id, fleet.new.key_id])
    # CI signs with the new key: the release first, then the channel (a new sequence).
    signing.sign_manifest(
        fleet.releases["v2"] / "manifest.json", signing.load_private_key(fleet.new.private_key)
    )
    fleet.publish("stable", "v2", fleet.new)
    rotated = fleet.fetch("stable")
    result = _run(fleet.args(rotated, **both))
    assert not result.failed and result["key_id"] == fleet.new.key_id
    assert result["sequence"] == 2
    # The old key is revoked: still listed as trusted, its signatures are refused.
    channels.publish(fleet.depot, "canary", fleet.releases["v1"], fleet.old.private_key)
    old_signed = fleet.fetch("canary")
    revoked = _run(fleet.args(old_signed, "canary", revoked_key_ids=[fleet.old.key_id], **both))
    message = _refused(revoked, "revoked_key")
    assert message.startswith(
        f"the channel pointer is signed by revoked key {fleet.old.key_id}: re-sign it with a "
        f"current key (trusted: {fleet.new.key_id})"
    )
    retired = _run(fleet.args(rotated, public_key=fleet.new.public_key.read_text()))
    assert not retired.failed and retired["changed"] is False


def test_malformed_missing_and_unusable_state_are_refused(fleet):
    fleet.publish("stable", "v1")
    pointer = fleet.fetch("stable")
    record = json.loads(pointer.read_text())
    del record["sequence"]
    data = channels.pointer_bytes(record)
    pointer.write_bytes(data)
    signature = signing.sign_bytes(signing.load_private_key(fleet.old.private_key), data)
    Path(f"{pointer}.sig").write_text(json.dumps(signature))
    assert "lacks sequence" in _refused(_run(fleet.args(pointer)), "malformed")
    absent = fleet.truck / "absent.json"
    assert "is missing" in _refused(_run(fleet.args(absent)), "missing")
    unfetched = _run(fleet.args(absent), check=True)
    assert not unfetched.failed and unfetched["verified"] is False
    assert "not fetched in check mode" in " ".join(unfetched.get("warnings", []))
    pointer = fleet.fetch("stable")
    fleet.state_file.parent.mkdir(parents=True)
    fleet.state_file.write_text("{not json")
    message = _refused(_run(fleet.args(pointer)), "bad_state")
    assert message.startswith(f"channel state file {fleet.state_file} cannot be used")
    assert fleet.state_file.read_text() == "{not json"


def test_each_channel_keeps_its_own_sequence(fleet):
    """A truck moved from canary to stable and back keeps replay protection for both."""
    fleet.publish("canary", "v1")
    fleet.publish("canary", "v2")
    canary = fleet.fetch("canary")
    assert _run(fleet.args(canary, "canary"))["sequence"] == 2
    fleet.publish("stable", "v1")
    stable = _run(fleet.args(fleet.fetch("stable")))
    assert not stable.failed and stable["sequence"] == 1 and stable["previous_sequence"] is None
    state = json.loads(fleet.state_file.read_text())["channels"]
    assert (state["canary"]["sequence"], state["stable"]["sequence"]) == (2, 1)


@pytest.mark.skipif(
    not os.path.exists("build/sanity-pythons/python3.8"), reason="no Python 3.8 interpreter"
)
def test_imports_on_python_3_8_and_names_what_to_install(fleet):
    """The module and its module_utils load on a truck's oldest Python."""
    python = str(Path("build/sanity-pythons/python3.8").resolve())
    if subprocess.run([python, "-c", "import cryptography"], capture_output=True).returncode == 0:
        pytest.skip("this Python 3.8 has cryptography")
    result = run_module("channel_verify", fleet.args(fleet.truck / "stable.json"), python=python)
    assert result.failed
    assert "cryptography (python3-cryptography on Debian and Ubuntu)" in result["msg"]

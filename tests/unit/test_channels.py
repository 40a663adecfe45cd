"""Channels on the CI side (inference_image/channels.py and `linkedge-image channel`): real keys,
real signed releases in a real depot directory, pointers checked with the truck's own code.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference_image import channel_pointer, channels, signing
from inference_image.bundle import load_bundle, write_bundle
from inference_image.release import sign_release
from inference_image.release_signature import TrustStore
from inference_image.schema import APS_FEATURES

REPO = Path(__file__).resolve().parents[2]
SMOKE = [{"inputs": [None] * 170, "probability": 0.1, "label": "neg"}]


def make_release(releases: Path, version: str, private_key: Path) -> Path:
    """A signed release directory RELEASES/VERSION (archive, bundle, manifest.json + .sig), as
    `linkedge-image publish --signing-key` leaves it."""
    path = releases / version
    path.mkdir(parents=True)
    archive_name = f"linkedge_aps-classifier_{version}.tar"
    archive = hashlib.sha256(version.encode()).digest() * 512  # 16 KiB, distinct per version
    (path / archive_name).write_bytes(archive)
    card = {"version": version, "threshold": 0.25, "metrics": {"out_of_fold": {}}}
    bundle = load_bundle(
        write_bundle(path / "bundle", b'{"model": 1}', list(APS_FEATURES), card, SMOKE)
    )
    exported = {
        "name": "aps-classifier",
        "archive": archive_name,
        "archive_sha256": hashlib.sha256(archive).hexdigest(),
        "archive_bytes": len(archive),
        "image": f"linkedge/aps-classifier:{version}",
        "image_id": "sha256:" + hashlib.sha256(b"image " + version.encode()).hexdigest(),
        "version": version,
        "bundle_sha256": bundle.sha256,
    }
    (path / "manifest.json").write_text(json.dumps(exported))
    sign_release(path, private_key)
    return path


@dataclass(frozen=True)
class World:
    depot: Path
    keys: signing.KeyPair
    releases: dict[str, Path]

    def publish(self, channel: str, version: str) -> dict:
        return channels.publish(self.depot, channel, self.releases[version], self.keys.private_key)

    def pointer_bytes(self, channel: str) -> bytes:
        return (self.depot / "channels" / f"{channel}.json").read_bytes()

    def truck_check(self, channel: str) -> dict:
        """The pointer as a truck following CHANNEL accepts it (signature, format, channel)."""
        trust = TrustStore.from_texts([self.keys.public_key.read_text()])
        path = self.depot / "channels" / f"{channel}.json"
        pointer, _digest, signer = channel_pointer.verify_pointer(
            str(path), str(path) + ".sig", trust, channel
        )
        assert signer == self.keys.key_id
        return pointer


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> signing.KeyPair:
    return signing.generate_key_pair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def world(tmp_path, keys) -> World:
    depot = tmp_path / "depot"
    releases = {
        version: make_release(depot / "releases", version, keys.private_key)
        for version in ("v1", "v2", "v3")
    }
    return World(depot, keys, releases)


def _history(world: World, channel: str) -> list[tuple[int, str, str]]:
    return [
        (entry["sequence"], entry["version"], entry["action"])
        for entry in channels.read_history(channels.Depot(world.depot), channel)
    ]


def test_publish_writes_a_signed_pointer_the_truck_accepts(world):
    result = world.publish("stable", "v1")
    assert result["changed"] is True and result["sequence"] == 1
    assert result["key_id"] == world.keys.key_id and result["previous_version"] is None
    pointer = world.truck_check("stable")
    manifest_bytes = (world.releases["v1"] / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    assert pointer["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert pointer["manifest_path"] == "releases/v1/manifest.json"
    assert (world.depot / pointer["manifest_path"]).read_bytes() == manifest_bytes
    assert pointer["channel"] == "stable" and pointer["version"] == "v1"
    assert pointer["format"] == 1 and pointer["action"] == "publish"
    for name in ("image", "image_id", "archive", "archive_sha256", "archive_bytes"):
        assert pointer[name] == manifest[name]
    assert pointer["published_at"].endswith("Z")
    # The signature is the release signature format over the pointer's exact bytes.
    record = json.loads((world.depot / "channels" / "stable.json.sig").read_text())
    assert set(record) == {"algorithm", "key_id", "signature"}
    assert _history(world, "stable") == [(1, "v1", "publish")]


def test_publish_again_changes_nothing_and_a_new_release_gets_the_next_sequence(world):
    world.publish("stable", "v1")
    first = world.pointer_bytes("stable")
    again = world.publish("stable", "v1")
    assert again["changed"] is False and again["sequence"] == 1
    assert world.pointer_bytes("stable") == first
    second = world.publish("stable", "v2")
    assert second["sequence"] == 2 and second["previous_version"] == "v1"
    assert world.truck_check("stable")["previous_version"] == "v1"
    assert _history(world, "stable") == [(1, "v1", "publish"), (2, "v2", "publish")]


def test_a_new_pointer_is_newer_than_any_earlier_fetch_in_http_dates(world):
    """A truck's If-Modified-Since is its download time in whole seconds (get_url); a pointer
    published in that same second must still be newer, or the depot answers 304."""
    world.publish("stable", "v1")
    fetched_at = time.time()  # a truck downloads pointer 1 now
    world.publish("stable", "v2")  # and pointer 2 follows within the second
    if_modified_since = math.floor(fetched_at)
    for name in ("stable.json", "stable.json.sig"):
        last_modified = math.floor((world.depot / "channels" / name).stat().st_mtime)
        assert last_modified > if_modified_since, (name, last_modified, if_modified_since)


def test_sequences_are_per_channel_and_promote_uses_the_targets_next_one(world):
    world.publish("stable", "v1")
    world.publish("stable", "v2")
    assert world.publish("canary", "v3")["sequence"] == 1
    promoted = channels.promote(world.depot, "canary", "stable", world.keys.private_key)
    assert promoted["changed"] is True
    assert promoted["version"] == "v3" and promoted["sequence"] == 3
    pointer = world.truck_check("stable")
    assert pointer["action"] == "promote" and pointer["previous_version"] == "v2"
    assert pointer["promoted_from"] == {"channel": "canary", "sequence": 1}
    assert pointer["manifest_sha256"] == world.truck_check("canary")["manifest_sha256"]
    assert channels.promote(world.depot, "canary", "stable", world.keys.private_key)[
        "changed"
    ] is False  # fmt: skip
    assert _history(world, "canary") == [(1, "v3", "publish")]


def test_rollback_goes_back_one_release_at_a_time_with_ever_higher_sequences(world):
    for version in ("v1", "v2", "v3"):
        world.publish("stable", version)
    old_v2_pointer = channels.read_history(channels.Depot(world.depot), "stable")[1]
    back = channels.rollback(world.depot, "stable", world.keys.private_key)
    assert (back["version"], back["sequence"], back["previous_version"]) == ("v2", 4, "v3")
    pointer = world.truck_check("stable")
    assert pointer["action"] == "rollback"
    assert pointer["rolled_back_from"] == {"version": "v3", "sequence": 3}
    assert pointer["manifest_sha256"] == old_v2_pointer["manifest_sha256"]
    # A new pointer, never the old one served again (a truck would refuse that as a replay).
    new_v2_sha256 = hashlib.sha256(world.pointer_bytes("stable")).hexdigest()
    assert new_v2_sha256 != old_v2_pointer["pointer_sha256"]
    assert channels.rollback(world.depot, "stable", world.keys.private_key)["version"] == "v1"
    with pytest.raises(channels.ChannelError, match="served no other release than v1"):
        channels.rollback(world.depot, "stable", world.keys.private_key)
    assert _history(world, "stable") == [
        (1, "v1", "publish"), (2, "v2", "publish"), (3, "v3", "publish"),
        (4, "v2", "rollback"), (5, "v1", "rollback"),
    ]  # fmt: skip
    world.publish("stable", "v3")
    assert channels.rollback(world.depot, "stable", world.keys.private_key)["sequence"] == 7


def test_rollback_target_undoes_earlier_rollbacks_and_collapses_re_signing():
    def entry(version: str, action: str = "publish") -> dict:
        return {"version": version, "manifest_sha256": version * 4, "action": action}

    assert channels.rollback_target([entry("a")]) is None
    assert channels.rollback_target([entry("a"), entry("a")]) is None
    assert channels.rollback_target([entry("a"), entry("b")])["version"] == "a"
    history = [entry("a"), entry("b"), entry("c"), entry("b", "rollback")]
    assert channels.rollback_target(history)["version"] == "a"
    assert channels.rollback_target([*history, entry("d")])["version"] == "b"


def test_a_job_stopped_before_the_history_was_written_is_repaired(world):
    world.publish("stable", "v1")
    world.publish("stable", "v2")
    history_file = world.depot / "channels" / "history" / "stable.json"
    document = json.loads(history_file.read_text())
    document["entries"] = document["entries"][:1]  # the job died after the pointer's rename
    history_file.write_text(json.dumps(document))
    assert world.publish("stable", "v3")["sequence"] == 3
    assert _history(world, "stable") == [
        (1, "v1", "publish"), (2, "v2", "publish"), (3, "v3", "publish"),
    ]  # fmt: skip


def test_a_failed_write_leaves_the_old_pointer_and_no_temporary_file(world, monkeypatch):
    world.publish("stable", "v1")
    before = world.pointer_bytes("stable")
    signature = (world.depot / "channels" / "stable.json.sig").read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(channel_pointer.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        world.publish("stable", "v2")
    monkeypatch.undo()
    assert world.pointer_bytes("stable") == before
    assert (world.depot / "channels" / "stable.json.sig").read_bytes() == signature
    leftovers = [p.name for p in (world.depot / "channels").rglob(".*") if "lock" not in p.name]
    assert leftovers == []
    world.truck_check("stable")


def test_a_pointer_left_without_its_signature_is_published_again_with_a_new_sequence(
    world, monkeypatch
):
    """The job died between the pointer's and the signature's rename: the pair does not verify;
    running the job again must not call that "already published"."""
    world.publish("stable", "v1")
    real_fsync, calls = os.fsync, []

    def fail_second_file(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:  # pointer: file + directory; signature: file -> fails
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(channel_pointer.os, "fsync", fail_second_file)
    with pytest.raises(OSError):
        world.publish("stable", "v2")
    monkeypatch.undo()
    with pytest.raises(Exception, match="signature does not match"):
        world.truck_check("stable")
    result = world.publish("stable", "v2")
    assert result["changed"] is True and result["sequence"] == 3
    assert world.truck_check("stable")["version"] == "v2"


def _publish_many(depot: str, private_key: str, releases: list[str]) -> None:
    for release in releases:
        channels.publish(Path(depot), "stable", Path(release), Path(private_key))


def test_concurrent_jobs_never_give_one_sequence_twice(world):
    versions = ("v1", "v2", "v3")
    orders = [
        [str(world.releases[versions[(start + step) % 3]]) for step in range(20)]
        for start in range(3)
    ]
    context = multiprocessing.get_context("fork")
    jobs = [
        context.Process(
            target=_publish_many, args=(str(world.depot), str(world.keys.private_key), order)
        )
        for order in orders
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
        assert job.exitcode == 0
    sequences = [sequence for sequence, _v, _a in _history(world, "stable")]
    assert sequences == list(range(1, len(sequences) + 1))
    assert world.truck_check("stable")["sequence"] == sequences[-1]


def test_refusals_say_what_to_do(world, tmp_path):
    outside = make_release(tmp_path / "elsewhere", "v9", world.keys.private_key)
    with pytest.raises(channels.ChannelError, match="is not inside the depot"):
        channels.publish(world.depot, "stable", outside, world.keys.private_key)
    other = signing.generate_key_pair(tmp_path / "other")
    with pytest.raises(channels.ChannelError, match="signed with the channel's signing key"):
        channels.publish(world.depot, "stable", world.releases["v1"], other.private_key)
    (world.releases["v2"] / "manifest.json.sig").unlink()
    with pytest.raises(channels.ChannelError, match="is missing: the release is not signed"):
        world.publish("stable", "v2")
    with pytest.raises(channels.ChannelError, match="is not a channel name"):
        world.publish("../stable", "v1")
    with pytest.raises(channels.ChannelError, match="has no pointer"):
        channels.promote(world.depot, "canary", "stable", world.keys.private_key)
    with pytest.raises(channels.ChannelError, match="to itself"):
        channels.promote(world.depot, "stable", "stable", world.keys.private_key)
    with pytest.raises(channels.ChannelError, match="nothing to roll back"):
        channels.rollback(world.depot, "stable", world.keys.private_key)
    world.publish("canary", "v1")
    with pytest.raises(channels.ChannelError, match="does not verify with this signing key"):
        channels.promote(world.depot, "canary", "stable", other.private_key)
    assert not (world.depot / "channels" / "stable.json").exists()


def test_show_lists_every_channel(world):
    world.publish("stable", "v1")
    world.publish("canary", "v2")
    shown = channels.show(world.depot)
    assert sorted(shown["channels"]) == ["canary", "stable"]
    assert shown["channels"]["canary"]["pointer"]["version"] == "v2"
    assert shown["channels"]["stable"]["signed_by"] == world.keys.key_id
    assert [entry["version"] for entry in shown["channels"]["stable"]["history"]] == ["v1"]


# --- the CLI ---------------------------------------------------------------------------------


def _cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inference_image", "channel", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_publishes_promotes_rolls_back_and_shows(world):
    key, depot = str(world.keys.private_key), str(world.depot)
    for channel, version in (("stable", "v1"), ("canary", "v2")):
        done = _cli("publish", "--depot", depot, "--channel", channel,
                    "--release", str(world.releases[version]), "--signing-key", key)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["sequence"] == 1
    done = _cli("promote", "--depot", depot, "--signing-key", key)  # canary -> stable
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "v2"
    done = _cli("rollback", "--depot", depot, "--channel", "stable", "--signing-key", key)
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["version"], json.loads(done.stdout)["sequence"]) == ("v1", 3)
    done = _cli("show", "--depot", depot, "--channel", "stable")
    assert json.loads(done.stdout)["channels"]["stable"]["pointer"]["sequence"] == 3


@pytest.mark.parametrize(
    ("action", "arguments", "expect"),
    [
        ("publish", ["--channel", "stable", "--release", "{tmp}/none"], "not found"),
        ("publish", ["--channel", "stable", "--release", "{v1}"], "signing key {tmp}/absent.key"),
        ("publish", ["--channel", "a/b", "--release", "{v1}"], "is not a channel name"),
        ("promote", ["--from", "canary", "--to", "stable"], "channel canary has no pointer"),
        ("rollback", ["--channel", "stable"], "nothing to roll back"),
        ("show", ["--channel", "stable"], "channel stable has no pointer"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(world, tmp_path, action, arguments, expect):
    values = {"tmp": str(tmp_path), "v1": str(world.releases["v1"])}
    key = str(tmp_path / "absent.key") if "absent.key" in expect else str(world.keys.private_key)
    signing_key = [] if action == "show" else ["--signing-key", key]
    command = [action, "--depot", str(world.depot), *signing_key]
    done = _cli(*command, *(argument.format(**values) for argument in arguments))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"linkedge-image channel {action}: ")
    assert expect.format(**values) in done.stderr


def test_a_release_changed_after_it_was_pointed_at_is_neither_promoted_nor_rolled_back_to(world):
    """Re-signed with other content after the pointer (or the history) recorded its digest: the
    release is refused with both digests, and no pointer moves."""
    world.publish("canary", "v1")
    world.publish("stable", "v1")
    world.publish("stable", "v2")
    manifest = world.releases["v1"] / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"aps-classifier"', '"aps-classifier-2"'))
    (world.releases["v1"] / "manifest.json.sig").unlink()
    sign_release(world.releases["v1"], world.keys.private_key)
    changed = hashlib.sha256(manifest.read_bytes()).hexdigest()
    stable_before = world.pointer_bytes("stable")
    with pytest.raises(channels.ChannelError) as promoted:
        channels.promote(world.depot, "canary", "stable", world.keys.private_key)
    assert "releases/v1/manifest.json changed since channel canary pointed at it" in str(
        promoted.value
    )
    assert f"(sha256 {changed}, the pointer says " in str(promoted.value)
    with pytest.raises(channels.ChannelError) as rolled:
        channels.rollback(world.depot, "stable", world.keys.private_key)
    assert "releases/v1/manifest.json changed since channel stable served it" in str(rolled.value)
    assert "the history says" in str(rolled.value)
    assert world.pointer_bytes("stable") == stable_before

"""Channels: signed pointers naming the release each channel (stable, canary, ...) serves.

The depot is a directory served to the trucks (static HTTP(S), a USB stick)::

    <depot>/releases/<version>/          releases, as `linkedge-image publish` writes them
    <depot>/channels/<name>.json         the channel's pointer (docs/channels.md)
    <depot>/channels/<name>.json.sig     its Ed25519 signature (the release signature format)
    <depot>/channels/history/<name>.json every pointer the channel had, oldest first

Every pointer a channel gets has a sequence one higher than the channel's last, whatever made
it: `publish` (a release), `promote` (the release another channel points at) or `rollback`
(the channel's previous release). A truck refuses a lower sequence than one it has accepted,
so going back is a new pointer too, never an old one served again.

A channel points only at a release inside the depot whose manifest is signed by the channel's
signing key: the pointer's ``manifest_path`` is where a truck fetches it, ``manifest_sha256``
what it must hash to. Files are replaced atomically and each channel's changes are serialised
by a lock file, so two CI jobs never give one sequence twice. The pointer's format is checked
with the truck's own code (channel_pointer.py, a link to the collection's module_utils).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import signing
from .channel_pointer import CHANNEL_NAME, POINTER, parse_pointer, write_atomically
from .contract import (
    CHANNEL_HISTORY_DIR,
    CHANNEL_PATTERN,
    CHANNELS_DIR,
    DEPOT_RELEASES_DIR,
    MANIFEST_FILE,
    POINTER_FORMAT,
    POINTER_FROM_MANIFEST,
    POINTER_SUFFIX,
    SIGNATURE_SUFFIX,
    channel_pointer_path,
)
from .release import read_manifest
from .release_signature import ReleaseRefused, TrustStore


class ChannelError(RuntimeError):
    """A channel cannot be published, promoted, rolled back or read; the message says why and
    what to do."""


@dataclass(frozen=True)
class Depot:
    root: Path

    def pointer(self, channel: str) -> Path:
        return self.root / channel_pointer_path(channel)

    def signature(self, channel: str) -> Path:
        pointer = self.pointer(channel)
        return pointer.with_name(pointer.name + SIGNATURE_SUFFIX)

    def history(self, channel: str) -> Path:
        return self.root / CHANNELS_DIR / CHANNEL_HISTORY_DIR / f"{channel}.json"

    def lock(self, channel: str) -> Path:
        return self.root / CHANNELS_DIR / f".{channel}.lock"


@dataclass(frozen=True)
class Release:
    """A signed release inside the depot, as a pointer names it."""

    manifest: dict[str, Any]
    manifest_sha256: str
    manifest_path: str  # relative to the depot's root, "/"-separated


def check_channel_name(channel: str) -> str:
    if not CHANNEL_NAME.fullmatch(channel or ""):
        raise ChannelError(
            f"{channel!r} is not a channel name: use letters, digits, '-' and '_' "
            f"({CHANNEL_PATTERN}), such as stable or canary"
        )
    return channel


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@contextlib.contextmanager
def _locked(depot: Depot, channel: str) -> Iterator[None]:
    """One change of CHANNEL at a time, across processes (CI jobs) on this depot."""
    path = depot.lock(channel)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- reading -------------------------------------------------------------------------------------


def read_pointer(depot: Depot, channel: str) -> dict[str, Any] | None:
    """The channel's current pointer (checked with the truck's parser), None when it has none."""
    path = depot.pointer(channel)
    if not path.is_file():
        return None
    try:
        return parse_pointer(path.read_bytes(), str(path))
    except ReleaseRefused as exc:
        raise ChannelError(f"{exc}; or remove {path} to start the channel again") from None


def read_history(depot: Depot, channel: str) -> list[dict[str, Any]]:
    """Every pointer the channel had (summaries), oldest first."""
    path = depot.history(channel)
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())["entries"]
        if not isinstance(entries, list):
            raise ValueError("entries is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise ChannelError(
            f"channel history {path} is not readable ({exc}): restore it from the depot's "
            f"backup; rollback needs it"
        ) from None
    return entries


def _signed_by(depot: Depot, channel: str) -> str:
    """The key id the channel's signature file names ("" when it has none)."""
    try:
        return str(json.loads(depot.signature(channel).read_text()).get("key_id") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _history_entry(pointer: dict[str, Any], data: bytes, key_id: str) -> dict[str, Any]:
    return {
        "sequence": pointer["sequence"],
        "version": pointer["version"],
        "manifest_sha256": pointer["manifest_sha256"],
        "manifest_path": pointer["manifest_path"],
        "action": pointer.get("action", "publish"),
        "published_at": pointer["published_at"],
        "pointer_sha256": hashlib.sha256(data).hexdigest(),
        "key_id": key_id,
    }


def _reconciled_history(
    depot: Depot, channel: str, current: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The history, plus the current pointer when a job stopped after writing it and before
    recording it."""
    history = read_history(depot, channel)
    last = history[-1]["sequence"] if history else 0
    if current is not None and current["sequence"] > last:
        data = depot.pointer(channel).read_bytes()
        history.append(_history_entry(current, data, _signed_by(depot, channel)))
    return history


def _next_sequence(current: dict[str, Any] | None, history: list[dict[str, Any]]) -> int:
    sequences = [entry["sequence"] for entry in history]
    if current is not None:
        sequences.append(current["sequence"])
    return max(sequences, default=0) + 1


def _pointer_verifies(depot: Depot, channel: str, key: Ed25519PrivateKey) -> bool:
    """Whether the channel's pointer and signature file match and are signed by KEY."""
    try:
        TrustStore([_raw_public_key(key)]).verify(
            depot.pointer(channel).read_bytes(), str(depot.signature(channel)), POINTER
        )
    except (ReleaseRefused, OSError):
        return False
    return True


def _release(depot: Depot, release_dir: Path, key: Ed25519PrivateKey) -> Release:
    """The release in RELEASE_DIR, which must be inside the depot and signed by KEY."""
    release_dir, root = Path(release_dir).resolve(), depot.root.resolve()
    if not release_dir.is_dir():
        raise ChannelError(
            f"release {release_dir} not found: publish it into the depot first (linkedge-image "
            f"publish --releases {root}/{DEPOT_RELEASES_DIR} --signing-key KEY ...)"
        )
    manifest_file = release_dir / MANIFEST_FILE
    try:
        manifest_path = manifest_file.relative_to(root).as_posix()
    except ValueError:
        raise ChannelError(
            f"release {release_dir} is not inside the depot {root}: publish the release into "
            f"the depot (linkedge-image publish --releases {root}/{DEPOT_RELEASES_DIR}) so "
            f"that trucks can fetch it by the path the pointer names"
        ) from None
    manifest = read_manifest(release_dir)
    try:
        signing.verify_manifest(manifest_file, key.public_key())
    except signing.SigningError as exc:
        raise ChannelError(
            f"release {release_dir} cannot be pointed at: {exc}; a channel points only at a "
            f"release signed with the channel's signing key (linkedge-image sign --release "
            f"{release_dir} --signing-key KEY)"
        ) from None
    digest = hashlib.sha256(manifest_file.read_bytes()).hexdigest()
    return Release(manifest, digest, manifest_path)


# --- writing -------------------------------------------------------------------------------------


def build_pointer(
    channel: str, sequence: int, release: Release, action: str, previous_version: str | None,
    **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """The pointer document (docs/channels.md)."""
    copied = {
        name: release.manifest[name] for name in POINTER_FROM_MANIFEST if name in release.manifest
    }
    return {
        "format": POINTER_FORMAT,
        "channel": channel,
        "sequence": sequence,
        "version": release.manifest["version"],
        "manifest_sha256": release.manifest_sha256,
        "manifest_path": release.manifest_path,
        "published_at": _now(),
        "action": action,
        "previous_version": previous_version,
        **copied,
        **extra,
    }


def pointer_bytes(pointer: dict[str, Any]) -> bytes:
    """The exact bytes written and signed."""
    return (json.dumps(pointer, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _write(
    depot: Depot, pointer: dict[str, Any], key: Ed25519PrivateKey, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write the pointer, its signature, then the history (each atomically).

    The pointer and its signature are dated the next whole second: HTTP dates have whole
    seconds, and a truck asks with If-Modified-Since its own download time (Ansible's
    get_url), so a pointer written in the second a truck fetched the previous one would be
    answered 304 until the channel changed again. Any earlier fetch is now older."""
    channel = pointer["channel"]
    visible_from = math.floor(time.time()) + 1
    data = pointer_bytes(pointer)
    parse_pointer(data, str(depot.pointer(channel)))  # what a truck will check, checked here
    record = signing.sign_bytes(key, data)
    depot.history(channel).parent.mkdir(parents=True, exist_ok=True)
    write_atomically(str(depot.pointer(channel)), data, mtime=visible_from)
    signature = json.dumps(record, indent=2, sort_keys=True) + "\n"
    write_atomically(str(depot.signature(channel)), signature.encode("utf-8"), mtime=visible_from)
    history = [*history, _history_entry(pointer, data, record["key_id"])]
    document = {"channel": channel, "entries": history}
    write_atomically(
        str(depot.history(channel)), (json.dumps(document, indent=2) + "\n").encode("utf-8")
    )
    return _result(depot, pointer, record["key_id"], changed=True)


def _result(depot: Depot, pointer: dict[str, Any], key_id: str, changed: bool) -> dict[str, Any]:
    channel = pointer["channel"]
    return {
        "channel": channel,
        "version": pointer["version"],
        "sequence": pointer["sequence"],
        "action": pointer.get("action"),
        "previous_version": pointer.get("previous_version"),
        "manifest_path": pointer["manifest_path"],
        "pointer": str(depot.pointer(channel)),
        "signature": str(depot.signature(channel)),
        "key_id": key_id,
        "changed": changed,
    }


def _point(
    depot: Depot, channel: str, release: Release, key: Ed25519PrivateKey, action: str,
    **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """Point CHANNEL at RELEASE with the next sequence; nothing when it already points there
    with a pointer signed by KEY (a CI job run again)."""
    with _locked(depot, channel):
        current = read_pointer(depot, channel)
        history = _reconciled_history(depot, channel, current)
        if (
            current is not None
            and current["manifest_sha256"] == release.manifest_sha256
            and _pointer_verifies(depot, channel, key)
        ):
            return _result(depot, current, signing.key_id(key.public_key()), changed=False)
        pointer = build_pointer(
            channel,
            _next_sequence(current, history),
            release,
            action,
            current["version"] if current else None,
            **extra,
        )
        return _write(depot, pointer, key, history)


def publish(depot_root: Path, channel: str, release_dir: Path, signing_key: Path) -> dict[str, Any]:
    """Point CHANNEL at the signed release in RELEASE_DIR (inside the depot)."""
    depot, key = Depot(Path(depot_root)), signing.load_private_key(signing_key)
    release = _release(depot, release_dir, key)
    return _point(depot, check_channel_name(channel), release, key, "publish")


def promote(depot_root: Path, source: str, target: str, signing_key: Path) -> dict[str, Any]:
    """Point TARGET (stable) at the release SOURCE (canary) points at, with TARGET's next
    sequence."""
    depot, key = Depot(Path(depot_root)), signing.load_private_key(signing_key)
    if check_channel_name(source) == check_channel_name(target):
        raise ChannelError(f"cannot promote channel {source} to itself: name another --to")
    pointer = read_pointer(depot, source)
    if pointer is None:
        raise ChannelError(
            f"channel {source} has no pointer in {depot.root}: publish a release to it first "
            f"(linkedge-image channel publish --channel {source})"
        )
    if not _pointer_verifies(depot, source, key):
        raise ChannelError(
            f"channel {source}'s pointer {depot.pointer(source)} does not verify with this "
            f"signing key ({signing.key_id(key.public_key())}): it was altered or signed by "
            f"another key; publish {source} again with this key, then promote"
        )
    release = _recorded_release(
        depot,
        pointer,
        key,
        f"channel {source} pointed at it",
        "the pointer",
        f"publish {source} again after checking the release",
    )
    promoted_from = {"channel": source, "sequence": pointer["sequence"]}
    return _point(depot, target, release, key, "promote", promoted_from=promoted_from)


def _recorded_release(
    depot: Depot, entry: dict[str, Any], key: Ed25519PrivateKey, since: str, record: str,
    advice: str,
) -> Release:  # fmt: skip
    """The release a pointer or history ``entry`` names, refused when its manifest is no longer
    the one the entry recorded."""
    release = _release(depot, depot.root / Path(entry["manifest_path"]).parent, key)
    if release.manifest_sha256 != entry["manifest_sha256"]:
        raise ChannelError(
            f"release {entry['manifest_path']} changed since {since} "
            f"(sha256 {release.manifest_sha256}, {record} says {entry['manifest_sha256']}): "
            f"{advice}"
        )
    return release


def rollback_target(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The history entry a rollback returns to: the release the channel served before its
    current one, earlier rollbacks undone (publish v1, v2, v3; rollback -> v2; rollback -> v1).
    None when there is none."""
    served: list[dict[str, Any]] = []  # releases in the order the channel came to serve them
    for entry in history:
        if entry.get("action") == "rollback" and served:
            served.pop()  # the release rolled back from
        if served and served[-1]["manifest_sha256"] == entry["manifest_sha256"]:
            served[-1] = entry  # the same release again (re-signed): one step
        else:
            served.append(entry)
    return served[-2] if len(served) >= 2 else None


def _rollback_release(
    depot: Depot, channel: str, current: dict[str, Any], history: list[dict[str, Any]],
    key: Ed25519PrivateKey,
) -> Release:  # fmt: skip
    target = rollback_target(history)
    if target is None:
        raise ChannelError(
            f"channel {channel} has served no other release than {current['version']}: "
            f"nothing to roll back to; publish the release to serve instead"
        )
    return _recorded_release(
        depot,
        target,
        key,
        f"channel {channel} served it",
        "the history",
        "publish the release to serve instead",
    )


def rollback(depot_root: Path, channel: str, signing_key: Path) -> dict[str, Any]:
    """Point CHANNEL back at its previous release with a NEW, higher sequence."""
    depot, key = Depot(Path(depot_root)), signing.load_private_key(signing_key)
    check_channel_name(channel)
    with _locked(depot, channel):
        current = read_pointer(depot, channel)
        if current is None:
            raise ChannelError(
                f"channel {channel} has no pointer in {depot.root}: nothing to roll back"
            )
        history = _reconciled_history(depot, channel, current)
        release = _rollback_release(depot, channel, current, history, key)
        pointer = build_pointer(
            channel,
            _next_sequence(current, history),
            release,
            "rollback",
            current["version"],
            rolled_back_from={"version": current["version"], "sequence": current["sequence"]},
        )
        return _write(depot, pointer, key, history)


def show(depot_root: Path, channel: str | None = None) -> dict[str, Any]:
    """Each channel's pointer, the key its signature names and its history."""
    depot = Depot(Path(depot_root))
    if channel is not None:
        names = [check_channel_name(channel)]
    else:
        names = sorted(path.stem for path in (depot.root / CHANNELS_DIR).glob(f"*{POINTER_SUFFIX}"))
    channels = {}
    for name in names:
        pointer = read_pointer(depot, name)
        if pointer is None:
            raise ChannelError(f"channel {name} has no pointer in {depot.root}")
        channels[name] = {
            "pointer": pointer,
            "signed_by": _signed_by(depot, name),
            "history": read_history(depot, name),
        }
    return {"depot": str(depot.root), "channels": channels}

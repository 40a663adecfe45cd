# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Check a signed channel pointer on the truck (docs/channels.md).

A pointer is ``<depot>/channels/<name>.json``, signed like a release manifest
(``<name>.json.sig``, the same signature file format, judged by the same TrustStore). The truck
accepts it when, in this order: a trusted, unrevoked key signed its exact bytes; it is a
well-formed pointer; it is for the channel the truck follows; and its ``sequence`` is not lower
than the highest this truck has accepted for that channel (kept in a small state file). An
equal sequence is accepted only with identical bytes (the same pointer fetched again).

The state file keeps one entry per channel (sequences are per channel, so a truck moved from
``canary`` to ``stable`` and back keeps its replay protection for both) and is replaced
atomically. The builder uses parse_pointer too (inference_image/channel_pointer.py is a link to
this file): one definition of the format.

Python 3.8+, standard library and python3-cryptography only (through release_signature).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time

from .contract import CHANNEL_PATTERN, POINTER_FORMAT, POINTER_REQUIRED
from .release_signature import (
    REASON_MALFORMED,
    REASON_MISSING,
    ReleaseRefused,
    Signed,
    TrustStore,
)

NOT_APPLIED = "the pointer was not applied"
POINTER = Signed(
    noun="the channel pointer",
    unsigned=(
        "the channel pointer is not signed or its signature was not fetched; publish the "
        "channel with `linkedge-image channel publish --signing-key KEY` and sync again"
    ),
    republish="publish the channel again (linkedge-image channel publish)",
    outcome=NOT_APPLIED,
)

# Reasons a pointer is refused, besides the trust store's (release_signature.REASON_*).
REASON_WRONG_CHANNEL = "wrong_channel"
REASON_REPLAYED = "replayed"
REASON_SEQUENCE_CONFLICT = "sequence_conflict"
REASON_BAD_STATE = "bad_state"

STATE_FORMAT = 1
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
CHANNEL_NAME = re.compile(CHANNEL_PATTERN)


def _malformed(path: str, problem: str) -> ReleaseRefused:
    return ReleaseRefused(
        f"channel pointer {path} is malformed ({problem}): {POINTER.republish} with a current "
        f"builder; {NOT_APPLIED}",
        REASON_MALFORMED,
    )


def read_pointer_bytes(path: str) -> bytes:
    """The pointer file's exact bytes (what the signature covers)."""
    if not os.path.isfile(path):
        raise ReleaseRefused(
            f"channel pointer {path} is missing: fetch <depot>/channels/<channel>.json to the "
            f"truck first (is the channel published? linkedge-image channel show); {NOT_APPLIED}",
            REASON_MISSING,
        )
    with open(path, "rb") as handle:
        return handle.read()


def _relative_path_problem(value) -> str | None:
    if not isinstance(value, str) or not value:
        return "manifest_path is not a path"
    parts = value.split("/")
    if value.startswith("/") or "\\" in value or ".." in parts or "" in parts:
        return f"manifest_path {value!r} is not a plain path relative to the depot's root"
    return None


def _field_problem(pointer: dict) -> str | None:
    """What is wrong with a decoded pointer's fields, or None."""
    missing = [name for name in POINTER_REQUIRED if name not in pointer]
    if missing:
        return f"it lacks {', '.join(missing)}"
    fmt = pointer["format"]
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        return f"format {fmt!r} is not a format number"
    if fmt > POINTER_FORMAT:
        return f"format {fmt} is newer than this collection reads ({POINTER_FORMAT}): upgrade it"
    channel = pointer["channel"]
    if not isinstance(channel, str) or not CHANNEL_NAME.fullmatch(channel):
        return f"channel {channel!r} is not a channel name ({CHANNEL_PATTERN})"
    sequence = pointer["sequence"]
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
        return f"sequence {sequence!r} is not a positive integer"
    if not isinstance(pointer["version"], str) or not pointer["version"].strip():
        return "version is empty"
    digest = pointer["manifest_sha256"]
    if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
        return f"manifest_sha256 {digest!r} is not a sha256 (64 lower-case hex digits)"
    if not isinstance(pointer["published_at"], str):
        return "published_at is not a time stamp"
    return _relative_path_problem(pointer["manifest_path"])


def parse_pointer(data: bytes, path: str) -> dict:
    """The pointer in DATA (its signed bytes), checked field by field; ReleaseRefused
    (malformed) otherwise."""
    try:
        pointer = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise _malformed(path, f"not JSON: {exc}") from None
    if not isinstance(pointer, dict):
        raise _malformed(path, "not a JSON object")
    problem = _field_problem(pointer)
    if problem:
        raise _malformed(path, problem)
    return pointer


def check_channel(pointer: dict, channel: str, path: str) -> None:
    """The pointer must be for CHANNEL, the channel this truck follows."""
    if pointer["channel"] != channel:
        raise ReleaseRefused(
            f"channel pointer {path} is for channel {pointer['channel']!r}, this truck follows "
            f"{channel!r}: fetch <depot>/channels/{channel}.json (or change the truck's channel "
            f"in its inventory); {NOT_APPLIED}",
            REASON_WRONG_CHANNEL,
        )


def verify_pointer(path: str, signature_path: str, trust: TrustStore, channel: str) -> tuple:
    """(pointer, sha256 of its bytes, id of the key that signed it): signature first (over the
    exact bytes), then the format, then the channel."""
    data = read_pointer_bytes(path)
    signer = trust.verify(data, signature_path, POINTER)
    pointer = parse_pointer(data, path)
    check_channel(pointer, channel, path)
    return pointer, hashlib.sha256(data).hexdigest(), signer


# --- the truck's state: the highest sequence accepted per channel ---------------------------------


def _bad_state(path: str, problem: str) -> ReleaseRefused:
    return ReleaseRefused(
        f"channel state file {path} cannot be used ({problem}): without it a replayed pointer "
        f"cannot be told from a new one; restore it, or remove it to accept the next valid "
        f"pointer as the first this truck sees; {NOT_APPLIED}",
        REASON_BAD_STATE,
    )


def _entry_problem(name, entry) -> str | None:
    if not isinstance(entry, dict):
        return f"channel {name!r} is not an object"
    sequence = entry.get("sequence")
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        return f"channel {name!r} has no integer sequence"
    if not isinstance(entry.get("pointer_sha256"), str):
        return f"channel {name!r} has no pointer_sha256"
    return None


def read_state(path: str) -> dict:
    """The state file's content; an empty state when the file does not exist yet."""
    if not os.path.exists(path):
        return {"format": STATE_FORMAT, "channels": {}}
    try:
        with open(path, "rb") as handle:
            state = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise _bad_state(path, str(exc)) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise _bad_state(path, f"not a format {STATE_FORMAT} channel state")
    channels = state.get("channels")
    if not isinstance(channels, dict):
        raise _bad_state(path, "it has no channels object")
    for name, entry in channels.items():
        problem = _entry_problem(name, entry)
        if problem:
            raise _bad_state(path, problem)
    return state


def last_accepted(state: dict, channel: str) -> dict | None:
    """What this truck last accepted for CHANNEL (sequence, pointer_sha256, version, ...)."""
    return state["channels"].get(channel)


def is_new(pointer: dict, pointer_sha256: str, last: dict | None, path: str) -> bool:
    """True for a higher sequence than LAST's (or none yet), False for the pointer LAST
    accepted; ReleaseRefused for a lower sequence (replayed) or an equal one with other
    bytes (sequence_conflict)."""
    if last is None or pointer["sequence"] > last["sequence"]:
        return True
    if pointer["sequence"] == last["sequence"]:
        if pointer_sha256 == last["pointer_sha256"]:
            return False
        raise ReleaseRefused(
            f"channel pointer {path} has sequence {pointer['sequence']} (version "
            f"{pointer['version']}), which this truck already accepted with other content "
            f"(version {last.get('version')}): two pointers were signed with one sequence, a "
            f"fault of the publishing job or a leaked key; publish the channel again (it gets "
            f"sequence {pointer['sequence'] + 1}) and check who holds the signing key; "
            f"{NOT_APPLIED}",
            REASON_SEQUENCE_CONFLICT,
        )
    raise ReleaseRefused(
        f"channel pointer {path} has sequence {pointer['sequence']} (version "
        f"{pointer['version']}), lower than sequence {last['sequence']} (version "
        f"{last.get('version')}) this truck already accepted for channel {pointer['channel']}: "
        f"an old pointer was replayed (a stale mirror or an attacker); serve the channel's "
        f"current pointer, and to go back to an older version use `linkedge-image channel "
        f"rollback`, which publishes a higher sequence; {NOT_APPLIED}",
        REASON_REPLAYED,
    )


def accepted_state(state: dict, pointer: dict, pointer_sha256: str, signer: str) -> dict:
    """STATE with POINTER recorded as its channel's last accepted pointer."""
    channels = dict(state["channels"])
    channels[pointer["channel"]] = {
        "sequence": pointer["sequence"],
        "pointer_sha256": pointer_sha256,
        "version": pointer["version"],
        "manifest_sha256": pointer["manifest_sha256"],
        "published_at": pointer["published_at"],
        "key_id": signer,
        "accepted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return {"format": STATE_FORMAT, "channels": channels}


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, mode: int = 0o644, mtime=None) -> None:
    """Replace PATH with DATA so that a reader (or a power cut) sees the old or the new
    content, never a mix: a temporary file in the same directory, fsync'ed, then renamed.
    MTIME (seconds), when given, is the file's modification time from the first moment it
    is visible."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if mtime is not None:
            os.utime(temporary, (mtime, mtime))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def write_state(path: str, state: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755)
    write_atomically(path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8"))

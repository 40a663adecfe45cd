# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Mosquitto 2.0 password files: hash, verify, parse and write them like mosquitto_passwd.

A line is ``<user>:$7$<iterations>$<base64 salt>$<base64 hash>``: PBKDF2-HMAC-SHA512 of the
UTF-8 password with the raw salt bytes (12 random bytes) and that many iterations, 64 bytes of
output, both base64 with padding (what ``mosquitto_passwd`` 2.0 writes with its default
``-H sha512-pbkdf2``, 101 iterations). Mosquitto 1.x's ``$6$<salt>$<hash>`` (one SHA-512 of
password + salt) is still verified, so an old file is taken over without changing a password;
it is rewritten as ``$7$``.

How mosquitto 2.0 reads the file (src/security_default.c, ``pwfile__parse``): lines starting
with ``#`` and lines without ``:`` are skipped, the user name is what precedes the first ``:``
(surrounding blanks trimmed), the hash what follows. Hence the names refused here: empty, with
``:``, a leading ``#``, surrounding blanks or control characters.

Used by the module linkedge.edge.mqtt_passwd on the target: standard library only, Python 3.8+.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

PBKDF2_SCHEME = "7"  # $7$: sha512-pbkdf2, mosquitto >= 2.0
SHA512_SCHEME = "6"  # $6$: salted sha512, mosquitto 1.x (verified, never written)
DEFAULT_ITERATIONS = 101  # mosquitto_passwd's default
MIN_ITERATIONS = 1
# Mosquitto verifies a password on every CONNECT in its one event-loop thread: a very high
# count stalls every client while one authenticates. Far above any sensible setting.
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 12
HASH_BYTES = 64
MAX_FIELD_BYTES = 65535  # mosquitto skips longer user names and hashes


class PasswordFileError(ValueError):
    """A user name, password or setting mosquitto cannot use; the message says which."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS, salt=None) -> str:
    """``$7$<iterations>$<salt>$<hash>`` for `password` (a new random salt unless given)."""
    check_iterations(iterations)
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"${PBKDF2_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def parse_hash(encoded: str):
    """(scheme, iterations, salt, digest) of a ``$7$`` or ``$6$`` hash; None when it is neither
    (a plain-text or otherwise unknown entry)."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[0] == "" and parts[1] == PBKDF2_SCHEME:
            iterations = int(parts[2])
            if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
                return None
            return (
                PBKDF2_SCHEME,
                iterations,
                base64.b64decode(parts[3], validate=True),
                base64.b64decode(parts[4], validate=True),
            )
        if len(parts) == 4 and parts[0] == "" and parts[1] == SHA512_SCHEME:
            return (
                SHA512_SCHEME,
                None,
                base64.b64decode(parts[2], validate=True),
                base64.b64decode(parts[3], validate=True),
            )
    except (ValueError, binascii.Error):
        return None
    return None


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches the hash `encoded` (constant-time comparison)."""
    parsed = parse_hash(encoded)
    if parsed is None:
        return False
    scheme, iterations, salt, digest = parsed
    secret = password.encode("utf-8")
    if scheme == PBKDF2_SCHEME:
        computed = hashlib.pbkdf2_hmac("sha512", secret, salt, iterations, len(digest) or None)
    else:
        computed = hashlib.sha512(secret + salt).digest()
    return hmac.compare_digest(computed, digest)


def hash_iterations(encoded: str):
    """The iteration count of a ``$7$`` hash; None for any other entry."""
    parsed = parse_hash(encoded)
    return parsed[1] if parsed is not None and parsed[0] == PBKDF2_SCHEME else None


def check_iterations(iterations) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, int):
        raise PasswordFileError(f"iterations must be an integer, not {iterations!r}")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise PasswordFileError(
            f"iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, not {iterations}"
        )


def username_problem(name) -> str | None:
    """Why mosquitto could not use `name` as a user name in its password file; None if it can."""
    if not isinstance(name, str) or name == "":
        return "is empty"
    if ":" in name:
        return "contains ':' (the password file's separator)"
    if name.startswith("#"):
        return "starts with '#' (mosquitto reads the line as a comment)"
    if name != name.strip():
        return "starts or ends with blanks (mosquitto trims them)"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "contains a control character"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if len(encoded) > MAX_FIELD_BYTES:
        return f"is longer than {MAX_FIELD_BYTES} bytes"
    return None


def password_problem(password) -> str | None:
    """Why `password` cannot be used; None if it can."""
    if not isinstance(password, str) or password == "":
        return "is empty"
    if "\x00" in password:
        return "contains a NUL character (an MQTT client cannot send it)"
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def parse_password_file(text: str) -> dict:
    """{user: hash} as mosquitto reads `text` (comments, blank and malformed lines dropped; a
    later line for the same user wins, as in mosquitto's hash table)."""
    entries: dict = {}
    for line in text.splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        user, rest = line.split(":", 1)
        user = user.strip()
        encoded = rest.split(":", 1)[0].strip()
        if user and encoded:
            entries[user] = encoded
    return entries


def render_password_file(entries: dict) -> str:
    """The file's text: one ``user:hash`` line per user, sorted by user name, so the same users
    and hashes always give the same bytes whatever order they were listed in."""
    return "".join(f"{user}:{entries[user]}\n" for user in sorted(entries))


def plan_password_file(existing: dict, wanted: list, iterations: int, remove_unlisted: bool):
    """What the file should hold: (entries, added, updated, removed), names sorted.

    `existing`: {user: hash} read from the file; `wanted`: [(user, password)]. A listed user
    whose current hash still verifies the password with `iterations` keeps that hash (same salt,
    same bytes: a rerun changes nothing); otherwise it gets a new hash. Users not listed are
    removed when `remove_unlisted`, else kept as they are."""
    check_iterations(iterations)
    seen = set()
    for user, password in wanted:
        problem = username_problem(user)
        if problem:
            raise PasswordFileError(f"user name {user!r} {problem}")
        if user in seen:
            raise PasswordFileError(f"user {user!r} is listed more than once")
        seen.add(user)
        problem = password_problem(password)
        if problem:
            raise PasswordFileError(f"the password of user {user!r} {problem}")
    entries: dict = {}
    added, updated = [], []
    for user, password in wanted:
        current = existing.get(user)
        if (
            current is not None
            and hash_iterations(current) == iterations
            and verify_password(password, current)
        ):
            entries[user] = current
            continue
        entries[user] = hash_password(password, iterations)
        (updated if current is not None else added).append(user)
    removed = []
    for user, encoded in existing.items():
        if user in entries:
            continue
        if remove_unlisted:
            removed.append(user)
        else:
            entries[user] = encoded
    return entries, sorted(added), sorted(updated), sorted(removed)

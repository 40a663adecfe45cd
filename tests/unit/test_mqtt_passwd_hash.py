"""Mosquitto password hashing (plugins/module_utils/mqtt_password.py) against mosquitto_passwd.

The reference lines were written by Debian 12's `mosquitto_passwd` 2.0.11 (`-b` for $7$,
`-H sha512` for the 1.x format); the module must verify them and write lines of the same shape.
When `mosquitto_passwd` is installed, a fresh line from it is checked too.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COLLECTIONS = Path(__file__).resolve().parents[2] / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
mqtt_password = importlib.import_module(
    "ansible_collections.linkedge.edge.plugins.module_utils.mqtt_password"
)

# mosquitto_passwd -c -b pw alice secret (2.0.11, sha512-pbkdf2, 101 iterations)
REFERENCE_7 = (
    "$7$101$IOZsu7AJmBbU4x7W$2KDpf7gDFF+vOxp/tnmUeH95Pw7MzmrUu+xV5bxMABR3UKALTn8n1WT1SxgBQgU3E3wjSSME"
    "7LxxTD61GO1OUQ=="
)
# mosquitto_passwd -H sha512 -b pw bob x (the Mosquitto 1.x format)
REFERENCE_6 = (
    "$6$iWIkYLDgOw0j+LKS$3SKXAHrVsj+GfmEr3T6MtzlbVYwK3V5ikTInPDjkrmWLTCmeWMYjU/7VKU3ayP2lybwQnUXRc"
    "rRiZnGj5V1u3A=="
)
LINE = re.compile(r"^\$7\$(\d+)\$([A-Za-z0-9+/]{16})\$([A-Za-z0-9+/]{86}==)$")


def test_verifies_what_mosquitto_passwd_wrote():
    assert mqtt_password.verify_password("secret", REFERENCE_7)
    assert not mqtt_password.verify_password("Secret", REFERENCE_7)
    assert mqtt_password.verify_password("x", REFERENCE_6)
    assert not mqtt_password.verify_password("y", REFERENCE_6)
    assert mqtt_password.hash_iterations(REFERENCE_7) == 101
    assert mqtt_password.hash_iterations(REFERENCE_6) is None


def test_writes_the_same_shape_as_mosquitto_passwd():
    encoded = mqtt_password.hash_password("secret")
    match = LINE.match(encoded)
    assert match, encoded
    assert LINE.match(REFERENCE_7)
    iterations, salt, digest = match.groups()
    assert int(iterations) == 101
    assert len(base64.b64decode(salt)) == 12
    expected = hashlib.pbkdf2_hmac("sha512", b"secret", base64.b64decode(salt), 101)
    assert base64.b64decode(digest) == expected
    assert mqtt_password.verify_password("secret", encoded)
    # a new salt every time
    assert mqtt_password.hash_password("secret") != encoded


def test_known_salt_gives_mosquitto_passwd_s_hash():
    salt = base64.b64decode("IOZsu7AJmBbU4x7W")
    assert mqtt_password.hash_password("secret", 101, salt) == REFERENCE_7


def test_other_iterations_and_unicode():
    encoded = mqtt_password.hash_password("pässwörd-λ", 1000)
    assert encoded.startswith("$7$1000$")
    assert mqtt_password.verify_password("pässwörd-λ", encoded)
    assert not mqtt_password.verify_password("passwörd-λ", encoded)


@pytest.mark.parametrize(
    "encoded",
    ["", "plain", "$7$$a$b", "$7$0$AAAA$AAAA", "$7$abc$AAAA$AAAA", "$7$101$!!$AAAA", "$5$a$b"],
)
def test_unknown_entries_never_verify(encoded):
    assert not mqtt_password.verify_password("plain", encoded)
    assert mqtt_password.parse_hash(encoded) is None


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto_passwd not installed")
def test_verifies_a_fresh_mosquitto_passwd_line(tmp_path):
    path = tmp_path / "pw"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(path), "carol", "c4r0l pass:with:colons"],
        check=True,
        capture_output=True,
    )
    entries = mqtt_password.parse_password_file(path.read_text())
    assert list(entries) == ["carol"]
    assert LINE.match(entries["carol"])
    assert mqtt_password.verify_password("c4r0l pass:with:colons", entries["carol"])


def test_parse_reads_the_file_as_mosquitto_does():
    text = (
        "# a comment\n"
        "\n"
        "no separator here\n"
        f" alice :{REFERENCE_7}\n"
        f"bob:{REFERENCE_6}\n"
        f"alice:{REFERENCE_6}\n"  # a later line for the same user wins
    )
    assert mqtt_password.parse_password_file(text) == {"alice": REFERENCE_6, "bob": REFERENCE_6}


def test_render_is_sorted_and_stable():
    entries = {"zed": "$7$1$a$b", "amy": "$7$1$c$d"}
    assert mqtt_password.render_password_file(entries) == "amy:$7$1$c$d\nzed:$7$1$a$b\n"
    assert mqtt_password.render_password_file({}) == ""


def test_plan_keeps_hashes_that_still_verify():
    existing = {"alice": REFERENCE_7, "bob": REFERENCE_6, "old": REFERENCE_7}
    entries, added, updated, removed = mqtt_password.plan_password_file(
        existing, [("alice", "secret"), ("bob", "x"), ("new", "n3w-password")], 101, True
    )
    assert entries["alice"] == REFERENCE_7  # unchanged: same salt, same bytes
    assert entries["bob"].startswith("$7$101$")  # 1.x hash rewritten in the 2.0 format
    assert mqtt_password.verify_password("x", entries["bob"])
    assert mqtt_password.verify_password("n3w-password", entries["new"])
    assert (added, updated, removed) == (["new"], ["bob"], ["old"])
    assert sorted(entries) == ["alice", "bob", "new"]


def test_plan_rehashes_changed_passwords_and_iterations():
    existing = {"alice": REFERENCE_7}
    _, added, updated, _ = mqtt_password.plan_password_file(
        existing, [("alice", "changed")], 101, True
    )
    assert (added, updated) == ([], ["alice"])
    entries, _, updated, _ = mqtt_password.plan_password_file(
        existing, [("alice", "secret")], 5000, True
    )
    assert updated == ["alice"] and entries["alice"].startswith("$7$5000$")


def test_plan_can_keep_unlisted_users():
    entries, _, _, removed = mqtt_password.plan_password_file(
        {"old": REFERENCE_7}, [("alice", "secret")], 101, False
    )
    assert removed == [] and entries["old"] == REFERENCE_7


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ([("a:b", "p")], "contains ':'"),
        ([("#a", "p")], "starts with '#'"),
        ([(" a", "p")], "blanks"),
        ([("a\nb", "p")], "control character"),
        ([("", "p")], "is empty"),
        ([("a", "")], "password of user 'a' is empty"),
        ([("a", "p"), ("a", "q")], "listed more than once"),
    ],
)
def test_plan_refuses_what_mosquitto_cannot_read(users, message):
    with pytest.raises(mqtt_password.PasswordFileError, match=re.escape(message)):
        mqtt_password.plan_password_file({}, users, 101, True)


@pytest.mark.parametrize("iterations", [0, -1, 10_000_001, True, "101"])
def test_refuses_bad_iteration_counts(iterations):
    with pytest.raises(mqtt_password.PasswordFileError, match="iterations"):
        mqtt_password.hash_password("p", iterations)

"""linkedge.edge.mqtt_passwd through ansible-playbook, and a real Mosquitto reading its file.

The module runs as Ansible runs it (tests/ansible_modules/run_module.py). The last tests start
this host's `mosquitto` (Debian 12: 2.0.11; scripts/ensure-test-tools.sh installs it) on a free
127.0.0.1 port with the module's file as its password_file and connect with paho-mqtt (MQTT 5,
so the broker's reason codes are seen): the right password is accepted, a wrong one and an
anonymous client are refused, and after `SIGHUP` (what `systemctl reload mosquitto` sends) a
removed user is refused and a new one accepted. Run as root, the file is root:mosquitto 0640
and the broker reads it as the `mosquitto` user it drops to, as on a truck.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from .run_module import free_port, run_module

IS_ROOT = os.geteuid() == 0
OWNER = "root" if IS_ROOT else pwd.getpwuid(os.geteuid()).pw_name
try:
    GROUP = "mosquitto" if IS_ROOT and grp.getgrnam("mosquitto") else None
except KeyError:
    GROUP = None
GROUP = GROUP or grp.getgrgid(os.getegid()).gr_name
LINE = re.compile(r"^([^:]+):\$7\$(\d+)\$([A-Za-z0-9+/]{16})\$([A-Za-z0-9+/]{86}==)$")
PASSWORDS = {"sensor-gw": "s3nsor-Secret-0001", "linkedge-inference": "1nference-Secret-0002"}
# mosquitto_passwd -c -b pw alice secret (Debian 12, mosquitto 2.0.11)
# Mosquitto 2.0 answers a wrong password, an unknown user and an anonymous client alike with
# CONNACK reason code 135 "Not authorized" (not 134 "Bad user name or password").
REFUSED = 135
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
ALICE_LINE = (
    "alice:$7$101$IOZsu7AJmBbU4x7W$2KDpf7gDFF+vOxp/tnmUeH95Pw7MzmrUu+xV5bxMABR3UKALTn8n1WT1SxgBQgU3"
    "E3wjSSME7LxxTD61GO1OUQ==\n"
)


@pytest.fixture
def workdir():
    """A directory every local user can traverse (mosquitto reads the file as its own user)."""
    path = Path(tempfile.mkdtemp(prefix="linkedge-mqtt-passwd-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def users(passwords: dict) -> list:
    return [{"name": name, "password": password} for name, password in passwords.items()]


def write(path: Path, passwords: dict, check: bool = False, **extra):
    args = {"path": str(path), "users": users(passwords), "owner": OWNER, "group": GROUP, **extra}
    run = run_module("mqtt_passwd", args, check=check)
    text = json.dumps(run.result)
    for password in passwords.values():
        assert not password or password not in text, "a password appeared in the result"
    return run


def lines(path: Path) -> dict:
    entries = {}
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        assert match, f"not a mosquitto_passwd 2.0 line: {line!r}"
        entries[match.group(1)] = match.groups()[1:]
    return entries


def test_writes_mosquitto_passwd_lines_with_owner_group_mode(workdir):
    path = workdir / "passwd"
    run = write(path, PASSWORDS)
    assert not run.failed, run.result
    assert run["changed"] is True
    assert run["added"] == sorted(PASSWORDS)
    assert run["updated"] == [] and run["removed"] == []
    assert run["users"] == sorted(PASSWORDS)
    entries = lines(path)
    assert list(entries) == sorted(PASSWORDS)  # sorted by user name
    for name, (iterations, salt, digest) in entries.items():
        assert iterations == "101"
        expected = hashlib.pbkdf2_hmac(
            "sha512", PASSWORDS[name].encode(), base64.b64decode(salt), 101
        )
        assert base64.b64decode(digest) == expected
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert pwd.getpwuid(info.st_uid).pw_name == OWNER
    assert grp.getgrgid(info.st_gid).gr_name == GROUP
    assert not list(workdir.glob(".mqtt_passwd.*")), "a temporary file was left behind"


def test_rerun_changes_nothing(workdir):
    path = workdir / "passwd"
    assert write(path, PASSWORDS)["changed"] is True
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    run = write(path, dict(reversed(list(PASSWORDS.items()))))  # another order: same file
    assert run["changed"] is False, run.result
    assert (run["added"], run["updated"], run["removed"]) == ([], [], [])
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime


def test_changed_password_new_user_and_unlisted_user(workdir):
    path = workdir / "passwd"
    write(path, PASSWORDS)
    before = lines(path)
    run = write(path, {"sensor-gw": "rotated-Secret-0003", "dashboard": "d4shboard-Secret-0004"})
    assert run["changed"] is True
    assert (run["added"], run["updated"], run["removed"]) == (
        ["dashboard"],
        ["sensor-gw"],
        ["linkedge-inference"],
    )
    after = lines(path)
    assert sorted(after) == ["dashboard", "sensor-gw"]
    assert after["sensor-gw"] != before["sensor-gw"]


def test_remove_unlisted_false_keeps_other_users(workdir):
    path = workdir / "passwd"
    path.write_text(ALICE_LINE)
    run = write(path, {"sensor-gw": PASSWORDS["sensor-gw"]}, remove_unlisted=False)
    assert run["removed"] == [] and run["users"] == ["alice", "sensor-gw"]
    assert ALICE_LINE in path.read_text()


def test_keeps_a_hash_mosquitto_passwd_wrote(workdir):
    path = workdir / "passwd"
    path.write_text(ALICE_LINE)
    os.chmod(path, 0o640)
    shutil.chown(path, OWNER, GROUP)
    run = write(path, {"alice": "secret"})
    assert run["changed"] is False, run.result
    assert path.read_text() == ALICE_LINE


def test_iterations_change_rehashes(workdir):
    path = workdir / "passwd"
    write(path, PASSWORDS)
    run = write(path, PASSWORDS, iterations=1000)
    assert run["updated"] == sorted(PASSWORDS)
    assert {fields[0] for fields in lines(path).values()} == {"1000"}


def test_check_mode_reports_and_writes_nothing(workdir):
    path = workdir / "passwd"
    run = write(path, PASSWORDS, check=True)
    assert run["changed"] is True and run["added"] == sorted(PASSWORDS)
    assert not path.exists()
    write(path, PASSWORDS)
    before = path.read_bytes()
    run = write(path, {"sensor-gw": "another-Secret-0005"}, check=True)
    assert run["changed"] is True
    assert (run["updated"], run["removed"]) == (["sensor-gw"], ["linkedge-inference"])
    assert path.read_bytes() == before
    assert write(path, PASSWORDS, check=True)["changed"] is False


def test_corrects_mode_without_rewriting(workdir):
    path = workdir / "passwd"
    write(path, PASSWORDS)
    before = path.read_bytes()
    path.chmod(0o644)
    run = write(path, PASSWORDS)
    assert run["changed"] is True and run["attributes_changed"] is True
    assert run["content_changed"] is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("passwords", "message"),
    [
        ({"bad:name": "p4ssword-long-enough"}, "user name 'bad:name' contains ':'"),
        ({"#comment": "p4ssword-long-enough"}, "starts with '#'"),
        ({"empty-password": ""}, "the password of user 'empty-password' is empty"),
    ],
)
def test_refuses_what_mosquitto_cannot_read(workdir, passwords, message):
    path = workdir / "passwd"
    run = write(path, passwords)
    assert run.failed
    assert message in run["msg"], run["msg"]
    assert "fix the users" in run["msg"]
    assert not path.exists()


def test_refuses_duplicate_users(workdir):
    args = {
        "path": str(workdir / "passwd"),
        "users": [{"name": "a", "password": "one-Secret-0001"}, {"name": "a", "password": "x"}],
        "owner": OWNER,
        "group": GROUP,
    }
    run = run_module("mqtt_passwd", args)
    assert run.failed and "user 'a' is listed more than once" in run["msg"]
    assert "one-Secret-0001" not in json.dumps(run.result)


def test_missing_directory_says_to_install_mosquitto(workdir):
    run = write(workdir / "absent" / "passwd", PASSWORDS)
    assert run.failed
    assert "does not exist: install mosquitto first" in run["msg"], run["msg"]


def test_missing_group_says_what_to_do(workdir):
    run = write(workdir / "passwd", PASSWORDS, group="no-such-group-lkt")
    assert run.failed
    assert "group 'no-such-group-lkt' (group) does not exist on the target" in run["msg"]
    assert not (workdir / "passwd").exists()


def test_bad_mode_is_refused(workdir):
    run = write(workdir / "passwd", PASSWORDS, mode="rw-r-----")
    assert run.failed and "octal string" in run["msg"]


# --- a real broker --------------------------------------------------------------------------


class Broker:
    """This host's mosquitto on 127.0.0.1:<free port>, anonymous refused, `password_file`."""

    def __init__(self, workdir: Path, password_file: Path):
        self.port = free_port()
        self.log = workdir / "mosquitto.log"
        config = workdir / "mosquitto.conf"
        config.write_text(
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"password_file {password_file}\n"
            "persistence false\n"
            f"listener {self.port} 127.0.0.1\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        self.handle = self.log.open("w")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=self.handle, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen: {self.log.read_text()}")

    def reload(self) -> None:
        """SIGHUP, as `systemctl reload mosquitto` (ExecReload) sends it."""
        marker = self.log.read_text().count("Reloading config")
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while self.log.read_text().count("Reloading config") == marker:
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        time.sleep(0.2)

    def connect(self, username: str | None, password: str | None) -> int:
        """The MQTT 5 CONNACK reason code: 0 accepted, REFUSED otherwise."""
        mqtt = pytest.importorskip("paho.mqtt.client")
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"lkt-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            client.username_pw_set(username, password)
        answered = threading.Event()
        codes: list[int] = []

        def on_connect(_client, _userdata, _flags, reason_code, _properties):
            codes.append(reason_code.value)
            answered.set()

        client.on_connect = on_connect
        client.connect("127.0.0.1", self.port, keepalive=10)
        client.loop_start()
        try:
            assert answered.wait(10), "no CONNACK"
        finally:
            client.disconnect()
            client.loop_stop()
        return codes[0]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.handle.close()


@pytest.fixture
def broker_files(workdir):
    if not MOSQUITTO:
        pytest.skip("mosquitto not installed (bash scripts/ensure-test-tools.sh installs it)")
    pytest.importorskip("paho.mqtt.client")
    return workdir, workdir / "passwd"


def test_a_real_mosquitto_accepts_the_module_s_passwords(broker_files):
    workdir, path = broker_files
    assert not write(path, PASSWORDS).failed
    broker = Broker(workdir, path)
    try:
        for name, password in PASSWORDS.items():
            assert broker.connect(name, password) == 0, broker.log.read_text()
        assert broker.connect("sensor-gw", "wrong-password") == REFUSED
        assert broker.connect("nobody", PASSWORDS["sensor-gw"]) == REFUSED
        assert broker.connect(None, None) == REFUSED  # anonymous
        log = broker.log.read_text()
        assert "Warning" not in log.replace("Warning: Mosquitto should not be run as root", ""), log

        # A rotation, a new user and a removed one, then a reload (SIGHUP): no restart needed.
        rotated = {"sensor-gw": "rotated-Secret-0003", "dashboard": "d4shboard-Secret-0004"}
        run = write(path, rotated)
        assert (run["added"], run["updated"], run["removed"]) == (
            ["dashboard"],
            ["sensor-gw"],
            ["linkedge-inference"],
        )
        assert broker.connect("dashboard", rotated["dashboard"]) == REFUSED  # not reloaded yet
        broker.reload()
        assert broker.connect("dashboard", rotated["dashboard"]) == 0
        assert broker.connect("sensor-gw", rotated["sensor-gw"]) == 0
        assert broker.connect("sensor-gw", PASSWORDS["sensor-gw"]) == REFUSED  # the old password
        assert broker.connect("linkedge-inference", PASSWORDS["linkedge-inference"]) == REFUSED
    finally:
        broker.stop()


def test_a_real_mosquitto_accepts_other_iteration_counts(broker_files):
    workdir, path = broker_files
    write(path, PASSWORDS, iterations=20000)
    broker = Broker(workdir, path)
    try:
        assert broker.connect("sensor-gw", PASSWORDS["sensor-gw"]) == 0
        assert broker.connect("sensor-gw", "wrong-password") == REFUSED
    finally:
        broker.stop()

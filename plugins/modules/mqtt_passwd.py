#!/usr/bin/python
# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
# Ansible modules import after DOCUMENTATION, EXAMPLES and RETURN:
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: mqtt_passwd
short_description: Write a Mosquitto 2.0 password file with exactly the listed users
version_added: 0.1.0
description:
  - Writes the password file Mosquitto reads with its C(password_file) setting, in the format
    C(mosquitto_passwd) 2.0 writes, one line per user
    C(<user>:$7$<iterations>$<base64 salt>$<base64 hash>) (PBKDF2-HMAC-SHA512 with a random
    12-byte salt), without needing C(mosquitto_passwd) or putting a password on a command
    line.
  - Idempotent. A listed user whose hash in the file still verifies its password with
    O(iterations) keeps that hash, so a rerun with the same passwords changes nothing. A new
    user, a changed password or another O(iterations) gets a new hash. Users in the file that
    are not listed are removed (unless O(remove_unlisted=false)). Lines are sorted by user name.
  - Reports which users were added, updated and removed, never a password or a hash; there is
    no diff. The file is replaced atomically (written beside it, then renamed) with its owner,
    group and mode already set, so it is never readable by anyone else, not even briefly.
  - A running Mosquitto 2.0 reads the file again on C(SIGHUP) (C(systemctl reload mosquitto));
    this module does not signal it.
  - Mosquitto 1.x C($6$) hashes are verified too and rewritten as C($7$).
options:
  path:
    description: Path of the password file on the target. Its directory must exist.
    type: path
    required: true
  users:
    description:
      - Every user the file holds. Keep the passwords in Ansible Vault.
      - A user name may not be empty, contain C(:) or a control character, start with C(#) or
        start or end with blanks (Mosquitto could not read it back).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The MQTT user name.
        type: str
        required: true
      password:
        description: The user's password (UTF-8, not empty). Never logged nor returned.
        type: str
        required: true
  remove_unlisted:
    description: Remove the users in the file that O(users) does not list.
    type: bool
    default: true
  iterations:
    description:
      - PBKDF2 iterations of new hashes. The default is C(mosquitto_passwd)'s.
      - Mosquitto computes the hash on every CONNECT in its single event-loop thread, so a high
        count delays every client while one authenticates; random passwords of 20 characters
        or more are what makes a stolen file useless, not the count.
    type: int
    default: 101
  owner:
    description: Owner of the file (name or UID).
    type: str
    default: root
  group:
    description:
      - Group of the file (name or GID). Mosquitto reads the file as its own user (after
        dropping root, and again on every reload), so that user must be able to read it
        through this group or O(owner).
    type: str
    default: mosquitto
  mode:
    description: Permissions of the file, as an octal string.
    type: str
    default: "0640"
notes:
  - Needs only the Python standard library on the target.
  - Mosquitto 2.0.16 and later log a warning when the file's owner is not the user Mosquitto
    runs as (C(owner=mosquitto) silences it; the default C(root) keeps the broker from
    rewriting its own credentials).
seealso:
  - name: mosquitto_passwd(1)
    description: The password file format and the reference tool.
    link: https://mosquitto.org/man/mosquitto_passwd-1.html
author:
  - LinkEdge developers (@linkedge)
attributes:
  check_mode:
    description: Reports the users it would add, update and remove; writes nothing.
    support: full
  diff_mode:
    description: Never returns a diff (it would show hashes); see RV(added), RV(updated) and
      RV(removed).
    support: none
"""

EXAMPLES = r"""
- name: Write the broker's password file (passwords from Vault)
  linkedge.edge.mqtt_passwd:
    path: /etc/mosquitto/passwd
    users:
      - name: sensor-gateway
        password: "{{ vault_mqtt_sensor_password }}"
      - name: linkedge-inference
        password: "{{ vault_mqtt_inference_password }}"
  no_log: true
  register: mqtt_users
  notify: Reload mosquitto

- name: Say who changed (names only)
  ansible.builtin.debug:
    msg: >-
      added {{ mqtt_users.added }}, updated {{ mqtt_users.updated }},
      removed {{ mqtt_users.removed }}
"""

RETURN = r"""
path:
  description: The password file.
  returned: always
  type: str
  sample: /etc/mosquitto/passwd
users:
  description: The user names the file holds afterwards (or would hold, in check mode), sorted.
  returned: always
  type: list
  elements: str
  sample: [linkedge-inference, sensor-gateway]
added:
  description: Listed users the file did not hold.
  returned: always
  type: list
  elements: str
  sample: [sensor-gateway]
updated:
  description: Listed users whose password (or iteration count) changed, so they got a new hash.
  returned: always
  type: list
  elements: str
  sample: []
removed:
  description: Users the file held that are not listed (removed only when O(remove_unlisted)).
  returned: always
  type: list
  elements: str
  sample: [old-dashboard]
content_changed:
  description: Whether the file's content changed (or would change in check mode).
  returned: always
  type: bool
attributes_changed:
  description: Whether only the owner, group or mode had to be corrected.
  returned: always
  type: bool
"""

import grp
import os
import pwd
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.linkedge.edge.plugins.module_utils.mqtt_password import (
    DEFAULT_ITERATIONS,
    PasswordFileError,
    parse_password_file,
    plan_password_file,
    render_password_file,
)

ENCODING = "utf-8"
ERRORS = "surrogateescape"  # bytes that are not UTF-8 in an existing file survive a rewrite


def resolve_id(module: AnsibleModule, kind: str, value: str):
    """UID or GID of `value` (a name or a number); None in check mode when it does not exist
    yet (the package that creates it would be installed by then)."""
    if value.isdigit():
        return int(value)
    try:
        if kind == "owner":
            return pwd.getpwnam(value).pw_uid
        return grp.getgrnam(value).gr_gid
    except KeyError:
        what = "user" if kind == "owner" else "group"
        hint = (
            "install the mosquitto package first (it creates the mosquitto user and group)"
            if value == "mosquitto"
            else f"create the {what} first"
        )
        if module.check_mode:
            module.warn(f"{what} {value} does not exist on the target yet (check mode)")
            return None
        module.fail_json(
            msg=f"{what} {value!r} ({kind}) does not exist on the target: {hint}, or set {kind}"
        )


def parse_mode(module: AnsibleModule, text: str) -> int:
    try:
        mode = int(text, 8)
    except (TypeError, ValueError):
        module.fail_json(msg=f"mode must be an octal string such as '0640', not {text!r}")
    if mode < 0 or mode > 0o7777:
        module.fail_json(msg=f"mode {text!r} is not a file mode (0000 to 7777)")
    if mode & 0o007:
        module.warn(
            f"mode {text} lets every local user read the password hashes; 0640 with group "
            "mosquitto is enough for the broker"
        )
    return mode


def read_existing(module: AnsibleModule, path: str):
    """(text, stat) of the current file; (None, None) when there is none."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        module.fail_json(msg=f"cannot read {path}: {exc.strerror or exc}")
    if not stat.S_ISREG(info.st_mode):
        module.fail_json(
            msg=f"{path} exists and is not a regular file: remove it or choose another path"
        )
    try:
        with open(path, encoding=ENCODING, errors=ERRORS) as handle:
            return handle.read(), info
    except OSError as exc:
        module.fail_json(
            msg=f"cannot read {path}: {exc.strerror or exc}; run the task as root (become: true)"
        )


def write_atomically(path: str, text: str, uid, gid, mode: int) -> None:
    """Write beside `path` with the final owner and mode, flush to disk, rename over it."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".mqtt_passwd.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding=ENCODING, errors=ERRORS) as handle:
            os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            users=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    name=dict(type="str", required=True),
                    password=dict(type="str", required=True, no_log=True),
                ),
            ),
            remove_unlisted=dict(type="bool", default=True),
            iterations=dict(type="int", default=DEFAULT_ITERATIONS),
            owner=dict(type="str", default="root"),
            group=dict(type="str", default="mosquitto"),
            mode=dict(type="str", default="0640"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        if module.check_mode:
            module.warn(f"directory {directory} does not exist yet (check mode)")
        else:
            module.fail_json(
                msg=f"directory {directory} does not exist: install mosquitto first (its package "
                "creates /etc/mosquitto) or choose another path"
            )
    mode = parse_mode(module, params["mode"])
    uid = resolve_id(module, "owner", params["owner"])
    gid = resolve_id(module, "group", params["group"])

    old_text, info = read_existing(module, path)
    existing = parse_password_file(old_text) if old_text is not None else {}
    wanted = [(user["name"], user["password"]) for user in params["users"]]
    try:
        entries, added, updated, removed = plan_password_file(
            existing, wanted, params["iterations"], params["remove_unlisted"]
        )
    except PasswordFileError as exc:
        module.fail_json(msg=f"{exc}: fix the users given to linkedge.edge.mqtt_passwd")
    new_text = render_password_file(entries)
    content_changed = new_text != old_text
    attributes_changed = not content_changed and (
        info is None
        or (uid is not None and info.st_uid != uid)
        or (gid is not None and info.st_gid != gid)
        or stat.S_IMODE(info.st_mode) != mode
    )
    if not module.check_mode:
        try:
            if content_changed:
                write_atomically(path, new_text, uid, gid, mode)
            elif attributes_changed:
                os.chown(path, uid, gid)
                os.chmod(path, mode)
        except OSError as exc:
            module.fail_json(
                msg=f"cannot write {path}: {exc.strerror or exc}; run the task as root "
                "(become: true) on a writable filesystem"
            )
    module.exit_json(
        changed=content_changed or attributes_changed,
        path=path,
        users=sorted(entries),
        added=added,
        updated=updated,
        removed=removed,
        content_changed=content_changed,
        attributes_changed=attributes_changed,
    )


if __name__ == "__main__":
    main()

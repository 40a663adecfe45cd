"""The role linkedge.edge.mqtt_broker without a broker: its checks and the files it writes.

Each test runs ansible-playbook on localhost with the role's preflight (tasks_from: preflight,
public, so its defaults and vars apply) and renders the role's templates to a temporary
directory: what the checks refuse and say (never a password), and the exact ACL lines each
client role gets. Nothing on this host is changed. The Molecule scenario `mqtt` proves the same
files with a real broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
TEMPLATES = REPO / "roles" / "mqtt_broker" / "templates"
PASSWORD = "p" * 20
TRUCK_CLIENTS = [
    {"name": "aps-sensor", "password": PASSWORD, "role": "sensor"},
    {"name": "linkedge-inference", "password": PASSWORD, "role": "inference"},
    {"name": "linkedge-status", "password": PASSWORD, "role": "status"},
    {"name": "dashboard", "password": PASSWORD, "role": "observer"},
    {
        "name": "gateway",
        "password": PASSWORD,
        "role": "sensor",
        "truck": "truck-7",
        "extra_topics": [{"access": "read", "topic": "linkedge/truck-7/status"}],
    },
]
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"

pytestmark = pytest.mark.skipif(
    not Path(ANSIBLE_PLAYBOOK).exists(), reason="ansible-playbook not in this environment"
)


def run_role(tmp_path: Path, variables: dict, render: bool = True) -> tuple[int, str, dict]:
    """(rc, output, {template: rendered text}) of the preflight with `variables`."""
    out = tmp_path / "rendered"
    out.mkdir(exist_ok=True)
    tasks = [
        {
            "name": "preflight",
            "ansible.builtin.include_role": {
                "name": "linkedge.edge.mqtt_broker",
                "tasks_from": "preflight",
                "public": True,
            },
        }
    ]
    if render:
        for template in ("mosquitto.conf.j2", "acl.j2", "bridge.conf.j2"):
            tasks.append(
                {
                    "name": f"render {template}",
                    "ansible.builtin.copy": {
                        "content": "{{ lookup('ansible.builtin.template', "
                        f"'{TEMPLATES}/{template}') }}}}",
                        "dest": str(out / template),
                        "mode": "0600",
                    },
                    "no_log": True,
                }
            )
    play = [
        {
            "hosts": "localhost",
            "gather_facts": True,
            "gather_subset": ["min"],
            "vars": variables,
            "tasks": tasks,
        }
    ]
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(play))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
    command = [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(playbook)]
    command += ["-e", json.dumps({"ansible_python_interpreter": sys.executable})]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    rendered = {path.name: path.read_text() for path in out.iterdir()}
    return done.returncode, done.stdout + done.stderr, rendered


def acl_blocks(text: str) -> dict[str, list[str]]:
    """{user: [topic lines]} of an ACL file."""
    blocks: dict[str, list[str]] = {}
    user = None
    for line in text.splitlines():
        if line.startswith("user "):
            user = line[5:]
            blocks[user] = []
        elif line.startswith("topic ") and user is not None:
            blocks[user].append(line)
        elif line.startswith("topic "):
            raise AssertionError(f"a topic line before any user line: {line}")
    return blocks


def test_truck_files(tmp_path):
    rc, output, files = run_role(
        tmp_path,
        {
            "mqtt_broker_truck": "truck-42",
            "mqtt_broker_clients": TRUCK_CLIENTS,
            "mqtt_broker_listen_addresses": ["127.0.0.1", "10.20.0.5"],
            "mqtt_broker_bridge_address": "depot.example.net",
            "mqtt_broker_bridge_password": "b" * 20,
            "mqtt_broker_ca_cert": PEM_CERT,
        },
    )
    assert rc == 0, output[-3000:]
    assert PASSWORD not in output
    assert acl_blocks(files["acl.j2"]) == {
        "aps-sensor": ["topic write linkedge/truck-42/aps/features"],
        "dashboard": ["topic read linkedge/truck-42/#"],
        "gateway": [
            "topic write linkedge/truck-7/aps/features",
            "topic read linkedge/truck-7/status",
        ],
        "linkedge-inference": [
            "topic read linkedge/truck-42/aps/features",
            "topic write linkedge/truck-42/aps/predictions",
            "topic write linkedge/truck-42/aps/errors",
            "topic write linkedge/truck-42/aps/alerts",
            "topic write linkedge/truck-42/aps/replies/#",
        ],
        "linkedge-status": ["topic write linkedge/truck-42/status"],
    }
    config = files["mosquitto.conf.j2"].splitlines()
    for line in (
        "persistence true",
        "persistence_location /var/lib/mosquitto/",
        "autosave_on_changes true",
        "autosave_interval 1",
        "max_queued_messages 10000",
        "max_queued_bytes 16777216",
        "max_inflight_messages 20",
        "max_packet_size 1052672",
        "message_size_limit 1048576",
        "persistent_client_expiration 30d",
        "allow_anonymous false",
        "per_listener_settings false",
        "password_file /etc/mosquitto/passwd",
        "acl_file /etc/mosquitto/acl",
        "listener 1883 127.0.0.1",
        "listener 1883 10.20.0.5",
        "include_dir /etc/mosquitto/bridges.d",
        "log_dest syslog",
    ):
        assert line in config, line
    settings = [line.split()[0] for line in config if line and not line.startswith("#")]
    repeated = {"listener", "protocol", "log_dest", "log_type"}
    duplicates = {key for key in settings if settings.count(key) > 1} - repeated
    assert not duplicates, duplicates
    assert "certfile" not in settings
    assert "include_dir /etc/mosquitto/conf.d" not in files["mosquitto.conf.j2"]
    bridge = files["bridge.conf.j2"].splitlines()
    for line in (
        "address depot.example.net:8883",
        "bridge_cafile /etc/mosquitto/ca_certificates/linkedge-ca.crt",
        "bridge_insecure false",
        "remote_clientid linkedge-bridge-truck-42",
        "remote_username truck-42",
        "remote_password " + "b" * 20,
        "cleansession false",
        "local_cleansession false",
        "notifications false",
        "restart_timeout 5 120",
        "topic linkedge/truck-42/aps/alerts out 1",
        "topic linkedge/truck-42/status out 1",
    ):
        assert line in bridge, line
    assert "b" * 20 not in output


def test_depot_files(tmp_path):
    rc, output, files = run_role(
        tmp_path,
        {
            "mqtt_broker_mode": "depot",
            "mqtt_broker_tls_listen_addresses": ["192.0.2.10"],
            "mqtt_broker_tls_cert": PEM_CERT,
            "mqtt_broker_tls_key": PEM_KEY,
            "mqtt_broker_clients": [
                {"name": "truck-1", "password": PASSWORD, "role": "truck_bridge"},
                {
                    "name": "bridge-of-2",
                    "password": PASSWORD,
                    "role": "truck_bridge",
                    "truck": "truck-2",
                    "notifications": True,
                },
                {"name": "ops", "password": PASSWORD, "role": "depot_observer"},
            ],
        },
    )
    assert rc == 0, output[-3000:]
    assert acl_blocks(files["acl.j2"]) == {
        "bridge-of-2": [
            "topic write linkedge/truck-2/aps/alerts",
            "topic write linkedge/truck-2/status",
            "topic write linkedge/truck-2/bridge/state",
        ],
        "ops": ["topic read linkedge/#"],
        "truck-1": [
            "topic write linkedge/truck-1/aps/alerts",
            "topic write linkedge/truck-1/status",
        ],
    }
    config = files["mosquitto.conf.j2"]
    assert "listener 8883 192.0.2.10\nprotocol mqtt\ncertfile " in config
    assert "keyfile /etc/mosquitto/certs/linkedge-broker.key\ntls_version tlsv1.2\n" in config
    assert "listener 1883 127.0.0.1\n" in config
    assert PEM_KEY not in output


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"mqtt_broker_listen_addresses": ["0.0.0.0"]}, "mqtt_broker_allow_all_interfaces: true"),
        ({"mqtt_broker_listen_addresses": ["::"]}, "listen on 0.0.0.0 or :: (every interface)"),
        ({"mqtt_broker_listen_addresses": []}, "Give at least one address"),
        ({"mqtt_broker_mode": "depot"}, "a depot needs a TLS listener"),
        ({"mqtt_broker_tls_listen_addresses": ["10.0.0.1"]}, "needs mqtt_broker_tls_cert"),
        ({"mqtt_broker_truck": "truck/1"}, "is not a truck id"),
        (
            {"mqtt_broker_bridge_address": "depot.example.net", "mqtt_broker_bridge_password": ""},
            "the PEM of the CA that signed it",
        ),
        (
            {"mqtt_broker_clients": [{"name": "s", "password": "short-secret", "role": "sensor"}]},
            "password is shorter than 16 characters: s",
        ),
        (
            {"mqtt_broker_clients": [{"name": "t", "password": PASSWORD, "role": "truck_bridge"}]},
            "(sensor, inference, status, observer only): t (truck_bridge)",
        ),
        (
            {
                "mqtt_broker_clients": [
                    {"name": "a", "password": PASSWORD, "role": "sensor"},
                    {"name": "a", "password": PASSWORD, "role": "observer"},
                ]
            },
            "user names listed more than once: a",
        ),
        (
            {"mqtt_broker_clients": [{"name": "bad name", "password": PASSWORD, "role": "sensor"}]},
            'user names that are not 1 to 64 letters, digits, _ . @ - ["bad name"]',
        ),
        ({"mqtt_broker_persistent_client_expiration": "30 days"}, "persistent_client_expiration"),
    ],
)
def test_preflight_refuses_with_a_message(tmp_path, variables, message):
    rc, output, _ = run_role(tmp_path, variables, render=False)
    assert rc != 0
    assert message in " ".join(output.split()), output[-3000:]
    assert PASSWORD not in output and "short-secret" not in output


def test_all_interfaces_with_the_explicit_flag(tmp_path):
    variables = {
        "mqtt_broker_listen_addresses": ["0.0.0.0"],
        "mqtt_broker_allow_all_interfaces": True,
    }
    rc, output, _ = run_role(tmp_path, variables, render=False)
    assert rc == 0, output[-3000:]

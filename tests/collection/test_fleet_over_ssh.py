"""The installed collection runs a fleet over real SSH, as an operator's own project would.

A simulated truck (Debian 12, systemd, sshd; playbooks/simulated_fleet.yml) is reached as the
unprivileged user `fleet` with a key and passwordless sudo, the way inventories/trucks
describes a real fleet: `become`, the archive's transfer over SFTP and SSH timeouts are those
of a real truck. The operator's project is a directory outside the checkout with its own
inventory and group_vars and no ansible.cfg; the collection is the installed tarball
(conftest.installed, ansible-core only). Releases are the two small signed ones the Molecule
scenarios use (scripts/molecule-releases.sh); caches and reports land in the project.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, Installed, checked, run

pytestmark = pytest.mark.docker

TRUCK = "ssh-truck-1"
NETWORK = "linkedge-ssh"
USER = "fleet"
RELEASES = REPO / "build" / "releases"
PUBLIC_KEY = REPO / "build" / "keys" / "release-signing.pub"
VENV_BIN = REPO / ".venv" / "bin"


def release(name: str) -> dict:
    return json.loads((RELEASES / name / "manifest.json").read_text())


def simulated_fleet(inventory: Path, *extra: str) -> None:
    """playbooks/simulated_fleet.yml from the checkout (it needs community.docker and the truck
    image's recipe, which are the test rig, not the operator's project)."""
    checked(
        run(
            [VENV_BIN / "ansible-playbook", "playbooks/simulated_fleet.yml", "-i", inventory,
             "-e", f"simulated_fleet_network={NETWORK}", *extra],
            cwd=REPO,
            env=dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}"),
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def truck(tmp_path_factory) -> dict:
    if not all((RELEASES / name / "manifest.json.sig").is_file() for name in ("v1", "v2")):
        checked(run(["bash", "scripts/molecule-releases.sh"], cwd=REPO))
    rig = tmp_path_factory.mktemp("ssh-rig")
    key = rig / "id_ed25519"
    checked(run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key]))
    inventory = rig / "trucks.ini"
    inventory.write_text(f"[trucks]\n{TRUCK}\n")
    try:
        simulated_fleet(inventory, "-e", f"simulated_fleet_ssh_public_key={key}.pub")
        address = checked(
            run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", TRUCK])
        ).stdout
        yield {"address": json.loads(address)[NETWORK]["IPAddress"], "key": key}
    finally:
        simulated_fleet(inventory, "-e", "simulated_fleet_state=absent")


@pytest.fixture(scope="module")
def project(installed: Installed, truck: dict) -> Path:
    """The operator's project: inventory + group_vars, no ansible.cfg, outside the checkout."""
    root = installed.outside / "fleet-project"
    (root / "inventory" / "group_vars").mkdir(parents=True)
    (root / "inventory" / "hosts.ini").write_text(
        f"[trucks]\n{TRUCK} ansible_host={truck['address']}\n\n[trucks:vars]\n"
        f"ansible_user={USER}\nansible_ssh_private_key_file={truck['key']}\n"
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n"
    )
    group_vars = {
        # Paths the operator chose, overriding the role's defaults (they are role variables).
        "inference_service_releases_dir": str(RELEASES),
        "inference_service_release_public_key": str(PUBLIC_KEY),
        "inference_service_bind_address": "0.0.0.0",
        "inference_service_env": {"LINKEDGE_WORKERS": "1"},
        "linkedge_rollout_connect_timeout": 5,
    }
    (root / "inventory" / "group_vars" / "trucks.yml").write_text(json.dumps(group_vars))
    return root


def playbook(installed: Installed, project: Path, name: str, *args: str) -> tuple[int, dict, str]:
    """ansible-playbook linkedge.edge.<name> in the project; (rc, report of this run, output)."""
    env = dict(
        installed.env,
        ANSIBLE_CALLBACKS_ENABLED="linkedge.edge.rollout_report",
        ANSIBLE_HOST_KEY_CHECKING="False",
    )
    latest = project / "build" / "rollout-reports" / "latest.json"
    before = latest.stat().st_mtime_ns if latest.exists() else None
    result = subprocess.run(
        [str(installed.bin / "ansible-playbook"), f"linkedge.edge.{name}",
         "-i", "inventory/hosts.ini", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    output = result.stdout + result.stderr
    fresh = latest.exists() and latest.stat().st_mtime_ns != before
    report = json.loads(latest.read_text()) if fresh else {}
    return result.returncode, report, output


def served(address: str) -> str | None:
    try:
        url = f"http://{address}:8080/v2/models/aps-classifier"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())["versions"][0]
    except (OSError, ValueError, KeyError):
        return None


def on_truck(*argv: str) -> None:
    checked(run(["docker", "exec", TRUCK, *argv]))


def test_site_provisions_a_bare_truck_over_ssh(installed, project, truck):
    v1 = release("v1")
    rc, report, output = playbook(
        installed, project, "site", "-e", "inference_service_release_version=v1"
    )
    assert rc == 0, output[-5000:]
    record = report["trucks"][TRUCK]
    assert record["outcome"] == "updated" and record["new_version"] == v1["version"], record
    assert record["bytes_transferred"] == v1["archive_bytes"], record  # the full archive, by SFTP
    assert served(truck["address"]) == v1["version"]
    # What a real truck sees: the API token file's owner, the kept record, as root via sudo.
    state = checked(run(["docker", "exec", TRUCK, "cat", "/var/lib/linkedge/last-outcome.json"]))
    assert json.loads(state.stdout) == record


def test_rollout_sends_only_the_model_layer_over_ssh(installed, project, truck):
    v2 = release("v2")
    rc, report, output = playbook(installed, project, "rollout", "-e", "model_version=v2")
    assert rc == 0, output[-5000:]
    record = report["trucks"][TRUCK]
    assert record["outcome"] == "updated" and record["delta"], record
    assert 0 < record["bytes_transferred"] < v2["archive_bytes"] / 20, record
    assert served(truck["address"]) == v2["version"]
    # The controller-side cache and the report are in the operator's project, not in the
    # installed collection.
    assert any((project / "build" / "rollout-cache").glob("delta-*.tar"))
    assert not (installed.collection / "build").exists()


def test_status_reads_each_truck_and_its_last_outcome(installed, project, truck):
    rc, _, output = playbook(installed, project, "status")
    assert rc == 0, output[-5000:]
    row = next(line for line in output.splitlines() if TRUCK in line and "reachable" in line)
    assert release("v2")["version"] in row and release("v1")["version"] in row, row
    assert "updated" in row, row


def test_an_unreachable_truck_is_pending_then_caught_up(installed, project, truck):
    rc, report, output = playbook(installed, project, "rollback")
    assert rc == 0 and report["trucks"][TRUCK]["outcome"] == "updated", output[-5000:]
    assert report["bytes_transferred"] == 0
    assert served(truck["address"]) == release("v1")["version"]

    # Out of coverage: no sshd, and the sessions of the last run (kept for SSH multiplexing)
    # gone with it.
    on_truck("systemctl", "stop", "ssh.service")
    on_truck("pkill", "--signal", "KILL", "-u", USER)
    started = time.monotonic()
    try:
        rc, report, output = playbook(installed, project, "rollout", "-e", "model_version=v2")
        seconds = time.monotonic() - started
    finally:
        on_truck("systemctl", "start", "ssh.service")
    assert rc == 0, output[-5000:]
    record = report["trucks"][TRUCK]
    assert record["outcome"] == "pending", record
    assert record["reason"].startswith("unreachable: "), record
    assert seconds < 120, seconds  # the connect timeout applies, nothing hangs
    assert served(truck["address"]) == release("v1")["version"]  # untouched

    rc, report, output = playbook(installed, project, "rollout", "-e", "model_version=v2")
    assert rc == 0 and report["trucks"][TRUCK]["outcome"] == "updated", output[-5000:]
    assert served(truck["address"]) == release("v2")["version"]

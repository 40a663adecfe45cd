"""A power cycle of the truck: systemd, docker and the inference container come back on their
own and serve the same model version (the previous version, when there is one, stays stopped)."""

import subprocess
import time

from conftest import SERVICE, inspect, truck_http, wait_ready


def wait_booted(truck: str, timeout: float = 90.0) -> str:
    """systemd's state once it finished booting (the bus is not there for a moment)."""
    deadline = time.monotonic() + timeout
    state = "no answer"
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["docker", "exec", truck, "systemctl", "is-system-running", "--wait"],
            capture_output=True,
            text=True,
        )
        state = result.stdout.strip() or result.stderr.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(1)
    return state


def test_power_cycle_serves_the_same_version(host, truck, expected, previous):
    started = time.monotonic()
    subprocess.run(["docker", "restart", "--time", "20", truck], check=True, capture_output=True)
    state = wait_booted(truck)
    assert state in ("running", "degraded"), state
    ready_after = wait_ready(truck)
    print(
        f"{truck}: power cycle to ready in {time.monotonic() - started:.1f} s "
        f"({ready_after:.1f} s after systemd finished booting)"
    )

    assert host.service("docker").is_running
    status, body = truck_http(truck, "GET", "/v2/models/aps-classifier")
    assert status == 200
    assert body["versions"] == [expected.model_version]
    assert inspect(host, SERVICE)["Image"] == expected.image_id
    if previous is not None:
        assert inspect(host, f"{SERVICE}-previous")["State"]["Running"] is False

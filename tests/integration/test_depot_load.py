"""bench/depot_load/ at small scale, against the real nginx and docker-registry it starts:
50 pollers, a 2-second cycle, a 1 MB base layer. Asserts what the pollers and the depot
really did (304s while idle, every poller on the new version after the promote, the model
layer fetched once per poller, no errors) and that the TLS measurement sees a full handshake
cost more bytes than a resumed one. Never a speed.

Skipped when nginx (nginx-light) or docker-registry is not installed; it installs nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NGINX = Path("/usr/sbin/nginx")
REGISTRY = Path("/usr/bin/docker-registry")
POLLERS = 50
MODEL_LAYER_BYTES = 65_536


def depot_load(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.depot_load", *(str(arg) for arg in args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tools = ((NGINX, "nginx-light"), (REGISTRY, "docker-registry"))
    missing = [f"{path} ({package})" for path, package in tools if not path.exists()]
    if missing:
        pytest.skip(
            f"not installed: {', '.join(missing)} (apt-get install nginx-light docker-registry)"
        )
    out = tmp_path_factory.mktemp("depot-load")
    result = depot_load(
        "--pollers", POLLERS, "--interval", 2, "--request-gap", 0.05,
        "--source", "fabricated", "--base-layer-mb", 1, "--model-layer-bytes", MODEL_LAYER_BYTES,
        "--no-mqtt", "--no-install", "--tls-repeats", 1, "--tls-cpu-requests", 10,
        "--out", out, "--name", "small",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "small.md").read_text().startswith("# Pull mode at scale")
    return json.loads((out / "small.json").read_text())


def test_idle_polls_are_answered_304(report: dict) -> None:
    idle = report["phases"]["idle"]
    kinds = idle["by_kind"]
    # One request per idle sync: the signature comes only with a new pointer.
    assert set(kinds) == {"pointer"}, kinds
    for figures in kinds.values():
        assert figures["requests"] >= POLLERS * 0.5
        assert figures["status"] == {"304": figures["requests"]}, figures
    assert report["idle_check"]["answered_304"] == report["idle_check"]["poll_requests"] > 0
    # nginx saw them too: its own log, 304s only.
    assert set(idle["depot_logs"]["nginx"]["status"]) == {"304"}, idle["depot_logs"]


def test_every_poller_converged_fetching_the_model_layer_once(report: dict) -> None:
    converge = report["convergence"]
    assert converge["converged"] == POLLERS and converge["not_converged"] == {}, converge
    assert 0 < converge["seconds"]["max"] < 30
    layer_bytes = report["image"]["model_layer_bytes"]
    assert layer_bytes >= MODEL_LAYER_BYTES  # the random payload, in a tar, gzip level 0
    assert report["model_layer"]["model_layer_fetches"] == POLLERS
    assert report["model_layer"]["pollers_fetching_it_more_than_once"] == 0
    update = report["phases"]["update"]["by_kind"]
    layers = update["registry_layer"]
    assert layers["status"] == {"200": POLLERS}
    assert POLLERS * layer_bytes < layers["bytes_down"] < POLLERS * (layer_bytes + 2000)
    for kind in ("manifest", "manifest_signature", "registry_manifest", "registry_config"):
        assert update[kind]["status"] == {"200": POLLERS}, (kind, update[kind])
    # The registry's own log: the same blob downloads.
    assert report["phases"]["update"]["depot_logs"]["registry"]["requests"] >= POLLERS * 4


def test_no_errors_anywhere(report: dict) -> None:
    assert report["ok"] is True
    for name, phase in report["phases"].items():
        assert phase["errors"] == 0, (name, phase["error_samples"])
    assert report["sync_failures"] == {}
    assert report["client_limits"]["open_files_after"] >= POLLERS * 3


def test_a_full_handshake_costs_more_bytes_than_a_resumed_one(report: dict) -> None:
    variants = {v["variant"]: v for v in report["tls_idle_sync"]["variants"]}
    for label in ("ECDSA TLS 1.3", "ECDSA TLS 1.2", "RSA TLS 1.3"):
        full = variants[f"{label}, 1 request, full handshake"]
        resumed = variants[f"{label}, 1 request, resumed"]
        assert full["statuses"] == resumed["statuses"] == [304]
        assert full["resumed"] == [False] and resumed["resumed"] == [True]
        assert full["bytes_above_tcp"] > resumed["bytes_above_tcp"], (full, resumed)
        assert full["negotiated"] == [label.split()[-1]]
    plain = variants["http, 2 requests"]
    assert plain["statuses"] == [304, 304] and plain["packets"] >= 14  # 2 x (open, ask, close)
    assert (
        plain["bytes_above_tcp"]
        < variants["ECDSA TLS 1.3, 2 requests, full handshakes"]["bytes_above_tcp"]
    )


def test_a_pointer_written_in_the_second_of_a_download_is_seen_by_the_next_poll(
    report: dict,
) -> None:
    """The CLI dates a new pointer the next whole second: get_url's If-Modified-Since (its
    download time, whole seconds) is older, so the next poll gets the new pointer."""
    probe = report["if_modified_since_probe"]
    assert probe["new_pointer_differs"] is True
    assert probe["same_second"] is True, probe
    assert probe["next_poll_as_get_url_sends_it"] == 200, probe
    assert probe["next_poll_with_the_depots_last_modified"] == 200


def test_a_user_error_is_one_line_and_exit_2() -> None:
    result = depot_load("--pollers", "0")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--pollers" in result.stderr, result.stderr

"""Every user error of the CLI is one line on stderr and exit status 2, never a traceback.

The real CLI runs as a subprocess (`python -m inference_image ...`), as a user would run it.
Cases that need a Docker engine are marked `docker`; the others need nothing but tmp_path.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from inference_image.bundle import ModelBundle
from inference_image.cli import build_parser, one_line
from inference_image.progress import Steps
from inference_image.schema import APS_FEATURES
from inference_image.signing import generate_key_pair

REPO = Path(__file__).resolve().parents[2]


NO_ENGINE = {"DOCKER_HOST": "unix://{tmp}/no-docker.sock"}
PUBLISH = "publish --releases {tmp}/r --image nope:1 --data {data}"


@dataclass(frozen=True)
class CliCase:
    """COMMAND_LINE must fail with one line naming EXPECT. Both, and ENV's values, are
    str.format'ed with the workspace's paths and ports; DOCKER: needs a Docker engine."""

    name: str
    command_line: str
    expect: str
    env: dict[str, str] = field(default_factory=dict)
    docker: bool = False


CASES = [
    CliCase(
        "send-closed-port",
        "send --url http://127.0.0.1:{closed_port} --csv {csv}",
        "cannot reach the server at http://127.0.0.1:{closed_port}",
    ),
    CliCase("send-bad-url", "send --url nope --csv {csv}", "--url must be an http"),
    CliCase("send-missing-csv", "send --csv {tmp}/missing.csv", "missing.csv: file not found"),
    CliCase("send-unreadable-csv", "send --csv {bad_csv}", "no header line"),
    CliCase("send-missing-token", "send --csv {csv} --token-file {tmp}/none", "--token-file"),
    CliCase("send-skip-past-end", "send --csv {csv} --skip 5", "--skip 5 leaves no row"),
    CliCase("verify-missing-bundle", "verify --bundle {tmp}/none", "not a model bundle"),
    CliCase("verify-tampered-bundle", "verify --bundle {tampered}", "fails its checksum"),
    CliCase("serve-missing-bundle", "serve --bundle {tmp}/none", "not a model bundle"),
    CliCase(
        "serve-port-in-use",
        "serve --bundle {bundle} --port {busy_port}",
        "cannot listen on 127.0.0.1:{busy_port}",
    ),
    CliCase("train-no-training-file", "train --data {tmp} --out {tmp}/b", "no training file"),
    CliCase("train-existing-out", "train --data {data} --out {tmp}", "already exists"),
    CliCase(
        "train-unknown-param",
        """train --data {data} --out {tmp}/b --params '{{"depth": 3}}'""",
        "--params may set only",
    ),
    CliCase(
        "train-no-rounds", "train --data {data} --out {tmp}/b --n-estimators 0", "n_estimators"
    ),
    CliCase(
        "train-param-not-a-number",
        """train --data {data} --out {tmp}/b --params '{{"learning_rate": "x"}}'""",
        "learning_rate must be float",
    ),
    CliCase(
        "fingerprint-settings-not-json",
        "fingerprint --data {data} --releases {tmp}/r --settings x",
        "--settings is not JSON",
    ),
    CliCase("keygen-out-is-a-file", "keygen --out {csv}", "File exists"),
    CliCase(
        "sign-missing-key",
        "sign --release {tmp} --signing-key {tmp}/no.key",
        "signing key {tmp}/no.key not found",
    ),
    CliCase(
        "sign-wrong-key-file", "sign --release {tmp} --signing-key {csv}", "not an unencrypted"
    ),
    CliCase(
        "sign-missing-release",
        "sign --release {tmp}/none --signing-key {key}",
        "{tmp}/none/manifest.json not found",
    ),
    CliCase(
        "publish-wrong-key-file",
        PUBLISH + " --bundle {bundle} --signing-key {csv}",
        "not an unencrypted PEM private key",
    ),
    CliCase("publish-missing-bundle", PUBLISH + " --bundle {tmp}/none", "not a model bundle"),
    CliCase("wheelhouse-out-is-a-file", "wheelhouse --out {csv}", "File exists"),
    CliCase("smoke-no-engine", "smoke --image nope:1", "cannot reach the Docker engine", NO_ENGINE),
    CliCase(
        "export-no-engine",
        "export --image nope:1 --out {tmp}/export",
        "cannot reach the Docker engine",
        NO_ENGINE,
    ),
    CliCase(
        "publish-no-engine",
        PUBLISH + " --bundle {bundle}",
        "cannot reach the Docker engine",
        NO_ENGINE,
    ),
    CliCase("smoke-missing-image", "smoke --image nope:1", "image nope:1 not found", docker=True),
    CliCase(
        "export-missing-image",
        "export --image nope:1 --out {tmp}/export",
        "image nope:1 not found",
        docker=True,
    ),
    CliCase(
        "publish-missing-image", PUBLISH + " --bundle {bundle}", "nope:1 not found", docker=True
    ),
    CliCase(
        "base-image-missing-without-pull",
        "base-image --name nope/none:1 --no-pull",
        "nope/none:1 does not exist locally and pulling is disabled",
        docker=True,
    ),
    CliCase(
        "build-missing-base-without-pull",
        "build --bundle {bundle} --tag nope:1 --base-image nope/none:1 --no-pull",
        "nope/none:1 does not exist locally and pulling is disabled",
        docker=True,
    ),
]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something listens on."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: a connection to it is refused."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield reserved.getsockname()[1]


@pytest.fixture
def workspace(
    tmp_path: Path, tiny_bundle: ModelBundle, busy_port: int, closed_port: int
) -> dict[str, str]:
    """The paths and ports the cases' argv name."""
    csv = tmp_path / "rows.csv"
    csv.write_text(",".join(APS_FEATURES) + "\n" + ",".join(["na"] * len(APS_FEATURES)) + "\n")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,2\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "aps_failure_training_set.csv").write_text("not read: the command fails before\n")
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_bundle.path, tampered)
    tampered.chmod(0o755)
    (tampered / "model_card.json").chmod(0o644)
    (tampered / "model_card.json").write_text("{}\n")
    keys = generate_key_pair(tmp_path / "keys")
    return {
        "tmp": str(tmp_path),
        "csv": str(csv),
        "bad_csv": str(bad_csv),
        "data": str(data),
        "bundle": str(tiny_bundle.path),
        "tampered": str(tampered),
        "key": str(keys.private_key),
        "busy_port": str(busy_port),
        "closed_port": str(closed_port),
    }


def run_cli(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LINKEDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "inference_image", *argv],
        cwd=REPO,
        env={**environment, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.name, marks=[pytest.mark.docker] if case.docker else [])
        for case in CASES
    ],
)
def test_user_error_is_one_line_and_status_2(case: CliCase, workspace: dict[str, str]) -> None:
    argv = [part.format(**workspace) for part in shlex.split(case.command_line)]
    env = {name: value.format(**workspace) for name, value in case.env.items()}
    result = run_cli(argv, env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert lines[0].startswith(f"linkedge-image {argv[0]}: "), lines[0]
    assert case.expect.format(**workspace) in lines[0]
    assert result.returncode == 2, output


def test_usage_error_still_exits_2() -> None:
    result = run_cli(["verify"], {})
    assert result.returncode == 2
    assert "--bundle" in result.stderr and "Traceback" not in result.stderr


def parser_actions(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, object]]:
    """(where, action) for every action of PARSER and of its subcommands, -h excepted."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        yield f"{path} {'/'.join(action.option_strings) or action.dest}", action
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield f"{path} {choice.dest}", choice
            for name, subparser in action.choices.items():
                yield from parser_actions(subparser, f"{path} {name}")


def test_every_option_and_subcommand_has_help() -> None:
    missing = [
        where
        for where, action in parser_actions(build_parser(), "linkedge-image")
        if not (getattr(action, "help", None) or "").strip()
    ]
    assert not missing, f"without help: {missing}"


def test_one_line_keeps_the_first_and_last_line() -> None:
    assert one_line("image x not found") == "image x not found"
    assert one_line("docker build of x failed:\nStep 1/9\n\nerror: no space\n") == (
        "docker build of x failed: error: no space (-v shows all 3 lines)"
    )


def test_steps_are_numbered_and_timed() -> None:
    stream = io.StringIO()
    steps = Steps(2, enabled=True, stream=stream)
    with steps.step("first"):
        pass
    with pytest.raises(RuntimeError), steps.step("second"):
        raise RuntimeError("boom")
    first, second = stream.getvalue().splitlines()
    assert first.startswith("[1/2] first ... ") and first.endswith(" s")
    assert second.startswith("[2/2] second ... failed after ")


def test_steps_restart_their_line_after_a_log_record() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # the log shares the terminal with the steps
    logging.getLogger().addHandler(handler)
    try:
        with Steps(1, enabled=True, stream=stream).step("building"):
            logging.getLogger("test").warning("in between")
    finally:
        logging.getLogger().removeHandler(handler)
    started, record, done = stream.getvalue().splitlines()
    assert (started, record) == ("[1/1] building ...", "in between")
    assert done.startswith("[1/1] building ... ") and done.endswith(" s")


def test_steps_are_silent_when_disabled() -> None:
    stream = io.StringIO()
    with Steps(1, enabled=False, stream=stream).step("quiet"):
        pass
    assert stream.getvalue() == ""

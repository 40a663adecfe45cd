"""An architecture's names in each tool's language, and one wheelhouse per architecture: a
wheel that runs on another machine is never taken for this one's."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_image.cli import main
from inference_image.image.platforms import AMD64, ARM64, host_platform, platform_named
from inference_image.image.wheelhouse import missing_wheels, wheel_for, wheelhouse_for


@pytest.mark.parametrize("name", ["linux/arm64", "arm64", "aarch64", " AArch64 "])
def test_every_name_of_arm64_is_arm64(name: str) -> None:
    assert platform_named(name) is ARM64
    assert ARM64.suffix == "-arm64" and ARM64.machine == "aarch64"


def test_an_unknown_platform_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="linux/amd64, linux/arm64"):
        platform_named("linux/s390x")


def test_the_cli_refuses_an_unknown_platform_in_one_line(capsys) -> None:
    assert main(["wheelhouse", "--platform", "riscv64", "--out", "/nonexistent"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "linkedge-image wheelhouse: --platform: unknown platform 'riscv64': LinkEdge builds "
        "for linux/amd64, linux/arm64"
    ]


def test_another_architectures_wheels_live_in_their_own_directory(tmp_path: Path) -> None:
    other = ARM64 if host_platform() is AMD64 else AMD64
    assert wheelhouse_for(tmp_path) == tmp_path
    assert wheelhouse_for(tmp_path, host_platform()) == tmp_path
    assert wheelhouse_for(tmp_path, other) == tmp_path / other.debian_arch


def test_a_wheel_for_another_machine_is_missing_for_this_one(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==2.4.6\nflask==3.1.3\n")
    for name in (
        "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "flask-3.1.3-py3-none-any.whl",
    ):
        (tmp_path / name).touch()
    assert missing_wheels(tmp_path, requirements, ARM64) == []
    assert missing_wheels(tmp_path, requirements, AMD64) == ["numpy==2.4.6"]
    assert wheel_for(tmp_path, "flask", "3.1.3", AMD64) == tmp_path / "flask-3.1.3-py3-none-any.whl"

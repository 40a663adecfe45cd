"""The arm64 serving image, built on this x86_64 machine from the same bundle as the amd64
one, run under QEMU user emulation, checked as the amd64 image is: health, every smoke vector
through /predict and V2, and probabilities bit for bit equal to the amd64 image's for the
smoke vectors and 1,000 real rows. Its figures go to build/figures/arm64-image.json.

Where the kernel refuses emulation (no binfmt_misc), ensure-binfmt.sh says why and these
tests are skipped with its words."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from inference_image.data import load_aps_csv
from inference_image.image.platforms import ARM64, host_platform
from inference_image.image.smoke import check_smoke_vectors, http_json, start_service

from .conftest import WHEELHOUSE

pytestmark = [pytest.mark.docker, pytest.mark.arm64]
ENSURE_BINFMT = Path(__file__).resolve().parents[2] / "inference_image/image/ensure-binfmt.sh"
FIGURES = Path(__file__).resolve().parents[2] / "build" / "figures" / "arm64-image.json"
REAL_ROWS = 1000
EMULATED_READY_TIMEOUT = 300.0
figures: dict[str, object] = {}


def save_figures() -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def emulation() -> None:
    if host_platform() is ARM64:
        return
    done = subprocess.run(["bash", str(ENSURE_BINFMT)], capture_output=True, text=True)
    if done.returncode == 3:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def arm64_image(emulation, docker_client, real_bundle, built_image):
    from inference_image.image.build import build_image

    tag = f"{built_image.tag}{ARM64.suffix}"
    built = build_image(real_bundle.path, tag, WHEELHOUSE, client=docker_client, platform=ARM64)
    figures.update(
        {
            "arm64_build_seconds": built.seconds,
            "arm64_image_bytes": built.size_bytes,
            "amd64_build_seconds": built_image.seconds,
            "amd64_image_bytes": built_image.size_bytes,
        }
    )
    save_figures()
    yield built
    docker_client.images.remove(built.tag, force=True)


@pytest.fixture(scope="module")
def arm64_service(arm64_image, docker_client):
    started = time.monotonic()
    running = start_service(arm64_image.tag, docker_client, ready_timeout=EMULATED_READY_TIMEOUT)
    figures["arm64_emulated_seconds_to_ready"] = round(time.monotonic() - started, 1)
    save_figures()
    yield running
    running.stop()


def test_the_image_config_and_its_code_are_arm64(arm64_image, docker_client) -> None:
    image = docker_client.images.get(arm64_image.tag)
    assert image.attrs["Architecture"] == "arm64" and image.attrs["Os"] == "linux"
    machine = docker_client.containers.run(
        arm64_image.tag, entrypoint=["uname", "-m"], remove=True, platform=ARM64.name
    )
    assert machine.decode().strip() == "aarch64"


def model_layer_files(docker_client, tag: str) -> tuple[str, dict[str, tuple]]:
    """The image's last layer (the bundle): its diff ID, and each file's mode, owner, size,
    modification time and sha256."""
    image = docker_client.images.get(tag)
    saved_bytes = io.BytesIO(b"".join(docker_client.api.get_image(tag)))
    with tarfile.open(fileobj=saved_bytes) as saved:
        (manifest,) = json.loads(saved.extractfile("manifest.json").read())
        layer_bytes = io.BytesIO(saved.extractfile(manifest["Layers"][-1]).read())
    with tarfile.open(fileobj=layer_bytes) as layer:
        files = {
            member.name: (
                member.mode,
                member.uid,
                member.size,
                member.mtime,
                hashlib.sha256(layer.extractfile(member).read()).hexdigest(),
            )
            for member in layer.getmembers()
            if member.isfile()
        }
    return image.attrs["RootFS"]["Layers"][-1], files


def test_the_model_layer_is_the_same_layer_on_both(arm64_image, built_image, docker_client):
    """The bundle's layer is the same bytes on both architectures (the builder writes it:
    model_layer), so one diff ID: a model-only update sends the same layer to every truck."""
    amd64_id, amd64_files = model_layer_files(docker_client, built_image.tag)
    arm64_id, arm64_files = model_layer_files(docker_client, arm64_image.tag)
    figures["model_layer"] = {
        "amd64_diff_id": amd64_id,
        "arm64_diff_id": arm64_id,
        "identical": amd64_id == arm64_id,
        "files": len(amd64_files),
        "bytes": sum(entry[2] for entry in amd64_files.values()),
    }
    save_figures()
    assert amd64_files == arm64_files and len(amd64_files) >= 3
    assert amd64_id == arm64_id


def test_serves_exactly_the_smoke_vectors_under_emulation(arm64_service, real_bundle) -> None:
    started = time.monotonic()
    mismatches = check_smoke_vectors(
        arm64_service.base_url, real_bundle.smoke_vectors, real_bundle.feature_names
    )
    figures["arm64_emulated_smoke_seconds"] = round(time.monotonic() - started, 2)
    save_figures()
    assert mismatches == []


def probabilities(base_url: str, rows: list[list[float | None]], features: list[str]):
    records = [dict(zip(features, row, strict=True)) for row in rows]
    status, body = http_json(f"{base_url}/predict", {"instances": records})
    assert status == 200, body
    return [prediction["probability"] for prediction in body["predictions"]]


def test_probabilities_are_bit_identical_to_the_amd64_image(
    arm64_service, service, real_bundle, aps_data_dir
) -> None:
    data = load_aps_csv(aps_data_dir / "aps_failure_test_set.unlabeled-sample.csv")
    rows = [
        [None if value != value else float(value) for value in row]  # NaN: missing
        for row in data.features[:REAL_ROWS].tolist()
    ]
    vectors = [vector["inputs"] for vector in real_bundle.smoke_vectors]
    features = list(real_bundle.feature_names)
    differences = {}
    for name, batch in (("smoke_vectors", vectors), ("real_rows", rows)):
        on_amd64 = probabilities(service.base_url, batch, features)
        on_arm64 = probabilities(arm64_service.base_url, batch, features)
        different = [abs(a - b) for a, b in zip(on_amd64, on_arm64, strict=True) if a != b]
        differences[name] = {
            "rows": len(batch),
            "different": len(different),
            "max_abs_difference": max(different, default=0.0),
        }
    figures["probability_differences"] = differences
    save_figures()
    assert all(entry["different"] == 0 for entry in differences.values()), differences

"""Fixtures that build and run the real serving image (marker: docker)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference_image.bundle import ModelBundle
from inference_image.data import default_data_dir
from tests.conftest import docker_engine

WHEELHOUSE = Path(os.environ.get("LINKEDGE_WHEELHOUSE", "build/wheelhouse"))


@pytest.fixture(scope="session")
def aps_data_dir() -> Path:
    data_dir = default_data_dir()
    if data_dir is None:
        pytest.skip("no APS data: set LINKEDGE_DATA_DIR or provide ../shared/aps")
    return data_dir


@pytest.fixture(scope="session")
def real_bundle(tmp_path_factory, aps_data_dir) -> ModelBundle:
    """The real model, trained on the APS training data with the full nested evaluation."""
    from inference_image.train_bundle import train_to_bundle

    out = tmp_path_factory.mktemp("real") / "bundle"
    return train_to_bundle(aps_data_dir, out).bundle


@pytest.fixture(scope="session")
def docker_client():
    return docker_engine()


@pytest.fixture(scope="session")
def built_image(docker_client, real_bundle):
    from inference_image.image.build import build_image

    # Unique per session: a concurrent session on the same engine removes its own tag.
    tag = f"linkedge/aps-classifier:test-{real_bundle.version}-{os.getpid()}"
    built = build_image(real_bundle.path, tag, WHEELHOUSE, client=docker_client)
    yield built
    docker_client.images.remove(built.tag, force=True)


@pytest.fixture(scope="session")
def service(docker_client, built_image):
    from inference_image.image.smoke import start_service

    running = start_service(built_image.tag, docker_client)
    yield running
    running.stop()

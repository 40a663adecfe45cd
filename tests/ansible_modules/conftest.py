"""Real images for the module tests: two good versions and the ways a version can be bad.

Built once per session from the real APS data with the package's own builder, removed at the
end. Every container a test creates is named with the session's prefix and removed as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference_image.bundle import SMOKE_FILE, load_bundle, write_bundle
from inference_image.data import default_data_dir
from inference_image.schema import APS_FEATURES
from tests.conftest import docker_engine

WHEELHOUSE = Path(os.environ.get("LINKEDGE_WHEELHOUSE", "build/wheelhouse"))
SESSION = f"lkt{uuid.uuid4().hex[:6]}"
REPOSITORY = "linkedge-test/aps-modules"


@dataclass(frozen=True)
class TestImage:
    tag: str
    id: str
    version: str


@dataclass(frozen=True)
class TestImages:
    v1: TestImage
    v2: TestImage
    bad: TestImage  # its bundle expects outputs the model does not give: never ready
    impostor: TestImage  # ready, but serves another model than its bundle's smoke vectors
    never_ready: TestImage  # does not serve at all
    root: TestImage  # runs as root


@dataclass(frozen=True)
class ExportedArchive:
    archive: Path
    sha256: str
    image_id: str
    tag: str


@pytest.fixture(scope="session")
def docker_client():
    client = docker_engine()
    yield client
    for container in client.containers.list(all=True, filters={"name": SESSION}):
        container.remove(force=True)


def _train(data_dir: Path, out: Path, n_estimators: int):
    from inference_image.train_bundle import train_to_bundle
    from inference_image.training import TrainingParams

    params = TrainingParams(n_estimators=n_estimators, nthread=2)
    return train_to_bundle(data_dir, out, params=params, evaluate=False).bundle


def _rewrite_bundle(source, out: Path, version: str, smoke_vectors=None, model_from=None):
    """A valid (checksummed) bundle from `source` with another version, smoke vectors or
    model."""
    model_bundle = model_from or source
    card = dict(model_bundle.card, version=version)
    write_bundle(
        out,
        model_bundle.model_path.read_bytes(),
        list(APS_FEATURES),
        card,
        smoke_vectors if smoke_vectors is not None else model_bundle.smoke_vectors,
    )
    return load_bundle(out)


def _derive(client, base: TestImage, tag: str, dockerfile: str, files: dict | None = None):
    """An image FROM `base` built from a tiny context (no network)."""
    with tempfile.TemporaryDirectory(prefix="linkedge-derive-") as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(f"FROM {base.tag}\n{dockerfile}")
        for name, source in (files or {}).items():
            shutil.copytree(source, context / name)
        image, _ = client.images.build(path=str(context), tag=tag, rm=True, pull=False)
    labels = image.attrs["Config"]["Labels"] or {}
    return TestImage(tag, image.id, labels.get("io.linkedge.model.version", ""))


@pytest.fixture(scope="session")
def images(docker_client, tmp_path_factory) -> TestImages:
    from inference_image.image.build import build_image

    data_dir = default_data_dir()
    if data_dir is None:
        pytest.skip("no APS data: set LINKEDGE_DATA_DIR or provide ../shared/aps")
    work = tmp_path_factory.mktemp("module-images")
    tags: list[str] = []

    def build(bundle, name: str) -> TestImage:
        tag = f"{REPOSITORY}:{SESSION}-{name}"
        built = build_image(bundle.path, tag, WHEELHOUSE, client=docker_client, allow_pull=False)
        tags.append(tag)
        return TestImage(tag, built.image_id, built.model_version)

    b1 = _train(data_dir, work / "v1", n_estimators=30)
    b2 = _train(data_dir, work / "v2", n_estimators=40)
    tampered = json.loads((b1.path / SMOKE_FILE).read_text())
    tampered[0]["probability"] += 0.01 if tampered[0]["probability"] < 0.5 else -0.01
    bad = _rewrite_bundle(b1, work / "bad", f"{b1.version}-bad", smoke_vectors=tampered)
    impostor_bundle = _rewrite_bundle(b1, work / "impostor", b2.version)
    try:
        v1, v2 = build(b1, "v1"), build(b2, "v2")
        bad_image = build(bad, "bad")
        impostor = _derive(
            docker_client,
            v2,
            f"{REPOSITORY}:{SESSION}-impostor",
            "COPY impostor /opt/linkedge/impostor\nENV LINKEDGE_BUNDLE=/opt/linkedge/impostor\n",
            {"impostor": impostor_bundle.path},
        )
        tags.append(impostor.tag)
        never = _derive(
            docker_client, v1, f"{REPOSITORY}:{SESSION}-never", 'ENTRYPOINT ["sleep", "infinity"]\n'
        )
        tags.append(never.tag)
        root = _derive(docker_client, v1, f"{REPOSITORY}:{SESSION}-root", "USER 0:0\n")
        tags.append(root.tag)
        yield TestImages(v1, v2, bad_image, impostor, never, root)
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": SESSION}):
            container.remove(force=True)
        for tag in reversed(tags):
            with contextlib.suppress(Exception):
                docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="session")
def exported(docker_client, images, tmp_path_factory) -> ExportedArchive:
    """A distinct image (v1 plus a label) saved with export_image, then removed from the
    engine: image_load tests load it back. Its layers stay (they are v1's), so it is quick."""
    from inference_image.image.export import export_image

    image = _derive(
        docker_client,
        images.v1,
        f"{REPOSITORY}:{SESSION}-load",
        f"LABEL io.linkedge.test.session={SESSION}\n",
    )
    out = tmp_path_factory.mktemp("export")
    archive = export_image(image.tag, out, client=docker_client)
    docker_client.images.remove(image.id, force=True)
    yield ExportedArchive(archive.archive, archive.sha256, image.id, image.tag)
    with contextlib.suppress(Exception):
        docker_client.images.remove(image.id, force=True)


@pytest.fixture
def service(docker_client, request):
    """A unique service name; its containers (serving, previous, candidate) are removed after."""
    name = f"{SESSION}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', request.node.name)[:40]}"
    yield name
    for suffix in ("", "-previous", "-candidate"):
        with contextlib.suppress(Exception):
            docker_client.containers.get(name + suffix).remove(force=True)

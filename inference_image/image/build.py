"""Assemble the build context and build the serving image with the Docker engine."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from ..bundle import load_bundle
from ..contract import BUNDLE_DIR
from ..release import source_commit
from .architecture import ArchitectureError, set_architecture
from .base_image import resolve_base_image
from .model_layer import model_layer
from .platforms import Platform, host_platform
from .wheelhouse import REQUIREMENTS, ensure_wheelhouse, wheelhouse_for

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DOCKERFILE = Path(__file__).with_name("Dockerfile")
ENSURE_BINFMT = Path(__file__).with_name("ensure-binfmt.sh")
DEFAULT_BASE_IMAGE = "debian:bookworm-slim"
log = logging.getLogger(__name__)


class ImageBuildError(RuntimeError):
    """The Docker build failed; the message carries the end of its log."""


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    size_bytes: int
    model_version: str
    bundle_sha256: str
    base_image: str
    seconds: float
    platform: str  # Docker's name of the image's architecture: linux/arm64


def ensure_emulation(platform: Platform) -> None:
    """Let this machine run PLATFORM's code under QEMU (ensure-binfmt.sh, idempotent), or
    ImageBuildError with the one line that says why it cannot."""
    done = subprocess.run(["bash", str(ENSURE_BINFMT)], capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["ensure-binfmt.sh failed"])[-1]
        raise ImageBuildError(f"cannot build for {platform.name} here: {reason}")


def assemble_context(context: Path, wheelhouse: Path, platform: Platform | None = None) -> None:
    """Dockerfile, wheels/ (only the pinned ones, for PLATFORM: see wheelhouse_for),
    app/inference_image. The model is not in the context: it is appended as its own layer
    after the build (model_layer)."""
    shutil.copy2(DOCKERFILE, context / "Dockerfile")
    wheels = context / "wheels"
    wheels.mkdir()
    for wheel in ensure_wheelhouse(wheelhouse_for(wheelhouse, platform), platform=platform):
        shutil.copy2(wheel, wheels / wheel.name)
    shutil.copy2(REQUIREMENTS, wheels / REQUIREMENTS.name)
    shutil.copytree(
        PACKAGE_DIR,
        context / "app" / PACKAGE_DIR.name,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "image", "Dockerfile"),
    )


def build_image(
    bundle_dir: Path,
    tag: str,
    wheelhouse: Path,
    base_image: str = DEFAULT_BASE_IMAGE,
    allow_pull: bool = True,
    client: docker.DockerClient | None = None,
    use_cache: bool = True,
    platform: Platform | None = None,
) -> BuiltImage:
    """Verify the bundle, then build `tag` from it for PLATFORM (default: the host's; another
    architecture's steps run under QEMU: ensure-binfmt.sh), its model as the last layer
    (model_layer: the same bytes for every platform); raise ImageBuildError with the log tail,
    or when the image's config does not name PLATFORM's architecture."""
    platform = platform or host_platform()
    bundle = load_bundle(bundle_dir)  # refuses a tampered bundle before anything is built
    layer = model_layer(bundle.path)  # read now, as verified (a build can take minutes)
    if platform != host_platform():
        ensure_emulation(platform)
    client = client or docker.from_env(timeout=600)
    base = resolve_base_image(client, base_image, allow_pull, platform)
    started = time.monotonic()
    log_tail: list[str] = []
    with tempfile.TemporaryDirectory(prefix="linkedge-build-") as tmp:
        context = Path(tmp)
        assemble_context(context, wheelhouse, platform)
        stream = client.api.build(
            path=str(context),
            tag=tag,
            platform=platform.name,
            buildargs={
                "BASE_IMAGE": base,
                "MODEL_VERSION": bundle.version,
                "BUNDLE_SHA256": bundle.sha256,
                "SOURCE_REVISION": source_commit(),
            },
            rm=True,
            forcerm=True,
            nocache=not use_cache,
            pull=False,
            decode=True,
        )
        for chunk in stream:
            if "stream" in chunk:
                line = chunk["stream"].rstrip()
                if line:
                    log.info("%s", line)
                    log_tail = [*log_tail, line][-40:]
            if "error" in chunk:
                detail = "\n".join([*log_tail, chunk["error"]])
                raise ImageBuildError(f"docker build of {tag} failed:\n{detail}")
    try:
        # A classic build's FROM scratch stage takes the engine's architecture: the layers are
        # PLATFORM's (built from its base, run under QEMU), the config is corrected. The model
        # is appended as the last layer, the same bytes for every platform and every build.
        set_architecture(
            client,
            tag,
            platform,
            layer=layer,
            layer_comment=f"linkedge: model {bundle.version} in {BUNDLE_DIR} "
            f"(bundle {bundle.sha256})",
        )
        image = client.images.get(tag)
    except docker.errors.ImageNotFound as exc:
        raise ImageBuildError(f"docker build reported success but {tag} is absent") from exc
    except ArchitectureError as exc:
        raise ImageBuildError(f"{tag} was built for {platform.name}, but {exc}") from exc
    return BuiltImage(
        tag=tag,
        image_id=image.id,
        size_bytes=int(image.attrs["Size"]),
        model_version=bundle.version,
        bundle_sha256=bundle.sha256,
        base_image=base,
        seconds=round(time.monotonic() - started, 1),
        platform=platform.name,
    )

"""The model bundle: an immutable, checksummed directory that every later step trusts.

Layout::

    model.json          XGBoost model in its native JSON format
    schema.json         {"features": [...names in dataset order...], "missing": ["na", null]}
    model_card.json     version, data checksums, parameters, threshold, metrics
    smoke_vectors.json  [{"inputs": [float | null, ...], "probability": p, "label": "pos"|"neg"}]
    reference.json      training reference for drift (inference_image.drift); optional: a
                        bundle without one serves without drift metrics
    SHA256SUMS          `sha256sum` format over the files above

The bundle's digest is the sha256 of SHA256SUMS: it changes whenever any file does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .contract import SUMS_FILE

MODEL_FILE = "model.json"
SCHEMA_FILE = "schema.json"
CARD_FILE = "model_card.json"
SMOKE_FILE = "smoke_vectors.json"
REFERENCE_FILE = "reference.json"
CONTENT_FILES = (MODEL_FILE, SCHEMA_FILE, CARD_FILE, SMOKE_FILE)  # required


class BundleError(ValueError):
    """The bundle is missing, incomplete, tampered with or malformed."""


@dataclass(frozen=True)
class ModelBundle:
    path: Path
    version: str
    sha256: str
    feature_names: tuple[str, ...]
    threshold: float
    card: dict[str, Any]
    smoke_vectors: list[dict[str, Any]]
    reference: dict[str, Any] | None = None  # reference.json, when the bundle has one

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def label_for(self, probability: float) -> str:
        return "pos" if probability >= self.threshold else "neg"


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _dump_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_bundle(
    out_dir: Path,
    model_json: bytes,
    feature_names: list[str],
    card: dict[str, Any],
    smoke_vectors: list[dict[str, Any]],
    reference: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle atomically; refuse to replace an existing one (bundles are immutable)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise BundleError(
            f"{out_dir} already exists and bundles are immutable: choose a new --out directory"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (staging / MODEL_FILE).write_bytes(model_json)
        _dump_json(
            staging / SCHEMA_FILE, {"features": list(feature_names), "missing": ["na", None]}
        )
        _dump_json(staging / CARD_FILE, card)
        _dump_json(staging / SMOKE_FILE, smoke_vectors)
        names = list(CONTENT_FILES)
        if reference is not None:
            _dump_json(staging / REFERENCE_FILE, reference)
            names.append(REFERENCE_FILE)
        sums = "".join(f"{sha256_file(staging / name)}  {name}\n" for name in names)
        (staging / SUMS_FILE).write_text(sums)
        for name in (*names, SUMS_FILE):
            os.chmod(staging / name, 0o444)
        os.chmod(staging, 0o555)
        staging.rename(out_dir)
    except BaseException:
        os.chmod(staging, 0o755)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def verify_bundle(path: Path) -> str:
    """Check every file against SHA256SUMS; return the bundle digest or raise BundleError."""
    path = Path(path)
    sums_path = path / SUMS_FILE
    if not sums_path.is_file():
        raise BundleError(f"{path} is not a model bundle: {SUMS_FILE} is missing")
    expected: dict[str, str] = {}
    for number, line in enumerate(sums_path.read_text().splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise BundleError(f"{sums_path}:{number}: malformed checksum line")
        expected[name] = digest
    missing = [name for name in CONTENT_FILES if name not in expected]
    if (path / REFERENCE_FILE).exists() and REFERENCE_FILE not in expected:
        missing.append(REFERENCE_FILE)  # present but unchecked: it would be read unverified
    if missing:
        raise BundleError(f"{sums_path} does not cover {', '.join(missing)}")
    for name, digest in expected.items():
        file_path = path / name
        if not file_path.is_file():
            raise BundleError(f"bundle file {file_path} is missing")
        actual = sha256_file(file_path)
        if actual != digest:
            raise BundleError(
                f"bundle file {file_path} fails its checksum (expected {digest}, got {actual}): "
                "the bundle was modified or corrupted; rebuild it with `train`"
            )
    return sha256_file(sums_path)


def load_bundle(path: Path) -> ModelBundle:
    """Verify and load a bundle's metadata (the model itself is loaded by the predictor)."""
    path = Path(path)
    digest = verify_bundle(path)
    try:
        schema = json.loads((path / SCHEMA_FILE).read_text())
        card = json.loads((path / CARD_FILE).read_text())
        smoke_vectors = json.loads((path / SMOKE_FILE).read_text())
        reference_path = path / REFERENCE_FILE
        reference = json.loads(reference_path.read_text()) if reference_path.is_file() else None
        features = tuple(schema["features"])
        threshold = float(card["threshold"])
        version = str(card["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {path} has malformed metadata: {exc}") from exc
    return ModelBundle(
        path=path,
        version=version,
        sha256=digest,
        feature_names=features,
        threshold=threshold,
        card=card,
        smoke_vectors=smoke_vectors,
        reference=reference,
    )

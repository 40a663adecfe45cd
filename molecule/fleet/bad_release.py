"""Build build/releases/v1-bad: v1's model with one smoke vector tampered (the image starts but
never gets ready: its bundle does not reproduce its own smoke vectors), as
tests/ansible_modules/conftest.py does. Signed with the development key like v1 and v2 (a bad
model from a trusted builder: the smoke gate, not the signature, must stop it). Idempotent
(kept when its manifest.json is there).
Usage: python molecule/fleet/bad_release.py   (from the repository root, in the venv)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from inference_image.bundle import SMOKE_FILE, load_bundle, write_bundle
from inference_image.schema import APS_FEATURES

RELEASES = Path("build/releases")
OUT = RELEASES / "v1-bad"
TAG = "linkedge/aps-classifier:molecule-v1-bad"
SIGNING_KEY = Path("build/keys/release-signing.key")  # scripts/molecule-releases.sh makes it
CLI = [sys.executable, "-m", "inference_image"]
SOURCES_FILE = ".sources-sha256"  # written by scripts/molecule-releases.sh


def sign() -> None:
    subprocess.run(
        [*CLI, "sign", "--release", str(OUT), "--signing-key", str(SIGNING_KEY)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    os.chdir(Path(__file__).resolve().parents[2])
    sources = RELEASES / "v1" / SOURCES_FILE  # v1-bad is rebuilt whenever v1 was
    if not (OUT / "manifest.json").is_file() or not same_text(OUT / SOURCES_FILE, sources):
        build()
        (OUT / SOURCES_FILE).write_text(sources.read_text() if sources.is_file() else "")
    sign()


def same_text(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_text() == b.read_text()


def build() -> None:
    source = load_bundle(RELEASES / "v1" / "bundle")
    tampered = json.loads((source.path / SMOKE_FILE).read_text())
    tampered[0]["probability"] += 0.01 if tampered[0]["probability"] < 0.5 else -0.01
    with tempfile.TemporaryDirectory(dir=RELEASES, prefix=".v1-bad-") as tmp:
        bundle = Path(tmp) / "bundle"
        card = dict(source.card, version=f"{source.version}-bad")
        write_bundle(bundle, source.model_path.read_bytes(), list(APS_FEATURES), card, tampered)
        subprocess.run(
            [*CLI, "build", "--bundle", str(bundle), "--tag", TAG, "--no-pull"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [*CLI, "export", "--image", TAG, "--out", str(Path(tmp) / "export")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if OUT.exists():  # bundles are write-protected
            subprocess.run(["chmod", "-R", "u+w", str(OUT)], check=True)
            shutil.rmtree(OUT)
        (Path(tmp) / "export").rename(OUT)


if __name__ == "__main__":
    main()

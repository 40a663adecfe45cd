"""Build build/releases/v1-bad: v1's model with one smoke vector tampered (the image starts but
never gets ready: its bundle does not reproduce its own smoke vectors), as
tests/ansible_modules/conftest.py does. Idempotent (kept when its image.json is there).
Usage: python molecule/fleet/bad_release.py   (from the repository root, in the venv)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from inference_image.bundle import SMOKE_FILE, load_bundle, write_bundle
from inference_image.schema import APS_FEATURES

RELEASES = Path("build/releases")
OUT = RELEASES / "v1-bad"
TAG = "linkedge/aps-classifier:molecule-v1-bad"


def main() -> None:
    os.chdir(Path(__file__).resolve().parents[2])
    if (OUT / "image.json").is_file():
        return
    source = load_bundle(RELEASES / "v1" / "bundle")
    tampered = json.loads((source.path / SMOKE_FILE).read_text())
    tampered[0]["probability"] += 0.01 if tampered[0]["probability"] < 0.5 else -0.01
    with tempfile.TemporaryDirectory(dir=RELEASES, prefix=".v1-bad-") as tmp:
        bundle = Path(tmp) / "bundle"
        card = dict(source.card, version=f"{source.version}-bad")
        write_bundle(bundle, source.model_path.read_bytes(), list(APS_FEATURES), card, tampered)
        cli = [sys.executable, "-m", "inference_image"]
        subprocess.run(
            [*cli, "build", "--bundle", str(bundle), "--tag", TAG, "--no-pull"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [*cli, "export", "--image", TAG, "--out", str(Path(tmp) / "export")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (Path(tmp) / "export").rename(OUT)


if __name__ == "__main__":
    main()

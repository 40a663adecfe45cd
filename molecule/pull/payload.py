"""What a controller carries to install pull mode on a truck without a package index, made on
the host at test time (the pull scenario's dependency step):

  build/edge-manager-wheels/       edge_manager_wheelhouse: ansible-core (this venv's version)
                                   and meta/requirements.txt's packages as wheels for the
                                   truck's Python
  build/edge-manager-collections/  edge_manager_collection_tarballs: the collection's tarball
                                   and its dependencies' (built from the copies the `ansible`
                                   PyPI package ships; Galaxy is not reachable)

The same helpers as the installed-collection tests (tests/collection/conftest.py). Idempotent:
wheels present are kept; the tarballs are rebuilt when the collection's files changed.

    .venv/bin/python molecule/pull/payload.py
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT))

from tests.collection.conftest import (  # noqa: E402  (one implementation, shared)
    build_installed_copy,
    bundled_collections,
    checked,
    dependency_closure,
    edge_manager_wheelhouse,
    run,
)

COLLECTIONS = PROJECT / "build" / "edge-manager-collections"


def collection_sources_digest() -> str:
    """What `ansible-galaxy collection build` reads: the checkout's files as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        check=True,
    ).stdout
    digest = hashlib.sha256()
    for name in sorted(filter(None, listed.split(b"\0"))):
        path = PROJECT / name.decode()
        if path.is_file():
            digest.update(name + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_collections() -> list[Path]:
    import yaml

    digest = collection_sources_digest()
    stamp = COLLECTIONS / ".sources-sha256"
    if stamp.is_file() and stamp.read_text() == digest and list(COLLECTIONS.glob("*.tar.gz")):
        return sorted(COLLECTIONS.glob("*.tar.gz"))
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    shutil.rmtree(COLLECTIONS, ignore_errors=True)
    COLLECTIONS.mkdir(parents=True)
    checked(run([galaxy, "collection", "build", "--output-path", COLLECTIONS], cwd=PROJECT))
    meta = yaml.safe_load((PROJECT / "galaxy.yml").read_text())
    with tempfile.TemporaryDirectory(prefix="linkedge-payload-") as work:
        for path in dependency_closure(meta["dependencies"], bundled_collections()):
            build_installed_copy(path, Path(work), COLLECTIONS, galaxy)
    stamp.write_text(digest)
    return sorted(COLLECTIONS.glob("*.tar.gz"))


def main() -> int:
    core = importlib.metadata.version("ansible-core")
    wheels = edge_manager_wheelhouse(core)
    if wheels is None:
        print("[payload] no package index to download the truck's wheels from", file=sys.stderr)
        return 1
    tarballs = build_collections()
    print(f"[payload] {wheels} (ansible-core {core}); {', '.join(p.name for p in tarballs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

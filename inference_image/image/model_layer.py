"""The model layer: the bundle's files as an image layer written here, not by ``docker build``.

A classic build's ``COPY`` stamps the layer's directories with the time of the build, so the
same bundle built twice, or for two architectures, gave two layers. This one is a function of
the bundle's bytes only: entries in name order, owner root, directories 0555, files 0444, every
time FIXED_MTIME, no extended headers. So the amd64 and arm64 images of a release share one
model layer (one diff ID): a model-only update sends the same bytes to every truck, whatever
its architecture, and a rebuild of an unchanged bundle gives the same model layer.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from ..contract import BUNDLE_DIR

# 2000-01-01T00:00:00Z: a fixed time, not the epoch (some tools read 0 as "no time").
FIXED_MTIME = 946_684_800


def _entry(name: str, mode: int, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode, info.size, info.mtime = mode, size, FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def model_layer(bundle_dir: Path) -> bytes:
    """The uncompressed layer tar that puts BUNDLE_DIR's files (flat, as a bundle is) at
    contract.BUNDLE_DIR in the image; its parents come from the image's lower layers."""
    root = BUNDLE_DIR.strip("/")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as layer:
        layer.addfile(_entry(f"{root}/", 0o555, directory=True))
        for path in sorted(Path(bundle_dir).iterdir()):
            if not path.is_file():
                raise ValueError(f"{path}: a bundle holds only files")
            data = path.read_bytes()
            layer.addfile(_entry(f"{root}/{path.name}", 0o444, len(data)), io.BytesIO(data))
    return out.getvalue()

"""Fetch the official APS data from UCI and verify every byte against known checksums."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from .bundle import sha256_file
from .data import TEST_FILE, TRAIN_FILES

UCI_ARCHIVE_URL = "https://archive.ics.uci.edu/static/public/421/aps+failure+at+scania+trucks.zip"
UCI_ARCHIVE_SHA256 = "5504d0402f54faaf97ac0ca085a621645763f5cfea2eb29c592b057d43d4db89"
OFFICIAL_FILE_SHA256 = {
    TRAIN_FILES[0]: "bb484302e3a3a1c8ef5e1f0129c4dc7cbd58f350867f95b575461ca21ab6b9da",
    TEST_FILE: "2cdf6f7661c7b4c63333c93cdec36a3a82350176b604a2312cf82799fb2712f3",
}


class DownloadError(RuntimeError):
    """The archive could not be fetched, or it is not the official one."""


def fetch(url: str, destination: Path, timeout: float = 60.0) -> str:
    """Stream `url` to `destination`; return its sha256."""
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,
            open(destination, "wb") as out,
        ):
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        raise DownloadError(f"cannot download {url}: {exc}") from exc
    return digest.hexdigest()


def download_official(
    out_dir: Path,
    url: str | None = None,
    archive_sha256: str = UCI_ARCHIVE_SHA256,
    file_sha256: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Download the archive, check its sha256, extract and check the two CSV files.

    Nothing is written to `out_dir` unless every checksum matches.
    """
    url = url or UCI_ARCHIVE_URL
    expected_files = OFFICIAL_FILE_SHA256 if file_sha256 is None else file_sha256
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="linkedge-download-") as tmp:
        archive = Path(tmp) / "archive.zip"
        actual = fetch(url, archive)
        if actual != archive_sha256:
            raise DownloadError(
                f"{url} has sha256 {actual}, expected {archive_sha256}: "
                "the download is corrupt or not the official archive; nothing was written"
            )
        try:
            with zipfile.ZipFile(archive) as bundle:
                members = {Path(info.filename).name: info for info in bundle.infolist()}
                staged: dict[str, Path] = {}
                for name, expected in expected_files.items():
                    if name not in members:
                        raise DownloadError(f"the archive from {url} has no {name}")
                    target = Path(tmp) / name
                    with bundle.open(members[name]) as source, open(target, "wb") as sink:
                        shutil.copyfileobj(source, sink)
                    got = sha256_file(target)
                    if got != expected:
                        raise DownloadError(
                            f"{name} in the archive has sha256 {got}, expected {expected}"
                        )
                    staged[name] = target
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{url} is not a zip archive: {exc}") from exc
        out_dir.mkdir(parents=True, exist_ok=True)
        return {name: Path(shutil.move(str(path), out_dir / name)) for name, path in staged.items()}

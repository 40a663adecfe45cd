"""The download path against a real HTTP server on 127.0.0.1 serving a crafted archive."""

import hashlib
import http.server
import threading
import zipfile

import pytest

from inference_image.download import DownloadError, download_official


@pytest.fixture
def served_archive(tmp_path):
    train, test = b"train-bytes\r\n", b"test-bytes\r\n"
    archive = tmp_path / "site" / "aps.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("aps_failure_training_set.csv", train)
        zf.writestr("aps_failure_test_set.csv", test)
        zf.writestr("aps_failure_description.txt", b"about")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(archive.parent), **k
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {
        "url": f"http://127.0.0.1:{server.server_port}/aps.zip",
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "files": {
            "aps_failure_training_set.csv": hashlib.sha256(train).hexdigest(),
            "aps_failure_test_set.csv": hashlib.sha256(test).hexdigest(),
        },
    }
    server.shutdown()


def test_download_verifies_and_extracts(served_archive, tmp_path):
    out = tmp_path / "data"
    paths = download_official(
        out, served_archive["url"], served_archive["sha256"], served_archive["files"]
    )
    assert paths["aps_failure_training_set.csv"].read_bytes() == b"train-bytes\r\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(served_archive["files"])


def test_archive_checksum_mismatch_writes_nothing(served_archive, tmp_path):
    out = tmp_path / "data"
    with pytest.raises(DownloadError, match="expected 0000"):
        download_official(out, served_archive["url"], "0" * 64, served_archive["files"])
    assert not out.exists()


def test_member_checksum_mismatch_writes_nothing(served_archive, tmp_path):
    out = tmp_path / "data"
    files = dict(served_archive["files"], **{"aps_failure_test_set.csv": "f" * 64})
    with pytest.raises(DownloadError, match=r"aps_failure_test_set\.csv in the archive"):
        download_official(out, served_archive["url"], served_archive["sha256"], files)
    assert not out.exists()


def test_unreachable_url_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="cannot download"):
        download_official(tmp_path, "http://127.0.0.1:9/none.zip", "0" * 64, {})

"""download_mnist against a local mirror set on 127.0.0.1: a dead mirror, a corrupt one, a good one."""

import functools
import gzip
import http.server
import os
import threading

import pytest

from projectable_data import MNIST_MD5, MNISTError, download_mnist, load_mnist
from projectable_data.mnist import default_mnist_root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirrors(mnist_root, tmp_path, monkeypatch):
    """Serves tmp_path/www: `missing/` does not exist (404), `corrupt/` and `good/` hold the files."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    www = tmp_path / "www"
    (www / "corrupt").mkdir(parents=True)
    (www / "good").mkdir()
    for name in MNIST_MD5:
        os.symlink(mnist_root / f"{name}.gz", www / "good" / f"{name}.gz")
        # a valid gzip stream whose content is wrong: only the checksum can tell
        (www / "corrupt" / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(64)))
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {"missing": f"{base}/missing/", "corrupt": f"{base}/corrupt/", "good": f"{base}/good/"}
    server.shutdown()
    server.server_close()


def test_falls_through_dead_and_corrupt_mirrors(mirrors, tmp_path):
    root = download_mnist(
        tmp_path / "mnist", mirrors=[mirrors["missing"], mirrors["corrupt"], mirrors["good"]], progress=False
    )
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{n}.gz" for n in MNIST_MD5)  # no .part left
    test = load_mnist("test", root)  # verifies the MD5s
    assert test.images.shape == (10000, 28, 28)


def test_all_mirrors_bad_names_file_urls_and_fix(mirrors, tmp_path):
    with pytest.raises(MNISTError) as err:
        download_mnist(tmp_path / "mnist", mirrors=[mirrors["missing"], mirrors["corrupt"]], progress=False)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and MNIST_MD5["train-images-idx3-ubyte"] in message
    assert mirrors["missing"] in message and mirrors["corrupt"] in message and "404" in message
    assert "Fix:" in message
    assert not any((tmp_path / "mnist").iterdir())  # nothing half-written stays behind


def test_existing_valid_files_are_kept(mirrors, mnist_root, tmp_path):
    root = tmp_path / "mnist"
    root.mkdir()
    for name in MNIST_MD5:
        os.symlink(mnist_root / f"{name}.gz", root / f"{name}.gz")
    assert download_mnist(root, mirrors=[mirrors["missing"]], progress=False) == root


def test_default_target_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_mnist_root() == tmp_path / "projectable" / "mnist"

"""examples/data.py: IDX parsing, the checked and cached download (against a local HTTP server
on 127.0.0.1 that serves files this test writes), Debian's Fashion-MNIST, and the choice of
dataset."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import pathlib
import socket
import threading

import numpy as np
import pytest

from examples import data

RNG = np.random.default_rng(0)
SPLITS = {"train": 64, "test": 16}


def _idx(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, written from the format's description."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_dataset(directory: pathlib.Path) -> tuple[data.Source, dict[str, np.ndarray]]:
    """Four gzipped IDX files of random 28x28 "digits"; the Source with their MD5 sums."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays, files = {}, {}
    for split, n in SPLITS.items():
        prefix = "train" if split == "train" else "t10k"
        arrays[f"{split}_images"] = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = RNG.integers(0, 10, (n,), dtype=np.uint8)
        for what, idx in (("images", "idx3"), ("labels", "idx1")):
            name = f"{prefix}-{what}-{idx}-ubyte.gz"
            blob = gzip.compress(_idx(arrays[f"{split}_{what}"]))
            (directory / name).write_bytes(blob)
            files[f"{split}_{what}"] = (name, hashlib.md5(blob).hexdigest())
    return data.Source("testset", files, ()), arrays


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def _server(directory: pathlib.Path):
    """An HTTP server on 127.0.0.1 serving ``directory``; yields its base URL and the list
    of paths requested."""
    handler = type("Handler", (_Handler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler.requests
    finally:
        server.shutdown()
        server.server_close()


def _dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _check(ds: data.Dataset, arrays: dict[str, np.ndarray]) -> None:
    for split in SPLITS:
        images = getattr(ds, f"{split}_images")
        assert images.shape == (SPLITS[split], 28, 28, 1)
        assert images.dtype == np.float32
        np.testing.assert_array_equal(images[..., 0] * 255, arrays[f"{split}_images"])
        np.testing.assert_array_equal(getattr(ds, f"{split}_labels"), arrays[f"{split}_labels"])


def test_download_checks_caches_and_reuses(tmp_path: pathlib.Path) -> None:
    source, arrays = _write_dataset(tmp_path / "served")
    cache = tmp_path / "cache"
    with _server(tmp_path / "served") as (url, requests):
        source = data.Source("testset", source.files, (url,))
        _check(data.load_mnist(cache_dir=cache, source=source, log=lambda _: None), arrays)
        assert len(requests) == 4
        assert data.cached(source, cache)
        # A second load reads the cache and asks the server nothing.
        _check(data.load_mnist(cache_dir=cache, source=source, log=lambda _: None), arrays)
        assert len(requests) == 4


def test_checksum_mismatch_falls_back_to_the_next_mirror(tmp_path: pathlib.Path) -> None:
    source, arrays = _write_dataset(tmp_path / "good")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, _ in source.files.values():  # same names, other bytes
        (bad / name).write_bytes(gzip.compress(b"not the file"))
    with _server(bad) as (bad_url, _), _server(tmp_path / "good") as (good_url, _):
        source = data.Source("testset", source.files, (bad_url, good_url))
        _check(data.load_mnist(cache_dir=tmp_path / "cache", source=source,
                               log=lambda _: None), arrays)
        only_bad = data.Source("testset", source.files, (bad_url,))
        with pytest.raises(data.DataError, match="not the published"):
            data.load_mnist(cache_dir=tmp_path / "cache2", source=only_bad)
    # Nothing half-written or wrong is left in the cache.
    assert not list((tmp_path / "cache2" / "testset").iterdir())


def test_dead_server_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    source, _ = _write_dataset(tmp_path / "files")
    source = data.Source("testset", source.files, (_dead_url(),))
    with pytest.raises(data.DataError, match=r"(?s)could not download .*Connection refused"):
        data.load_mnist(cache_dir=tmp_path / "cache", source=source, timeout=2)


def test_data_dir_files_are_checked(tmp_path: pathlib.Path) -> None:
    source, arrays = _write_dataset(tmp_path / "mine")
    _check(data.load_mnist(data_dir=tmp_path / "mine", source=source), arrays)
    name = source.files["test_labels"][0]
    (tmp_path / "mine" / name).write_bytes(b"\x1f\x8b broken")
    with pytest.raises(data.DataError, match="not the published"):
        data.load_mnist(data_dir=tmp_path / "mine", source=source)
    (tmp_path / "mine" / name).unlink()
    with pytest.raises(data.DataError, match="is missing"):
        data.load_mnist(data_dir=tmp_path / "mine", source=source)


def test_read_idx_rejects_corrupt_and_truncated_files(tmp_path: pathlib.Path) -> None:
    good = _idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    cases = {
        "truncated.gz": (gzip.compress(good[:-5]), "truncated"),
        "longer.gz": (gzip.compress(good + b"\0"), "longer than its header"),
        "magic.gz": (gzip.compress(b"\x01\x02" + good[2:]), "not an IDX file"),
        "header.gz": (gzip.compress(good[:6]), "truncated IDX header"),
        "corrupt.gz": (gzip.compress(good)[:-8] + b"\xff" * 8, "not a readable gzip"),
        "notgzip.gz": (good, "not a readable gzip"),
    }
    np.testing.assert_array_equal(
        data.read_idx(_write(tmp_path / "ok.gz", gzip.compress(good))),
        np.arange(24).reshape(2, 3, 4))
    for name, (blob, message) in cases.items():
        with pytest.raises(data.DataError, match=message):
            data.read_idx(_write(tmp_path / name, blob))


def _write(path: pathlib.Path, blob: bytes) -> pathlib.Path:
    path.write_bytes(blob)
    return path


def test_fashion_mnist_from_a_debian_style_directory(tmp_path: pathlib.Path) -> None:
    """Debian's package holds the four files (recompressed, so no published MD5 applies);
    they are read from there without any download, and sizes are checked."""
    source, _arrays = _write_dataset(tmp_path / "debian")
    fashion = data.Source("fashion_test", source.files, (_dead_url(),))
    with pytest.raises(data.DataError, match="60,000"):
        data.load_fashion_mnist(source=fashion, debian_dir=tmp_path / "debian")
    # Not installed: downloaded like MNIST (here from a dead server: a clear error).
    with pytest.raises(data.DataError, match="could not download"):
        data.load_fashion_mnist(source=fashion, debian_dir=tmp_path / "absent",
                                cache_dir=tmp_path / "cache", timeout=2)


@pytest.mark.skipif(not data.installed(data.DEBIAN_FASHION_MNIST),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_the_installed_fashion_mnist() -> None:
    ds = data.load_fashion_mnist()
    assert ds.train_images.shape == (60_000, 28, 28, 1)
    assert ds.test_labels.shape == (10_000,)
    assert set(np.unique(ds.train_labels)) == set(range(10))


def test_auto_says_what_it_chose(tmp_path: pathlib.Path) -> None:
    source, arrays = _write_dataset(tmp_path / "served")
    dead = data.Source("testset", source.files, (_dead_url(),))
    fashion = data.Source("fashion", source.files, (_dead_url(),))
    # No MNIST anywhere, no Fashion-MNIST installed: the digits, with the reason.
    ds, why = data.load("auto", cache_dir=tmp_path / "cache", mnist=dead, fashion=fashion,
                        debian_dir=tmp_path / "absent", probe_timeout=2)
    assert ds.name == "digits"
    assert "MNIST could not be downloaded" in why
    assert "not installed" in why
    # MNIST downloadable: MNIST.
    with _server(tmp_path / "served") as (url, _):
        live = data.Source("testset", source.files, (url,))
        ds, why = data.load("auto", cache_dir=tmp_path / "cache", mnist=live, fashion=fashion,
                            debian_dir=tmp_path / "absent", log=lambda _: None)
    assert ds.name == "mnist"
    assert why == "MNIST downloaded"
    # Then cached: no server needed.
    ds, why = data.load("auto", cache_dir=tmp_path / "cache", mnist=dead, fashion=fashion,
                        debian_dir=tmp_path / "absent")
    assert ds.name == "mnist"
    assert why == "MNIST is in the cache"
    _check(ds, arrays)


def test_digits_are_the_real_8x8_digits() -> None:
    ds = data.load_digits()
    assert ds.train_images.shape[1:] == (8, 8, 1)
    assert len(ds.train_labels) + len(ds.test_labels) == 1797
    assert ds.train_images.min() >= 0.0
    assert ds.train_images.max() <= 1.0
    np.testing.assert_array_equal(data.load_digits().test_labels, ds.test_labels)

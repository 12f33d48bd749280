"""Handwritten digits and clothes for the examples: MNIST, Fashion-MNIST and scikit-learn's digits.

The library never imports this module; the examples and tests do.

* MNIST is downloaded from its mirrors into a cache directory, each file checked against its
  published MD5 before it is used, or read from ``data_dir`` if you already have the files.
* Fashion-MNIST, in the same IDX format, is read from Debian's ``dataset-fashion-mnist``
  package (``/usr/share/datasets/fashion-mnist``) when it is installed, else downloaded like
  MNIST.
* scikit-learn's 1,797 real 8x8 digits need no network: the offline default.

Images come back as float32 arrays of shape (N, height, width, 1) in [0, 1], labels as int32.

    >>> from examples import data
    >>> ds = data.load_digits()
    >>> ds.train_images.shape, ds.test_images.shape
    ((1438, 8, 8, 1), (359, 8, 8, 1))
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

DEBIAN_FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
KINDS = ("train_images", "train_labels", "test_images", "test_labels")


class DataError(RuntimeError):
    """A dataset could not be found, downloaded or read; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification dataset held in memory.

    Attributes:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"digits"``.
      train_images, test_images: float32, (N, height, width, 1), in [0, 1].
      train_labels, test_labels: int32, (N,), in [0, 10).
      source: where the data came from (a directory or "scikit-learn").
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return 10


@dataclasses.dataclass(frozen=True)
class Source:
    """Where an IDX dataset can be downloaded: its files with their published MD5 sums, and
    the base URLs of its mirrors, tried in order."""

    name: str
    files: Mapping[str, tuple[str, str]]  # kind -> (file name, MD5)
    mirrors: Sequence[str]


MNIST = Source(
    "mnist",
    {
        "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
)

FASHION_MNIST = Source(
    "fashion_mnist",
    {
        "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
)

# IDX type codes (the third byte of the magic number) and the dtypes they stand for.
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def default_cache_dir() -> pathlib.Path:
    """``$JADAM_DATA``, or ``~/.cache/jadam/datasets``."""
    env = os.environ.get("JADAM_DATA")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "jadam" / "datasets"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads an IDX file (gzipped if its name ends in ``.gz``), checking its header and size.

    Raises:
      DataError: if the file is not gzip when it should be, is truncated, has trailing bytes,
        or does not start with an IDX magic number.
    """
    path = pathlib.Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(
            f"{path}: not a readable gzip file ({e}); delete it to download again"
        ) from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{path}: {problem}: {len(raw)} bytes for shape {shape}, expected {expected}; "
            "delete it to download again"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def md5(path: pathlib.Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    source: Source,
    *,
    cache_dir: pathlib.Path | None = None,
    data_dir: pathlib.Path | None = None,
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
) -> dict[str, pathlib.Path]:
    """The dataset's files, checked against their MD5 sums: from ``data_dir`` if given, else
    from the cache, else downloaded (each mirror in turn) into the cache, atomically.

    Raises:
      DataError: a file in ``data_dir`` is missing or has the wrong checksum, or no mirror
        gave a file with the right checksum (the message lists what each mirror did).
    """
    paths = {}
    if data_dir is not None:
        for kind, (name, want) in source.files.items():
            path = pathlib.Path(data_dir) / name
            if not path.exists():
                raise DataError(f"{path} is missing ({source.name} needs {name})")
            if md5(path) != want:
                raise DataError(
                    f"{path}: MD5 {md5(path)} is not the published {want}; the file is "
                    "damaged or is another dataset's"
                )
            paths[kind] = path
        return paths
    cache = pathlib.Path(cache_dir or default_cache_dir()) / source.name
    cache.mkdir(parents=True, exist_ok=True)
    for kind, (name, want) in source.files.items():
        path = cache / name
        if not (path.exists() and md5(path) == want):
            _download(source, name, want, path, timeout=timeout, log=log)
        paths[kind] = path
    return paths


def cached(source: Source, cache_dir: pathlib.Path | None = None) -> bool:
    """Whether all of the dataset's files are in the cache with the right checksums."""
    cache = pathlib.Path(cache_dir or default_cache_dir()) / source.name
    return all(
        (cache / name).exists() and md5(cache / name) == want
        for name, want in source.files.values()
    )


def _download(
    source: Source, name: str, want: str, path: pathlib.Path, *, timeout: float,
    log: Callable[[str], None],
) -> None:
    failures = []
    for mirror in source.mirrors:
        url = mirror + name
        try:
            with (
                urllib.request.urlopen(url, timeout=timeout) as response,
                tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp,
            ):
                shutil.copyfileobj(response, tmp)
            got = md5(pathlib.Path(tmp.name))
            if got != want:
                os.unlink(tmp.name)
                failures.append(f"{url}: MD5 {got}, not the published {want}")
                continue
            os.replace(tmp.name, path)  # atomic: a reader never sees half a file
            log(f"downloaded {url}")
            return
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            failures.append(f"{url}: {getattr(e, 'reason', e)}")
    raise DataError(
        f"could not download {name} of {source.name}:\n  " + "\n  ".join(failures)
        + "\nIf you have the files, pass their directory as data_dir (--data-dir)."
    )


def _from_idx(name: str, paths: Mapping[str, pathlib.Path], source: str) -> Dataset:
    arrays = {kind: read_idx(paths[kind]) for kind in KINDS}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise DataError(
                f"{name}: {split} images of shape {images.shape} do not match labels of "
                f"shape {labels.shape}"
            )
    return Dataset(
        name,
        train_images=(arrays["train_images"][..., None] / np.float32(255)).astype(np.float32),
        train_labels=arrays["train_labels"].astype(np.int32),
        test_images=(arrays["test_images"][..., None] / np.float32(255)).astype(np.float32),
        test_labels=arrays["test_labels"].astype(np.int32),
        source=source,
    )


def load_mnist(
    *, cache_dir: pathlib.Path | None = None, data_dir: pathlib.Path | None = None,
    timeout: float = 30.0, source: Source = MNIST, log: Callable[[str], None] = print,
) -> Dataset:
    """MNIST: 60,000 training and 10,000 test digits of 28x28 (LeCun, Cortes & Burges)."""
    paths = fetch(source, cache_dir=cache_dir, data_dir=data_dir, timeout=timeout, log=log)
    return _from_idx("mnist", paths, str(next(iter(paths.values())).parent))


def load_fashion_mnist(
    *, cache_dir: pathlib.Path | None = None, data_dir: pathlib.Path | None = None,
    timeout: float = 30.0, source: Source = FASHION_MNIST,
    debian_dir: pathlib.Path = DEBIAN_FASHION_MNIST, log: Callable[[str], None] = print,
) -> Dataset:
    """Fashion-MNIST: 70,000 28x28 images of clothes in 10 classes (Xiao, Rasul & Vollgraf).

    Read from Debian's package when installed: its files are recompressed, so their MD5 sums
    differ from the published ones, and the IDX checks (header, sizes, 60,000 + 10,000 images)
    stand in for them (the package manager checks the package itself).
    """
    if data_dir is None and installed(debian_dir, source):
        paths = {kind: debian_dir / name for kind, (name, _) in source.files.items()}
        ds = _from_idx("fashion_mnist", paths, str(debian_dir))
        if len(ds.train_labels) != 60_000 or len(ds.test_labels) != 10_000:
            raise DataError(f"{debian_dir}: expected 60,000 + 10,000 images")
        return ds
    paths = fetch(source, cache_dir=cache_dir, data_dir=data_dir, timeout=timeout, log=log)
    return _from_idx("fashion_mnist", paths, str(next(iter(paths.values())).parent))


def installed(directory: pathlib.Path, source: Source = FASHION_MNIST) -> bool:
    return all((directory / name).exists() for name, _ in source.files.values())


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits (UCI), split at random (fixed seed), with
    pixel values 0..16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = (bunch.images[..., None] / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", images[train], labels[train], images[test], labels[test],
                   "scikit-learn")


def load(
    name: str = "auto",
    *,
    data_dir: pathlib.Path | None = None,
    cache_dir: pathlib.Path | None = None,
    probe_timeout: float = 3.0,
    mnist: Source = MNIST,
    fashion: Source = FASHION_MNIST,
    debian_dir: pathlib.Path = DEBIAN_FASHION_MNIST,
    log: Callable[[str], None] = print,
) -> tuple[Dataset, str]:
    """The dataset called ``name``, and why it was chosen.

    ``auto`` takes MNIST if it is in ``data_dir`` or the cache, or downloads within
    ``probe_timeout`` seconds per connection; else Fashion-MNIST if Debian's package is
    installed; else scikit-learn's digits.
    """
    if name == "mnist":
        ds = load_mnist(cache_dir=cache_dir, data_dir=data_dir, source=mnist, log=log)
        return ds, "asked for"
    if name == "fashion_mnist":
        ds = load_fashion_mnist(cache_dir=cache_dir, data_dir=data_dir, source=fashion,
                                debian_dir=debian_dir, log=log)
        return ds, "asked for"
    if name == "digits":
        return load_digits(), "asked for"
    if name != "auto":
        raise ValueError(f"unknown dataset {name!r}: auto, mnist, fashion_mnist or digits")
    if data_dir is not None:
        return load_mnist(data_dir=data_dir, source=mnist, log=log), f"MNIST files in {data_dir}"
    if cached(mnist, cache_dir):
        return load_mnist(cache_dir=cache_dir, source=mnist, log=log), "MNIST is in the cache"
    try:
        ds = load_mnist(cache_dir=cache_dir, timeout=probe_timeout, source=mnist, log=log)
        return ds, "MNIST downloaded"
    except DataError as e:
        why = f"MNIST could not be downloaded ({str(e).splitlines()[1].strip()})"
    if installed(debian_dir, fashion):
        ds = load_fashion_mnist(source=fashion, debian_dir=debian_dir, log=log)
        return ds, f"{why}; Fashion-MNIST is installed in {debian_dir}"
    return load_digits(), f"{why}; Fashion-MNIST is not installed; scikit-learn's digits are"

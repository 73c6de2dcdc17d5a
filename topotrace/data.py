"""Data sets for the default run: scikit-learn's bundled digits, and MNIST / Fashion-MNIST from local idx files.

Nothing is downloaded: digits ship inside scikit-learn, and the idx reader takes files you already have
(``train-images-idx3-ubyte[.gz]`` etc.). All arrays are numpy; images are float32 in [0, 1].
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOURCES = ("digits", "mnist", "fashion_mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    """A train/test split.

    Attributes:
        x_train: array of shape (n_train, n_features), float32.
        y_train: array of shape (n_train,), int64.
        x_test: array of shape (n_test, n_features), float32.
        y_test: array of shape (n_test,), int64.
        class_names: one name per class.
        description: one line for the report's provenance.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    description: str


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (plain or gzip-compressed) into an array of the shape its header gives."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an idx file (its first two bytes must be zero).")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown idx data type 0x{code:02x}; allowed: {[hex(c) for c in _IDX_DTYPES]}.")
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes) but the file holds "
                         f"{len(raw) - header} bytes of data.")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"No {stem}[.gz] in {folder}. MNIST-style folders hold train-images-idx3-ubyte, "
                            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
                            "(each plain or .gz).")


def load_idx_folder(folder: str | Path, fashion: bool = False) -> Dataset:
    """Load MNIST or Fashion-MNIST from a folder of the four standard idx files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"The data folder {folder} does not exist.")
    parts = []
    for split in ("train", "t10k"):
        x = read_idx(_find(folder, f"{split}-images-idx3-ubyte"))
        y = read_idx(_find(folder, f"{split}-labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match.")
        parts += [x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int64)]
    names = FASHION_CLASSES if fashion else tuple(str(c) for c in range(10))
    kind = "Fashion-MNIST" if fashion else "MNIST"
    return Dataset(*parts, class_names=names,
                   description=f"{kind} from {folder} ({len(parts[0])} train, {len(parts[2])} test images)")


def load_digits_split(test_fraction: float, seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), split stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"The 'test_fraction' parameter must be in (0, 1). Got {test_fraction!r} instead.")
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    return Dataset(x_tr, y_tr, x_te, y_te, tuple(str(c) for c in range(10)),
                   f"scikit-learn digits, 8x8 images ({len(x_tr)} train, {len(x_te)} test)")


def load_dataset(source: str, path: str = "", test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Load a data set by name: ``"digits"``, ``"mnist"`` or ``"fashion_mnist"`` (the last two from ``path``)."""
    if source == "digits":
        return load_digits_split(test_fraction, seed)
    if source in ("mnist", "fashion_mnist"):
        if not path:
            raise ValueError(f"data.source = {source!r} needs data.path, a folder with the idx files.")
        return load_idx_folder(path, fashion=source == "fashion_mnist")
    raise ValueError(f"The 'data.source' setting must be one of {SOURCES}. Got {source!r} instead.")


def stratified_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Pick up to ``per_class`` samples of every class (seeded); returns sorted indices of shape (n,)."""
    if per_class < 1:
        raise ValueError(f"The 'per_class' parameter must be >= 1. Got {per_class!r} instead.")
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(picks)).astype(np.int64)


def train_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """The training images a run trains on (the ``data.train_per_class`` setting): all, or a seeded few per class.

    Args:
        labels: array of shape (n_train,), the training split's classes.
        per_class: 0 for every image; otherwise this many images of each class, drawn at random with ``seed``.
        seed: the seed of the draw (the same seed gives the same images).

    Returns:
        Sorted indices into the training split, array of shape (n,), int64.

    Raises:
        ValueError: ``per_class`` is negative or larger than the smallest class of the training split.
    """
    if per_class < 0:
        raise ValueError(f"The 'data.train_per_class' setting must be an int >= 0 (0 = all training images). "
                         f"Got {per_class!r} instead.")
    if per_class == 0:
        return np.arange(len(labels), dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    if per_class > counts.min():
        raise ValueError(f"The 'data.train_per_class' setting must be at most {counts.min()} for this data (the "
                         f"training split holds {counts.min()} images of class {classes[counts.argmin()]}, its "
                         f"smallest), or 0 for all training images. Got {per_class!r} instead.")
    return stratified_indices(labels, per_class, seed)

"""Data sets for ``topotrace train``: digits, MNIST-1D, and MNIST / Fashion-MNIST from local idx files.

Nothing is downloaded: digits ship inside scikit-learn, MNIST-1D is generated from the templates inside the
``mnist1d`` package (its download path is never used), and the idx reader takes files you already have
(``train-images-idx3-ubyte[.gz]`` etc.). All arrays are numpy, float32 samples given flat (n, n_features); a
data set's ``input_shape`` says how one sample is laid out for models that need it (convolutions, tokens).
Images are in [0, 1]; MNIST-1D signals are centred and scaled to standard deviation 1 (as the package makes them).
"""

from __future__ import annotations

import gzip
import importlib.util
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SOURCES = ("digits", "mnist", "fashion_mnist", "mnist1d")
IDX_SOURCES = ("mnist", "fashion_mnist")  # read from data.path
# One sample's layout (channels first), known from the source alone: the config is checked against it.
INPUT_SHAPES: dict[str, tuple[int, ...]] = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
                                            "mnist1d": (1, 40)}
MNIST1D_MISSING = ("data.source = 'mnist1d' needs the mnist1d package: pip install 'topotrace[mnist1d]' (or make "
                   "setup).")
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
        input_shape: one sample's layout, channels first, e.g. (1, 8, 8) for 8x8 images or (1, 40) for signals of
            length 40; its product is n_features. Default: (n_features,).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    description: str
    input_shape: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.input_shape:
            self.input_shape = (int(self.x_train.shape[1]),)
        if int(np.prod(self.input_shape)) != self.x_train.shape[1]:
            raise ValueError(f"input_shape {self.input_shape} does not hold {self.x_train.shape[1]} features.")


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
    side = int(round(np.sqrt(parts[0].shape[1])))
    shape = (1, side, side) if side * side == parts[0].shape[1] else ()
    return Dataset(*parts, class_names=names, input_shape=shape,
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
    n, n_classes = len(y), len(np.unique(y))
    n_test = int(np.ceil(test_fraction * n))  # as scikit-learn rounds a fractional test size
    if min(n_test, n - n_test) < n_classes:
        low, high = n_classes / n, 1 - (n_classes + 1) / n
        raise ValueError(f"The 'data.test_fraction' setting ({test_fraction!r}) leaves {n - n_test} training and "
                         f"{n_test} test images of the {n} digits; each split needs at least one image per class "
                         f"({n_classes}). Use a fraction between {low:.4f} and {high:.4f}, e.g. 0.25.")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    return Dataset(x_tr, y_tr, x_te, y_te, tuple(str(c) for c in range(10)),
                   f"scikit-learn digits, 8x8 images ({len(x_tr)} train, {len(x_te)} test)", INPUT_SHAPES["digits"])


class MissingPackage(ModuleNotFoundError, ValueError):
    """An optional package a setting needs is not installed (a ValueError too: the CLI says it in one line)."""


def check_mnist1d() -> None:
    """The mnist1d package is installed (found without importing it).

    Raises:
        MissingPackage: it is not, with the one line that says how to install it.
    """
    if importlib.util.find_spec("mnist1d") is None:
        raise MissingPackage(MNIST1D_MISSING, name="mnist1d")


_MNIST1D_CACHE: dict[str, Dataset] = {}


def load_mnist1d() -> Dataset:
    """MNIST-1D (Greydanus 2020), generated offline from the templates in the ``mnist1d`` package.

    The package's published settings (``mnist1d.data.get_dataset_args()``: 5000 signals from its 10 digit
    templates, padded, scaled, translated, sheared and noised with seed 42, length 40, 80 % train) give its own
    split of 4000 train and 1000 test signals, the same arrays on every call: ``data.test_fraction`` does not
    apply, and the run's seed does not change the data (only the model, probes and batch order). Generated with
    ``mnist1d.data.make_dataset``; the package's ``get_dataset`` (which downloads, or writes a pickle) is never
    called. Python's and NumPy's global random states, which the package reseeds, are restored afterwards.

    Returns:
        x_train (4000, 40) and x_test (1000, 40) float32, labels int64, input_shape (1, 40).

    Raises:
        MissingPackage: the mnist1d package is not installed (one line: how to install it).
    """
    if "mnist1d" in _MNIST1D_CACHE:  # generating takes about a second; the arrays are the same every time
        cached = _MNIST1D_CACHE["mnist1d"]
        return Dataset(*(a.copy() for a in (cached.x_train, cached.y_train, cached.x_test, cached.y_test)),
                       cached.class_names, cached.description, cached.input_shape)
    check_mnist1d()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package imports matplotlib.pyplot
        from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # the published settings (num_samples 5000, seed 42, final_seq_length 40, ...)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    parts = [np.ascontiguousarray(d["x"], np.float32), np.asarray(d["y"], np.int64),
             np.ascontiguousarray(d["x_test"], np.float32), np.asarray(d["y_test"], np.int64)]
    out = Dataset(*parts, class_names=tuple(str(c) for c in range(10)), input_shape=INPUT_SHAPES["mnist1d"],
                  description=f"MNIST-1D (Greydanus 2020) generated by the mnist1d package from its templates, seed "
                              f"{args.seed}, length {args.final_seq_length} ({len(parts[0])} train, {len(parts[2])} "
                              "test signals)")
    _MNIST1D_CACHE["mnist1d"] = out
    return load_mnist1d()


def load_dataset(source: str, path: str = "", test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Load a data set by name: ``"digits"``, ``"mnist1d"``, ``"mnist"`` or ``"fashion_mnist"``.

    The last two read idx files from ``path``; ``test_fraction`` and ``seed`` split digits only, the others come
    with their own split.
    """
    if source == "digits":
        return load_digits_split(test_fraction, seed)
    if source == "mnist1d":
        return load_mnist1d()
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

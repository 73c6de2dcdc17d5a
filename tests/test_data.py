"""Data loading: the idx reader on files the tests write, digits split, stratified probe indices."""

import gzip
import struct

import numpy as np
import pytest

from topotrace.data import load_dataset, load_idx_folder, read_idx, stratified_indices


def write_idx(path, array, code=0x08):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(payload)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_roundtrip(tmp_path, suffix):
    """Plain and gzip idx files read back with their shape and values."""
    images = np.random.default_rng(0).integers(0, 256, (7, 5, 4), dtype=np.uint8)
    write_idx(tmp_path / f"x{suffix}", images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"x{suffix}"), images)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    write_idx(tmp_path / f"f{suffix}", floats.astype(">f4"), code=0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / f"f{suffix}"), floats)


def test_read_idx_rejects_bad_files(tmp_path):
    """Truncated files and wrong magic numbers are refused with the reason."""
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 3), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"shape \(4, 3\)"):
        read_idx(tmp_path / "short")


def test_mnist_folder(tmp_path):
    """An MNIST-style folder (mixed plain and gzip) loads as scaled float32 images and int64 labels."""
    rng = np.random.default_rng(1)
    x_tr, y_tr = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), rng.integers(0, 10, 12).astype(np.uint8)
    x_te, y_te = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), rng.integers(0, 10, 5).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x_tr)
    write_idx(tmp_path / "train-labels-idx1-ubyte", y_tr)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", x_te)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y_te)
    d = load_idx_folder(tmp_path)
    assert d.x_train.shape == (12, 784) and d.x_train.dtype == np.float32 and d.input_shape == (1, 28, 28)
    np.testing.assert_allclose(d.x_test, x_te.reshape(5, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y_train, y_tr)
    assert d.y_test.dtype == np.int64
    f = load_dataset("fashion_mnist", str(tmp_path))
    assert f.class_names[9] == "Ankle boot" and "Fashion-MNIST" in f.description
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_idx_folder(tmp_path)


def test_load_dataset_errors():
    """Unknown sources and a missing path are named."""
    with pytest.raises(ValueError, match="'digits', 'mnist', 'fashion_mnist'"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="data.path"):
        load_dataset("mnist")


def test_digits_split_and_stratified_probe():
    """Digits split is stratified and seeded; probe indices pick per_class samples of each class."""
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert len(a.x_train) + len(a.x_test) == 1797 and a.x_train.max() <= 1.0
    idx = stratified_indices(a.y_test, 10, seed=0)
    assert np.array_equal(idx, np.sort(idx)) and len(np.unique(idx)) == len(idx)
    np.testing.assert_array_equal(np.bincount(a.y_test[idx]), [10] * 10)
    np.testing.assert_array_equal(idx, stratified_indices(a.y_test, 10, seed=0))


# --- MNIST-1D: generated offline by the mnist1d package ----------------------------------------------------

@pytest.mark.slow
def test_mnist1d_is_the_packages_published_data_set_seeded_and_offline(monkeypatch):
    """4000 train and 1000 test signals of length 40, 10 classes, the same arrays on every generation, equal to the
    package's own make_dataset with its published settings; never downloaded; the global RNGs left as they were."""
    import random

    import mnist1d.data
    import requests

    from topotrace import data as data_mod

    def no_download(*args, **kwargs):
        raise AssertionError("the download path must never be used")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_download)
    monkeypatch.setattr(requests, "get", no_download)
    np.random.seed(7)
    random.seed(7)
    np_before, py_before = np.random.get_state(), random.getstate()
    monkeypatch.setattr(data_mod, "_MNIST1D_CACHE", {})
    a = load_dataset("mnist1d", seed=5)
    monkeypatch.setattr(data_mod, "_MNIST1D_CACHE", {})  # generate again, not from the cache
    b = load_dataset("mnist1d", seed=6, test_fraction=0.5)  # its own split: seed and test_fraction do not apply
    after = np.random.get_state()
    assert after[0] == np_before[0] and np.array_equal(after[1], np_before[1]) and after[2:] == np_before[2:]
    assert random.getstate() == py_before

    assert a.x_train.shape == (4000, 40) and a.x_test.shape == (1000, 40) and a.input_shape == (1, 40)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64 and a.class_names == tuple("0123456789")
    assert sorted(np.unique(a.y_train)) == list(range(10)) and sorted(np.unique(a.y_test)) == list(range(10))
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    ref = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())  # the package's published data set
    np.testing.assert_array_equal(a.x_train, ref["x"].astype(np.float32))
    np.testing.assert_array_equal(a.y_test, ref["y_test"])
    everything = np.concatenate([ref["x"], ref["x_test"]])  # the package centres and scales the whole set
    assert abs(everything.mean()) < 1e-9 and abs(everything.std() - 1) < 1e-9
    c = load_dataset("mnist1d")  # from the cache: a copy, not the cached arrays
    c.x_train[0] = 99.0
    assert load_dataset("mnist1d").x_train[0, 0] != 99.0
    assert "MNIST-1D (Greydanus 2020)" in a.description and "4000 train, 1000 test" in a.description


def test_mnist1d_missing_package_is_one_line(monkeypatch, tmp_path, capsys):
    """Without the package: the config loads, the run is refused in one line naming the extra, nothing written."""
    import importlib.util

    from topotrace import data as data_mod
    from topotrace.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mnist1d" else real(name, *a))
    monkeypatch.setattr(data_mod, "_MNIST1D_CACHE", {})
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'topotrace\[mnist1d\]'"):
        load_dataset("mnist1d")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[data]\nsource = "mnist1d"\n')
    assert main(["train", "--config", "c.toml"]) == 2
    err = capsys.readouterr().err
    assert err == ("topotrace: error: data.source = 'mnist1d' needs the mnist1d package: pip install "
                   "'topotrace[mnist1d]' (or make setup).\n")
    assert list(tmp_path.iterdir()) == [tmp_path / "c.toml"]


def test_input_shapes():
    """Every data set says how one sample is laid out; the product is its number of features."""
    d = load_dataset("digits")
    assert d.input_shape == (1, 8, 8) and d.x_train.shape[1] == 64
    from topotrace.data import INPUT_SHAPES, SOURCES, Dataset

    assert set(INPUT_SHAPES) == set(SOURCES)
    x = np.zeros((3, 6), np.float32)
    assert Dataset(x, np.zeros(3), x, np.zeros(3), ("a", "b"), "").input_shape == (6,)
    with pytest.raises(ValueError, match=r"input_shape \(1, 4\) does not hold 6 features"):
        Dataset(x, np.zeros(3), x, np.zeros(3), ("a", "b"), "", (1, 4))

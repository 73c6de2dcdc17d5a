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
    assert d.x_train.shape == (12, 784) and d.x_train.dtype == np.float32
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

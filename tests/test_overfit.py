"""The shipped overfitting run (configs/digits_overfit.toml) overfits, and the data.train_per_class setting."""

from pathlib import Path

import numpy as np
import pytest

from topotrace.config import load_config
from topotrace.data import load_dataset, stratified_indices, train_subset
from topotrace.instrument.store import Store
from topotrace.train import train_run

OVERFIT = Path(__file__).parent.parent / "configs" / "digits_overfit.toml"


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    """The shipped config, trained as shipped (only the runs folder moves); one run for the whole module."""
    cfg = load_config(OVERFIT, {"run": {"out_dir": str(tmp_path_factory.mktemp("runs"))}})
    summary = train_run(cfg)
    assert summary.error is None
    with Store(summary.store_path) as st:
        run = {
            "steps": st.steps,
            "total_steps": st.meta["total_steps"],
            "heldout": st.loss("heldout").mean(axis=1),  # (n_snapshots,) mean per-sample cross-entropy
            "train": st.loss("train").mean(axis=1),
            "train_index": st.probes["train"].index,
            "heldout_index": st.probes["heldout"].index,
            "data": st.meta["data"],
        }
    return cfg, run


def test_shipped_config_has_no_regularisation():
    """The overfitting run trains a wide MLP on a small subset without dropout or weight decay."""
    cfg = load_config(OVERFIT)
    assert cfg["model"]["dropout"] == 0.0 and cfg["train"]["weight_decay"] == 0.0
    assert cfg["data"]["source"] == "digits" and 0 < cfg["data"]["train_per_class"] <= 10
    assert min(cfg["model"]["hidden"]) >= 128


def test_heldout_loss_bottoms_out_early_while_training_loss_falls(overfit_run):
    """The held-out loss is lowest before the last 25 % of steps; after it, the training loss still falls and the
    held-out loss climbs."""
    _, run = overfit_run
    steps, held, train = run["steps"], run["heldout"], run["train"]
    assert steps[-1] == run["total_steps"]
    best = int(np.argmin(held))
    assert steps[best] < 0.75 * run["total_steps"]
    assert train[-1] < train[best]
    assert held[-1] > 1.05 * held[best]


def test_run_trains_on_the_subset(overfit_run):
    """The train probe set holds trained images only; the held-out probe set is drawn as without a subset."""
    cfg, run = overfit_run
    d, seed = cfg["data"], cfg["run"]["seed"]
    data = load_dataset(d["source"], d["path"], d["test_fraction"], seed)
    trained = train_subset(data.y_train, d["train_per_class"], seed + 2)
    assert set(run["train_index"]) <= set(trained)
    np.testing.assert_array_equal(run["heldout_index"], stratified_indices(data.y_test, d["heldout_per_class"], seed))
    steps_per_epoch = -(-len(trained) // cfg["train"]["batch_size"])
    assert run["total_steps"] == steps_per_epoch * cfg["train"]["epochs"]
    assert f"trained on {d['train_per_class']} per class" in run["data"]


def test_train_subset_per_class_and_seeded():
    """N images of every class, sorted and distinct; the same seed draws the same images; 0 means all."""
    y = load_dataset("digits", seed=0).y_train
    idx = train_subset(y, 7, seed=3)
    assert np.array_equal(idx, np.sort(idx)) and len(np.unique(idx)) == len(idx) == 70
    np.testing.assert_array_equal(np.bincount(y[idx]), [7] * 10)
    np.testing.assert_array_equal(idx, train_subset(y, 7, seed=3))
    assert not np.array_equal(idx, train_subset(y, 7, seed=4))
    np.testing.assert_array_equal(train_subset(y, 0, seed=3), np.arange(len(y)))
    smallest = np.bincount(y).min()
    assert len(train_subset(y, smallest, seed=0)) == 10 * smallest


def test_train_probe_comes_from_trained_images(tmp_path):
    """With fewer probe images than trained ones, the train probe set is still drawn from the trained images."""
    cfg = load_config(None, {"run": {"out_dir": str(tmp_path)}, "data": {"train_per_class": 8,
                             "train_probe_per_class": 3, "heldout_per_class": 2},
                             "model": {"hidden": [8]}, "train": {"epochs": 1}, "record": {"layers": "hidden1"}})
    summary = train_run(cfg)
    y = load_dataset("digits", seed=0).y_train
    with Store(summary.store_path) as st:
        index = st.probes["train"].index
        assert st.meta["total_steps"] == 3  # 80 images in batches of 32
    assert len(index) == 30 and set(index) <= set(train_subset(y, 8, seed=2))
    np.testing.assert_array_equal(np.bincount(y[index]), [3] * 10)


@pytest.mark.parametrize(
    "value, error, message",
    [
        (-1, ValueError, r"'data.train_per_class' setting must be an int >= 0 \(0 = all training images.*Got -1"),
        ("5", TypeError, r"'data.train_per_class' must be of type int. Got '5'"),
        (2.5, TypeError, r"'data.train_per_class' must be of type int. Got 2.5"),
        (True, TypeError, r"'data.train_per_class' must be of type int. Got True"),
    ],
)
def test_bad_train_per_class_refused(value, error, message):
    """Negative numbers and non-integers fail when the config is read, naming the setting."""
    with pytest.raises(error, match=message):
        load_config(None, {"data": {"train_per_class": value}})


def test_train_per_class_larger_than_the_data_refused(tmp_path):
    """More images per class than the training split holds fails before anything is written, naming the limit."""
    cfg = load_config(None, {"run": {"out_dir": str(tmp_path / "runs")}, "data": {"train_per_class": 500}})
    with pytest.raises(ValueError, match=r"'data.train_per_class' setting must be at most 131 .*or 0 for all "
                                         r"training images. Got 500 instead"):
        train_run(cfg)
    assert not (tmp_path / "runs").exists()

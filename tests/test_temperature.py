"""Temperature scaling: the fit against planted and brute-force references, and temp_prob in the store."""

import numpy as np
import pytest
import torch
from torch import nn

from topotrace.instrument import confidence
from topotrace.instrument.confidence import fit_temperature, temperature_softmax
from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every
from topotrace.instrument.store import Store
from topotrace.instrument.store.format import TEMPERATURE_MEASURE

CLASSES = ["a", "b", "c", "d"]


def _nll(logits, labels, t):
    """Mean cross-entropy of softmax(logits / t), written out with numpy."""
    z = logits.astype(np.float64) / t
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]))


def _planted(n, c, scale, seed):
    """True logits z and labels drawn from softmax(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, scale, (n, c))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = (rng.random((n, 1)) > p.cumsum(1)).sum(1)  # inverse-CDF sampling
    return z, np.minimum(labels, c - 1)


def test_planted_overconfidence_gives_its_factor():
    """Logits three times the true ones give T within 5 % of 3 (n = 20000)."""
    z, labels = _planted(20000, 5, 1.5, seed=0)
    t = fit_temperature(3 * z, labels)
    assert abs(t - 3) < 0.05 * 3


def test_fit_equals_brute_force_grid_minimum():
    """The fitted T is the minimum of the NLL on a fine log grid over the bounds, within one grid step."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, (500, 6)).astype(np.float32)
    labels = np.where(rng.random(500) < 0.6, logits.argmax(1), rng.integers(0, 6, 500))
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 2001))
    best = grid[np.argmin([_nll(logits, labels, t) for t in grid])]
    t = fit_temperature(logits, labels)
    step = np.log(grid[1] / grid[0])
    assert abs(np.log(t) - np.log(best)) <= step
    assert _nll(logits, labels, t) <= _nll(logits, labels, best) + 1e-12


def test_fit_leaves_out_rows_with_non_finite_logits():
    """Rows holding NaN or inf do not change T; no finite row at all gives NaN."""
    z, labels = _planted(300, 4, 2.0, seed=2)
    bad = np.vstack([z, [[np.nan, 0, 0, 0], [np.inf, 0, 0, 0]]])
    assert fit_temperature(bad, np.r_[labels, 0, 1]) == fit_temperature(z, labels)
    assert np.isnan(fit_temperature(bad[-2:], np.array([0, 1])))


def test_temperature_softmax_is_softmax_of_scaled_logits():
    """temperature_softmax(z, T) equals the softmax of z / T; T = 1 is the plain softmax."""
    z = np.random.default_rng(3).normal(0, 3, (20, 5))
    np.testing.assert_allclose(temperature_softmax(z, 2.5), confidence.softmax(z / 2.5), rtol=1e-15)
    np.testing.assert_allclose(temperature_softmax(z, 1.0), confidence.softmax(z), rtol=1e-15)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4))


def _data(n, seed):
    """Inputs and labels that the untrained model predicts for 70 % of them (so T lies inside its bounds)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    with torch.no_grad():
        y = _model()(x).argmax(1)
    noise = torch.rand(n, generator=g) < 0.3
    return x, torch.where(noise, torch.randint(0, 4, (n,), generator=g), y)


def _record(path, probes, steps=(0, 1)):
    model = _model()
    with Recorder(model, path, layers="0", probes=probes, class_names=CLASSES, schedule=every(1)) as rec:
        for s in steps:
            if s:
                with torch.no_grad():  # a different model at each snapshot, so T changes
                    model[2].weight.mul_(4.0)
            rec.step(s)


def test_temperature_does_not_depend_on_heldout_logits(tmp_path):
    """Changing the held-out probe set changes neither T nor the train set's temp_prob."""
    train = ProbeSet("train", *_data(60, seed=1))
    _record(tmp_path / "a.h5", [ProbeSet("heldout", *_data(40, seed=2)), train])
    _record(tmp_path / "b.h5", [ProbeSet("heldout", 50 * _data(40, seed=3)[0], _data(40, seed=3)[1]), train])
    with Store(tmp_path / "a.h5") as a, Store(tmp_path / "b.h5") as b:
        assert not np.array_equal(a.logits("heldout"), b.logits("heldout"))
        np.testing.assert_array_equal(a.temperature, b.temperature)
        np.testing.assert_array_equal(a.conf("train", "temp_prob"), b.conf("train", "temp_prob"))
        assert 0.05 < a.temperature[0] < a.temperature[1] < 20


def test_temp_prob_recorded_only_with_a_train_probe_set(tmp_path):
    """With a "train" set, temp_prob of every set is max softmax(logits / T) of the stored T; without, nothing."""
    _record(tmp_path / "none.h5", [ProbeSet("heldout", *_data(40, seed=2))])
    _record(tmp_path / "with.h5", [ProbeSet("heldout", *_data(40, seed=2)), ProbeSet("train", *_data(60, seed=1))])
    with Store(tmp_path / "none.h5") as st:
        assert "temp_prob" not in st.measures and st.temperature is None
    with Store(tmp_path / "with.h5") as st:
        assert "temp_prob" in st.measures and st.temperature.shape == (2,)
        for i, t in enumerate(st.temperature):
            assert t == pytest.approx(fit_temperature(st.logits("train")[i], st.labels("train")), rel=1e-12)
            for p in ("heldout", "train"):
                want = temperature_softmax(st.logits(p)[i], t).max(1)
                np.testing.assert_allclose(st.conf(p, "temp_prob")[i], want, rtol=1e-6)


def test_resume_appends_temperatures(tmp_path):
    """A resumed recording continues /temperature with the other per-snapshot datasets."""
    probes = [ProbeSet("heldout", *_data(40, seed=2)), ProbeSet("train", *_data(60, seed=1))]
    _record(tmp_path / "s.h5", probes)
    model = _model()
    with Recorder(model, tmp_path / "s.h5", layers="0", probes=probes, class_names=CLASSES, schedule=every(1),
                  resume=True) as rec:
        rec.step(rec.last_step + 1)
    with Store(tmp_path / "s.h5") as st:
        assert st.n_snapshots == 3 and st.temperature.shape == (3,) and np.isfinite(st.temperature).all()


def test_resume_of_a_store_recorded_without_temp_prob(tmp_path, monkeypatch):
    """A store with a "train" set recorded before temp_prob was automatic resumes without it (no refusal)."""
    probes = [ProbeSet("heldout", *_data(40, seed=2)), ProbeSet("train", *_data(60, seed=1))]
    with monkeypatch.context() as m:
        m.setattr(confidence, "TEMPERATURE_PROBE", "no such probe set")  # the recorder of before
        _record(tmp_path / "old.h5", probes)
    with Recorder(_model(), tmp_path / "old.h5", layers="0", probes=probes, class_names=CLASSES,
                  schedule=every(1), resume=True) as rec:
        rec.step(rec.last_step + 1)
    with Store(tmp_path / "old.h5") as st:
        assert st.n_snapshots == 3 and "temp_prob" not in st.measures and st.temperature is None


def test_recorder_measure_names_are_reserved():
    """temp_prob and the MC measures cannot be selected in measures= nor registered; the store knows the name."""
    assert TEMPERATURE_MEASURE == confidence.TEMP_PROB
    with pytest.raises(ValueError, match="recorded whenever a probe set is named 'train'"):
        confidence.check_measures(["max_prob", "temp_prob"])
    with pytest.raises(ValueError, match=r"recorded with Recorder\(mc_dropout=K\)"):
        confidence.check_measures(["mc_prob"])
    with pytest.raises(ValueError, match="must not be one of the recorder's own measures"):
        confidence.register_measure("mc_mutual_info", lambda p, y: p.max(1))


def test_logits_worse_than_chance_end_at_the_upper_bound():
    """Labels that are always the least likely class give T = 20, the upper bound."""
    z = np.random.default_rng(4).normal(0, 2, (200, 5))
    assert fit_temperature(z, z.argmin(1)) == 20.0

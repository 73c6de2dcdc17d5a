"""The Lightning callback records the same bytes as a plain loop, changes no training, and survives resumes.

Real Lightning on CPU, a seeded MLP (64-32-16-10, SGD with momentum) on scikit-learn's bundled digits: 320
training samples in 10 unshuffled batches of 32 per epoch, 100 held-out probe samples. The Lightning side (model,
callbacks, loops) is in tests/_lightning_models.py, imported by the ``lit`` fixture when the first test runs.
"""

import importlib
import sys

import numpy as np
import pytest
import torch

from topotrace.instrument.schedules import every
from topotrace.instrument.store import Store

pytestmark = [
    pytest.mark.slow,
    # one xdist work unit: Lightning is imported on one worker only (tests/conftest.py)
    pytest.mark.xdist_group("lightning"),
    # Lightning's advice for real data loaders; these tests want the batches in the main process, in order.
    pytest.mark.filterwarnings("ignore:The 'train_dataloader' does not have many workers:UserWarning"),
    # torch >= 2.10 deprecates pytree's LeafSpec, which Lightning builds at every step; recording each of those
    # warnings costs pytest seconds per test.
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"),
]


@pytest.fixture(scope="module")
def lit():
    """tests/_lightning_models.py, imported when the first test runs: collecting the suite imports no Lightning."""
    pytest.importorskip("lightning.pytorch")
    from tests import _lightning_models

    return _lightning_models


def _assert_stores_equal(a, b):
    with Store(a) as sa, Store(b) as sb:
        assert sa.n_snapshots == sb.n_snapshots > 0
        np.testing.assert_array_equal(sa.steps, sb.steps)
        np.testing.assert_array_equal(sa.epochs, sb.epochs)
        for p in sa.probes:
            for get in (sa.logits, sa.pred, sa.correct, sa.loss):
                np.testing.assert_array_equal(get(p), getattr(sb, get.__name__)(p))
            for m in sa.measures:
                np.testing.assert_array_equal(sa.conf(p, m), sb.conf(p, m))
            for layer in sa.layers:
                for i in range(sa.n_snapshots):
                    np.testing.assert_array_equal(sa.acts(p, layer, i, dtype=None), sb.acts(p, layer, i, dtype=None))


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def recorded(lit, tmp_path_factory):
    """One Lightning run with the callback: (store path, final model)."""
    path = tmp_path_factory.mktemp("lightning") / "store.h5"
    return path, lit.fit_recorded(path, lit.STEPS, every(2))


def test_store_equals_plain_loop(lit, recorded, tmp_path):
    """The callback's store equals, bit for bit, a plain loop's recording of the same seeded training."""
    path, model = recorded
    plain, _ = lit.plain(tmp_path / "plain.h5", lit.STEPS, every(2))
    _assert_stores_equal(path, tmp_path / "plain.h5")
    with Store(path) as st:
        assert st.steps.tolist() == list(range(0, lit.STEPS + 1, 2))
        assert st.epochs.tolist() == [0] * 6 + [1] * 5  # step 10 ends epoch 0; step 0 is the untrained model
    _assert_same_weights(model, plain)


def test_training_unchanged_by_callback(lit, recorded):
    """Final weights of the recorded Lightning run equal those of the same run without the callback."""
    _, model = recorded
    _assert_same_weights(model, lit.fit(lit.net(), lit.STEPS))


def test_gradient_accumulation_records_each_update_once(lit, tmp_path):
    """With accumulate_grad_batches=2 every global_step is recorded once, with the weights of that update."""
    log = lit.WeightLog()
    model = lit.fit_recorded(tmp_path / "acc.h5", 10, every(1), [log], accumulate_grad_batches=2)
    plain, weights = lit.plain(tmp_path / "plain.h5", 10, every(1), accumulate=2)
    with Store(tmp_path / "acc.h5") as st:
        assert st.steps.tolist() == list(range(11))
        assert st.epochs.tolist() == [0] * 6 + [1] * 5  # 5 updates per epoch
    _assert_stores_equal(tmp_path / "acc.h5", tmp_path / "plain.h5")
    for step, w in weights.items():
        for k in w:
            assert torch.equal(log.weights[step][k], w[k]), (step, k)
    _assert_same_weights(model, plain)


def test_resume_from_checkpoint_cuts_and_continues(lit, recorded, tmp_path):
    """fit(ckpt_path=...) keeps snapshots up to the checkpoint, rerecords later ones, equals an unbroken run."""
    full, full_model = recorded
    # The checkpoint is at the end of epoch 0: on a mid-epoch resume Lightning restarts a plain (not stateful)
    # DataLoader at the epoch's first batch, so a resumed run sees other batches than an uninterrupted one.
    path, ckpt, n1 = tmp_path / "store.h5", tmp_path / "step10.ckpt", 10
    lit.fit_recorded(path, 15, every(2), [lit.SaveAt(n1, ckpt)])
    with Store(path) as st:
        assert st.steps.tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
        first_times = st.times
    # A fresh model and Trainer: the weights, the optimiser state and global_step come from the checkpoint.
    cb = lit.TopotraceCallback(path, **lit.rec_args(every(2)))
    model = lit.fit(lit.net(seed=123), lit.STEPS, [cb], ckpt_path=ckpt)
    with Store(path) as st:
        steps, times = st.steps, st.times
    assert steps.tolist() == list(range(0, lit.STEPS + 1, 2))
    kept = steps <= n1
    np.testing.assert_array_equal(times[kept], first_times[:kept.sum()])  # from the first run, step 10 included
    assert times[~kept].min() > first_times.max()  # steps 12 and 14 recorded again by the resumed run
    _assert_stores_equal(path, full)
    _assert_same_weights(model, full_model)


def test_other_ranks_record_nothing(lit, tmp_path, monkeypatch):
    """A Trainer that is not global rank 0 creates no recorder and no file."""
    monkeypatch.setattr(lit.L.Trainer, "is_global_zero", property(lambda self: False))
    cb = lit.TopotraceCallback(tmp_path / "store.h5", **lit.rec_args(every(1)))
    lit.fit(lit.net(), 3, [cb])
    assert cb.recorder is None
    assert list(tmp_path.iterdir()) == []


def test_exception_closes_recorder(lit, tmp_path):
    """An exception during fit closes the recorder; the store keeps every snapshot taken before it."""
    cb = lit.TopotraceCallback(tmp_path / "store.h5", **lit.rec_args(every(2)))
    grab = lit.Grab(cb)
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="boom"):
        lit.fit(lit.Failing(), lit.STEPS, [cb, grab])
    assert cb.recorder is None
    with pytest.raises(RuntimeError, match="closed"):
        grab.rec.snapshot(99)
    with Store(tmp_path / "store.h5") as st:
        assert st.steps.tolist() == [0, 2, 4]


def test_recorder_kwargs_checked(lit, tmp_path):
    """recorder_kwargs that the Recorder does not take, or that the callback sets itself, raise a TypeError."""
    for bad in ({"batchsize": 8}, {"resume": True}):
        with pytest.raises(TypeError, match=f"recorder_kwargs.*Got \\['{next(iter(bad))}'\\]"):
            lit.TopotraceCallback(tmp_path / "s.h5", **lit.rec_args(every(1)), **bad)


def test_import_without_lightning_names_the_extra(lit, monkeypatch):
    """Without Lightning installed the import fails with a one-line ImportError naming the extra."""
    # ``lit`` has imported topotrace.integrations.lightning (removed from sys.modules below)
    for name in [m for m in sys.modules if m == "lightning" or m.startswith("lightning.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.delitem(sys.modules, "topotrace.integrations.lightning")
    with pytest.raises(ImportError) as info:
        importlib.import_module("topotrace.integrations.lightning")
    assert str(info.value) == ("topotrace.integrations.lightning needs PyTorch Lightning: "
                               "pip install topotrace[lightning]")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_runs_recorded_by_the_callback_make_a_study(lit, tmp_path, capsys):
    """Two seeds recorded by the Lightning callback become a study of existing runs (`topotrace study RUN RUN`)."""
    import json

    from topotrace.cli import main

    for seed in (0, 1):
        # one layer: the study does not depend on the layer count, and its report is built for three layers less
        args = lit.rec_args(every(5)) | {"layers": ["fc2"]}
        cb = lit.TopotraceCallback(tmp_path / f"lit-{seed}" / "store.h5", **args)
        lit.fit(lit.net(seed), 10, [cb])
    assert main(["study", str(tmp_path / "lit-0"), str(tmp_path / "lit-1"), "--out-dir", str(tmp_path)]) == 0
    assert "lit-study" in capsys.readouterr().out
    found = json.loads((tmp_path / "lit-study" / "findings.json").read_text("utf-8"))
    assert found and all(f["n_runs"] == 2 and [r["run"] for r in f["runs"]] == ["lit-0", "lit-1"] for f in found
                         if "runs" in f and f["claim"].endswith(("time", "confidence")))


# --- numbers handed to the trainer's loggers (#21 item 3) -------------------------------------------------------


def _analysis_values(store_path, cache):
    """The analysis' values per snapshot step: name -> {step: value}, named as the callbacks log them."""
    from topotrace.analysis.pipeline import analyze

    res = analyze(store_path, cache)
    m = res.measures.index(res.primary_measure)
    out = {}
    for layer, lr in res.layers.items():
        ev = lr.evidence
        for k, q in enumerate(ev.quantities):
            out[f"topotrace/{layer}/{q}"] = dict(zip(res.steps.tolist(), ev.mean[k]))
            out[f"topotrace/{layer}/{q}_partial_rho"] = dict(zip(res.steps.tolist(), ev.rho_partial[k, :, m]))
    for probe, curve in res.curves.items():
        out[f"topotrace/{probe}/accuracy"] = dict(zip(res.steps.tolist(), curve["accuracy"]))
    return out


def test_numbers_reach_csv_and_tensorboard_loggers_equal_to_the_analysis(lit, tmp_path, monkeypatch):
    """CSVLogger's metrics.csv and TensorBoard's event file hold the analysis' per-layer numbers at every snapshot
    step; they are computed on the writer thread and handed to the loggers on the training thread."""
    import csv
    import threading

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from topotrace.integrations import _metrics

    computed_on = []
    numbers = _metrics.SnapshotMetrics.numbers

    def spy(self, snap):
        computed_on.append(threading.current_thread().name)
        return numbers(self, snap)

    monkeypatch.setattr(_metrics.SnapshotMetrics, "numbers", spy)
    csv_logger = lit.L.loggers.CSVLogger(tmp_path / "csv", name="run")
    tb_logger = lit.L.loggers.TensorBoardLogger(tmp_path / "tb", name="run")
    spy_logger = lit.ThreadLogger()
    lit.fit_logged(tmp_path, [csv_logger, tb_logger, spy_logger])
    want = _analysis_values(tmp_path / "store.h5", tmp_path / "analysis.h5")
    steps = [0, 5, 10, 15, 20]
    assert len(want) == 4 * len(lit.LAYERS) + 1 and all(sorted(v) == steps for v in want.values())

    assert computed_on == ["topotrace-writer:store.h5"] * len(steps)
    ours = [(thread, step) for thread, step, values in spy_logger.calls if "topotrace/fc1/strength" in values]
    assert ours == [(threading.main_thread().name, s) for s in steps]

    with open(csv_logger.log_dir + "/metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("topotrace/fc1/strength")]
    assert [int(r["step"]) for r in rows] == steps
    for name, by_step in want.items():
        got = np.array([float(r[name]) for r in rows])
        np.testing.assert_allclose(got, [by_step[s] for s in steps], rtol=1e-9, atol=1e-12, err_msg=name)

    acc = EventAccumulator(tb_logger.log_dir)
    acc.Reload()
    for name, by_step in want.items():
        events = acc.Scalars(name)
        assert [e.step for e in events] == steps, name
        np.testing.assert_allclose([e.value for e in events], [by_step[s] for s in steps], rtol=1e-6, atol=1e-7,
                                   err_msg=name)  # TensorBoard keeps float32
    strength = np.array([want["topotrace/fc2/strength"][s] for s in steps])
    assert np.isfinite(strength).all() and strength[-1] != strength[0]  # real numbers that change with training


def test_log_metrics_false_logs_nothing(lit, tmp_path):
    """With log_metrics=False the logger gets the module's own values and no topotrace number."""
    csv_logger = lit.L.loggers.CSVLogger(tmp_path / "csv", name="run")
    spy_logger = lit.ThreadLogger()
    lit.fit_logged(tmp_path, [csv_logger, spy_logger], log_metrics=False)
    with open(csv_logger.log_dir + "/metrics.csv", newline="") as f:
        header = next(iter(f))
    assert "train_loss" in header and "topotrace" not in header
    assert spy_logger.calls and not [v for _, _, v in spy_logger.calls if any(k.startswith("topotrace") for k in v)]
    with Store(tmp_path / "store.h5") as st:
        assert st.n_snapshots == 5  # recording itself goes on

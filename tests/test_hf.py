"""The Hugging Face Trainer callback on a tiny seeded BERT trained on scikit-learn's bundled digits.

The reference for what the callback records is a plain :class:`Recorder` fed with copies of the model's weights
taken (by a test-only callback) at the scheduled steps of the same seeded Trainer run without topotrace.
"""

import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.store import Store

# tests/conftest.py: make test-fast leaves these out; one xdist work unit, so transformers is imported on one worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hf")]


@pytest.fixture(scope="module", autouse=True)
def _quiet_machine():
    """One torch thread (on a shared 2-core machine two intra-op threads fight for the cores and a step takes
    ~20x longer; every compared run uses the same count) and no network: the Hub in offline mode (its
    HF_HUB_OFFLINE is read at import, hence the constant) and every socket connect raising."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hf(_quiet_machine):
    """tests/_hf_models.py (the run's settings, model, Trainer runs), imported when the first test runs:
    collecting the suite imports no transformers."""
    from tests import _hf_models

    return _hf_models


@pytest.fixture(scope="module")
def digits(hf):
    """Token ids [n, 65] (CLS then the 64 pixel values 0..16) and labels [n]."""
    d = load_digits()
    pixels = torch.from_numpy(d.data.astype(np.int64))  # [1797, 64], values 0..16
    ids = torch.cat([torch.full((len(pixels), 1), hf.CLS), pixels], dim=1)  # [1797, 65]
    return ids, torch.from_numpy(d.target.astype(np.int64))


@pytest.fixture(scope="module")
def probes(digits):
    ids, y = digits
    return [ProbeSet("heldout", ids[1500:1560], y[1500:1560], np.arange(1500, 1560)),
            ProbeSet("train", ids[:40], y[:40])]


@pytest.fixture(scope="module")
def runs(hf, digits, probes, tmp_path_factory):
    """The same seeded training with the topotrace callback and without it (weights copied in both)."""
    root = tmp_path_factory.mktemp("hf")
    with_cb, without = hf.CopyWeights(), hf.CopyWeights()
    model = hf.train(digits, root / "with", [hf.callback(root / "with.h5", probes), with_cb])
    plain = hf.train(digits, root / "without", [without])
    return {"store": root / "with.h5", "model": model, "copies": with_cb.states,
            "plain_model": plain, "plain_copies": without.states, "root": root}


def _contents(path):
    """Everything a store holds per snapshot: steps, epochs, and per probe set the outcomes and every layer's acts."""
    with Store(path) as st:
        out = {"step": st.steps, "epoch": st.epochs}
        for p in st.probes:
            out |= {(p, what): getattr(st, what)(p) for what in ("logits", "pred", "correct", "loss")}
            out |= {(p, "conf", m): st.conf(p, m) for m in st.measures}
            out |= {(p, "acts", la): np.stack([st.acts(p, la, i) for i in range(st.n_snapshots)]) for la in st.layers}
    return out


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))


def test_store_equals_plain_recorder_on_the_same_weights(hf, runs, probes):
    """The callback's store is bit-identical to a plain Recorder's snapshots of the weights the Trainer had."""
    ref = runs["root"] / "reference.h5"
    model = hf.model()
    with Recorder(model, ref, layers=hf.LAYERS, probes=probes, class_names=hf.CLASSES, schedule=hf.SCHEDULE,
                  reductions=hf.REDUCTIONS, logits="logits") as rec:
        for step, state in sorted(runs["plain_copies"].items()):
            model.load_state_dict(state)
            rec.snapshot(step, step // hf.STEPS_PER_EPOCH)
    got = _contents(runs["store"])
    _assert_same(got, _contents(ref))
    assert got["step"].tolist() == [0, 3, 6, 9, 12] and got["epoch"].tolist() == [0, 0, 0, 0, 1]
    with Store(runs["store"]) as st, Store(ref) as st_ref:
        assert st.layers == st_ref.layers and st.probes == st_ref.probes and st.measures == st_ref.measures
        assert st.layers["bert.encoder.layer.0"].reduction == "token_mean"
        assert st.meta["seed"] == 1  # recorder_kwargs are passed on
        assert not np.array_equal(st.logits("heldout")[0], st.logits("heldout")[-1])  # training moved the model


def test_training_unchanged_by_the_callback(hf, runs):
    """With dropout on, the weights at every scheduled step and at the end equal those of a run without it."""
    assert sorted(runs["copies"]) == sorted(runs["plain_copies"]) == [0, 3, 6, 9, 12]
    for step, state in runs["copies"].items():
        assert all(torch.equal(v, runs["plain_copies"][step][k]) for k, v in state.items()), step
    final, plain = runs["model"].state_dict(), runs["plain_model"].state_dict()
    assert all(torch.equal(v, plain[k]) for k, v in final.items())


def test_resume_from_checkpoint_cuts_and_continues_the_store(hf, runs, digits, probes, tmp_path):
    """Resuming from checkpoint-6 replaces the interrupted run's later snapshots; the store equals a straight run's."""
    path, out = tmp_path / "store.h5", tmp_path / "run"
    checkpoint = str(out / f"checkpoint-{hf.CHECKPOINT}")
    hf.train(digits, out, [hf.callback(path, probes), hf.StopAt(9)], save=True)  # checkpoint at 6, stops after 9
    with Store(path) as st:
        assert st.steps.tolist() == [0, 3, 6, 9]
    resumed_at = time.time()
    hf.train(digits, out, [hf.callback(path, probes)], save=True, resume=checkpoint)
    with Store(path) as st:
        steps, times = st.steps, st.times
    assert np.all(np.diff(steps) > 0)
    assert np.all((times > resumed_at) == (steps > hf.CHECKPOINT))  # 0-6 kept from the first run, 9 and 12 new
    straight = _contents(runs["store"])
    _assert_same(_contents(path), straight)  # the Trainer's resume is bit-exact on CPU

    # A store that lacks the checkpoint's step (here: a new one) gets it, from the weights loaded at resume.
    hf.train(digits, tmp_path / "again", [hf.callback(tmp_path / "new.h5", probes)], resume=checkpoint)
    _assert_same(_contents(tmp_path / "new.h5"), {k: v[2:] for k, v in straight.items()})


def test_non_main_process_does_nothing(hf, tmp_path, probes):
    """On a process other than world rank 0 every hook is a no-op: no Recorder, no file, the model unused."""
    path = tmp_path / "store.h5"
    cb = hf.callback(path, probes)
    state, control = hf.TrainerState(is_world_process_zero=False), hf.TrainerControl()
    cb.on_train_begin(None, state, control, model=object())  # a Recorder would refuse a non-Module
    state.global_step, state.epoch = 3, 0.3
    cb.on_step_end(None, state, control, model=object())
    cb.on_train_end(None, state, control, model=object())
    assert cb.recorder is None and not path.exists()


def test_recorder_kwargs_set_by_the_callback_are_refused(hf, tmp_path, probes):
    """'resume' and 'resume_step' come from the Trainer's state; unknown names are refused at construction."""
    for name in ("resume", "resume_step", "model", "batchsize"):
        with pytest.raises(TypeError, match=rf"'recorder_kwargs'.*Got \['{name}'\] instead"):
            hf.TopotraceCallback(tmp_path / "s.h5", layers=hf.LAYERS, probes=probes, class_names=hf.CLASSES,
                                 schedule=hf.SCHEDULE, **{name: 1})
    with pytest.raises(ValueError, match="records on the main process only; shard='ddp' is for plain loops"):
        hf.TopotraceCallback(tmp_path / "s.h5", layers=hf.LAYERS, probes=probes, class_names=hf.CLASSES,
                             schedule=hf.SCHEDULE, shard="ddp")
    assert not (tmp_path / "s.h5").exists()


def test_import_without_transformers_names_the_extra():
    """Without transformers the package imports and the hf module fails with a one-line 'pip install topotrace[hf]'."""
    code = ("import sys\n"
            "sys.modules['transformers'] = None\n"
            "import topotrace.integrations\n"
            "try:\n"
            "    import topotrace.integrations.hf\n"
            "except ImportError as err:\n"
            "    print(repr(str(err)), err.__cause__, err.__suppress_context__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ("'topotrace.integrations.hf needs transformers: pip install topotrace[hf]' None True")


# --- numbers handed to the Trainer's log (#21 item 3) -----------------------------------------------------------


def test_numbers_in_log_history_equal_the_analysis(hf, digits, probes, tmp_path):
    """state.log_history holds the analysis' per-layer numbers and each probe set's accuracy at every snapshot
    step, and the Trainer's callbacks (the reporters' way in) get the same values through on_log."""
    from topotrace.analysis.pipeline import analyze

    spy = hf.LogSpy()
    trainer = hf.train_logged(digits, tmp_path / "out", [spy, hf.callback(tmp_path / "store.h5", probes)])
    records = [r for r in trainer.state.log_history if any(k.startswith("topotrace/") for k in r)]
    steps = [0, 3, 6, 9, 12]
    assert [r["step"] for r in records] == steps
    assert [{k: v for k, v in r.items() if k != "step"} for r in records] == [
        lg for lg in spy.logs if any(k.startswith("topotrace/") for k in lg)]

    res = analyze(tmp_path / "store.h5", tmp_path / "analysis.h5")
    assert res.steps.tolist() == steps
    m = res.measures.index(res.primary_measure)
    n_names = 0
    for layer, lr in res.layers.items():
        for k, q in enumerate(lr.evidence.quantities):
            for name, want in ((f"topotrace/{layer}/{q}", lr.evidence.mean[k]),
                               (f"topotrace/{layer}/{q}_partial_rho", lr.evidence.rho_partial[k, :, m])):
                np.testing.assert_allclose([r[name] for r in records], want, rtol=1e-9, atol=1e-12, err_msg=name)
                n_names += 1
    for probe in ("heldout", "train"):
        np.testing.assert_allclose([r[f"topotrace/{probe}/accuracy"] for r in records], res.curves[probe]["accuracy"],
                                   rtol=1e-12, err_msg=probe)
    assert n_names == 4 * len(res.layers) == 12  # two encoder blocks and the pooler
    assert all(len(r) == n_names + 3 for r in records)  # + two accuracies + step


def test_log_metrics_false_keeps_the_log_history_clean(hf, digits, probes, tmp_path):
    """log_metrics=False: no topotrace value in the log history or on_log; the store is recorded as before."""
    spy = hf.LogSpy()
    cb = hf.TopotraceCallback(tmp_path / "store.h5", layers=hf.LAYERS, probes=probes, class_names=hf.CLASSES,
                              schedule=hf.SCHEDULE, reductions=hf.REDUCTIONS, batch_size=32, log_metrics=False)
    trainer = hf.train_logged(digits, tmp_path / "out", [spy, cb])
    assert trainer.state.log_history  # the Trainer's own summary at the end of training
    assert not [k for r in trainer.state.log_history + spy.logs for k in r if k.startswith("topotrace")]
    with Store(tmp_path / "store.h5") as st:
        assert st.steps.tolist() == [0, 3, 6, 9, 12]

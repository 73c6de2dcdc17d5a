"""The recorder end to end on tiny seeded models: recorded values, training unchanged, failures, resume."""

import logging
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every
from topotrace.instrument.store import Store, StoreError, StoreWriter

from .models import MLP

CLASSES = ["a", "b", "c", "d"]


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(24, 4)

    def forward(self, x):
        h = self.pool(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.fc(h.flatten(1))


class Jitter(nn.Module):
    """Draws from the torch RNG on every call (noise only while training): a pass that did not restore the
    RNG state would shift every later dropout mask and shuffle."""

    def forward(self, x):
        noise = torch.rand_like(x)
        return x + 0.01 * noise if self.training else x


class DropBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 16)
        self.bn = nn.BatchNorm1d(16)
        self.jitter = Jitter()
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        return self.out(self.drop(self.jitter(torch.relu(self.bn(self.fc1(x))))))


def _data(n=40, shape=(10,), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


def _train(model, steps, rec=None, seed=1, start=0):
    """SGD with momentum on shuffled seeded data; rec.step after each update (step 0: before training)."""
    x, y = _data(64, (10,) if not isinstance(model, ConvNet) else (1, 8, 8), seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if rec is not None and start == 0:
        rec.step(0)
    for step in range(start + 1, start + steps + 1):
        model.train()
        batch = torch.randperm(64)[:16]  # global RNG: shifted if a probe pass consumed random numbers
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rec is not None:
            rec.step(step)
    return model


def _recorder(model, path, *, layers="fc*", probe=None, schedule=None, **kw):
    x, y = probe if probe is not None else _data(30)
    return Recorder(model, path, layers=layers, probes=[ProbeSet("heldout", x, y, np.arange(100, 100 + len(x)))],
                    class_names=CLASSES, schedule=schedule or every(1), **kw)


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _reference_pass(model, x, layers, reduce):
    """An independent forward pass of ``model`` in eval mode with hand-written hooks."""
    outs, handles = {}, []
    for name in layers:
        mod = model.get_submodule(name)
        handles.append(mod.register_forward_hook(lambda m, i, o, name=name: outs.__setitem__(name, reduce(o.clone()))))
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return {k: v.numpy() for k, v in outs.items()}, logits.numpy()


def _reference_outcomes(logits, y):
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    s = np.sort(p, 1)
    return {
        "pred": z.argmax(1),
        "loss": -np.log(p[np.arange(len(y)), y]),
        "max_prob": s[:, -1],
        "margin": s[:, -1] - s[:, -2],
        "entropy": -(p * np.log(p)).sum(1) / np.log(z.shape[1]),
        "true_prob": p[np.arange(len(y)), y],
    }


def test_mlp_last_snapshot_equals_independent_pass(tmp_path):
    """Recorded activations, logits and outcomes of the last snapshot equal a fresh hooked pass of the final model."""
    torch.manual_seed(0)
    model = MLP()
    x, y = _data(30)
    with _recorder(model, tmp_path / "s.h5", layers=["fc1", "act1", "fc2", "out"], probe=(x, y),
                   schedule=every(3), batch_size=7) as rec:
        _train(model, 9, rec)
    acts, logits = _reference_pass(model, x, ["fc1", "act1", "fc2", "out"], lambda o: o)
    assert (acts["fc1"] < 0).any()  # fc1 is recorded before the in-place ReLU
    with Store(tmp_path / "s.h5") as st:
        assert st.steps.tolist() == [0, 3, 6, 9]
        assert {n: (la.n_neurons, la.reduction) for n, la in st.layers.items()} == {
            "fc1": (16, "flatten"), "act1": (16, "flatten"), "fc2": (12, "flatten"), "out": (4, "flatten")}
        for name, ref in acts.items():
            got = st.acts("heldout", name, -1)
            np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3)  # float16 storage
        assert not np.allclose(st.acts("heldout", "fc2", -2), acts["fc2"], atol=1e-2)  # the model did change
        np.testing.assert_allclose(st.logits("heldout")[-1], logits, rtol=1e-6, atol=1e-6)
        ref = _reference_outcomes(logits, y.numpy())
        np.testing.assert_array_equal(st.pred("heldout")[-1], ref["pred"])
        np.testing.assert_array_equal(st.correct("heldout")[-1], ref["pred"] == y.numpy())
        np.testing.assert_allclose(st.loss("heldout")[-1], ref["loss"], rtol=1e-5, atol=1e-6)
        for m in ("max_prob", "margin", "entropy", "true_prob"):
            np.testing.assert_allclose(st.conf("heldout", m)[-1], ref[m], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(st.labels("heldout"), y.numpy())
        np.testing.assert_array_equal(st.probes["heldout"].index, np.arange(100, 130))


def test_conv_last_snapshot_is_channel_mean_of_independent_pass(tmp_path):
    torch.manual_seed(0)
    model = ConvNet()
    x, y = _data(20, (1, 8, 8))
    layers = ["conv1", "bn1", "relu1", "conv2", "fc"]
    with _recorder(model, tmp_path / "c.h5", layers=layers, probe=(x, y), schedule=every(2), batch_size=8) as rec:
        _train(model, 4, rec)
    acts, _ = _reference_pass(model, x, layers, lambda o: o.mean(dim=(2, 3)) if o.ndim == 4 else o)
    with Store(tmp_path / "c.h5") as st:
        spec = st.layers
        assert spec["conv1"].reduction == "channel_mean" and spec["conv1"].output_shape == (4, 8, 8)
        assert spec["conv2"].n_neurons == 6 and spec["conv2"].output_shape == (6, 6, 6)
        assert spec["fc"].reduction == "flatten" and spec["fc"].n_neurons == 4
        assert st.steps[-1] == 4
        for name in layers:
            np.testing.assert_allclose(st.acts("heldout", name, -1), acts[name], rtol=2e-3, atol=2e-3)


def _state(model):
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def test_training_bit_identical_with_and_without_recorder(tmp_path):
    """Dropout, BatchNorm, RNG-drawing module, shuffling: probing at every step changes nothing."""
    torch.manual_seed(0)
    plain = _train(DropBN(), 25, None)
    torch.manual_seed(0)
    model = DropBN()
    with _recorder(model, tmp_path / "s.h5", layers=["fc1", "bn", "drop"], batch_size=16) as rec:
        _train(model, 25, rec)
    assert rec.n_snapshots == 26
    a, b = _state(plain), _state(model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(plain.bn.num_batches_tracked, torch.tensor(25))


def test_probe_pass_leaves_batchnorm_modes_and_rng_untouched(tmp_path):
    torch.manual_seed(0)
    model = DropBN()
    _train(model, 3)
    model.train()
    model.drop.eval()  # a submodule the user keeps in eval mode
    modes = {n: m.training for n, m in model.named_modules()}
    stats = {k: v.clone() for k, v in model.bn.state_dict().items()}
    rng = torch.get_rng_state()
    with _recorder(model, tmp_path / "s.h5", layers="bn") as rec:
        assert rec.snapshot(5)
        assert {n: m.training for n, m in model.named_modules()} == modes
        model.eval()
        modes_eval = {n: m.training for n, m in model.named_modules()}
        assert rec.snapshot(6)
        assert {n: m.training for n, m in model.named_modules()} == modes_eval
    for k, v in model.bn.state_dict().items():
        assert torch.equal(v, stats[k]), k
    assert torch.equal(torch.get_rng_state(), rng)
    assert _no_hooks(model)


def test_hooks_removed_after_a_failing_pass(tmp_path):
    """An exception inside the probe pass leaves no hook and restores the modes."""
    torch.manual_seed(0)
    model = MLP()
    with _recorder(model, tmp_path / "s.h5") as rec:
        def boom(mod, args):
            raise FloatingPointError("boom")

        h = model.out.register_forward_pre_hook(boom)
        model.train()
        with pytest.raises(FloatingPointError):
            rec.snapshot(1)
        h.remove()
        assert _no_hooks(model)
        assert all(m.training for m in model.modules())
        assert rec.snapshot(2)  # the failed step was not consumed
    assert rec.n_snapshots == 1


def test_unknown_layer_lists_available_names(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential()
    for name, mod in (("fc1", nn.Linear(10, 8)), ("fc2", nn.Linear(8, 6)), ("out", nn.Linear(6, 4))):
        model.add_module(name, mod)
    with pytest.raises(ValueError) as err:
        _recorder(model, tmp_path / "s.h5", layers="fc3")
    assert str(err.value) == "Unknown layer 'fc3'. Available: ['fc1', 'fc2', 'out']"
    assert not (tmp_path / "s.h5").exists()


def test_uninitialised_lazy_module_is_refused_before_anything_runs(tmp_path):
    """The dry pass must not initialise lazy parameters: that would move their draw in the RNG stream."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 4))
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"uninitialised lazy parameters \['0.weight', '0.bias'\]\. Run one forward"):
        _recorder(model, tmp_path / "s.h5", layers="1")
    assert not (tmp_path / "s.h5").exists()
    assert torch.equal(torch.get_rng_state(), rng)
    model(torch.zeros(2, 10))  # initialised by the user's own code: now accepted
    with _recorder(model, tmp_path / "s.h5", layers="1") as rec:
        assert rec.snapshot(0)


def test_glob_and_predicate_select_layers(tmp_path):
    torch.manual_seed(0)
    with _recorder(MLP(), tmp_path / "g.h5", layers="act*") as rec:
        assert list(rec.layers) == ["act1", "act2"]
    with _recorder(MLP(), tmp_path / "p.h5", layers=lambda n, m: isinstance(m, nn.Linear)) as rec:
        assert list(rec.layers) == ["fc1", "fc2", "out"]
    with Store(tmp_path / "p.h5") as st:
        assert list(st.layers) == ["fc1", "fc2", "out"]


def test_ddp_style_wrapper_is_unwrapped(tmp_path):
    torch.manual_seed(0)
    model = MLP()
    with _recorder(nn.DataParallel(model), tmp_path / "s.h5", layers="fc1") as rec:
        assert rec.layers == {"fc1": model.fc1}
        rec.snapshot(0)
    assert rec.n_snapshots == 1


def test_layer_that_never_runs_is_a_clear_error_before_training(tmp_path):
    torch.manual_seed(0)
    model = MLP()
    model.spare = nn.Linear(4, 4)  # registered, never called by forward
    with pytest.raises(RuntimeError, match=r"Layers \['spare'\] did not run during the probe pass.*fused fast path"):
        _recorder(model, tmp_path / "s.h5", layers=["fc1", "spare"])
    assert not (tmp_path / "s.h5").exists()
    assert _no_hooks(model)


def test_fused_attention_out_proj_is_a_clear_error(tmp_path):
    """nn.MultiheadAttention uses out_proj's weights without calling it: refused, not silently zero."""
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            return self.head(self.attn(x, x, x)[0].mean(1))

    x, y = torch.randn(6, 3, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    # attn returns (out [batch, 3, 8], weights [batch, 3, 3]): which tensor and which reduction are chosen
    choice = {"outputs": {"attn": 0}, "reductions": {"attn": "token_mean"}}
    with pytest.raises(RuntimeError, match=r"\['attn.out_proj'\] did not run.*MultiheadAttention"):
        _recorder(Tiny(), tmp_path / "s.h5", layers=["attn", "attn.out_proj"], probe=(x, y), **choice)
    with _recorder(Tiny(), tmp_path / "t.h5", layers="attn", probe=(x, y), **choice) as rec:
        rec.snapshot(0)
    assert rec.spec.layers[0].output_shape == (3, 8)


def test_argument_errors(tmp_path):
    torch.manual_seed(0)
    x, y = _data(10)
    with pytest.raises(ValueError, match="returns 4 logits per sample but 'class_names' has 3"):
        Recorder(MLP(), tmp_path / "a.h5", layers="fc1", probes=[ProbeSet("h", x, y % 3)],
                 class_names=["a", "b", "c"], schedule=every(1))
    with pytest.raises(ValueError, match=r"labels must lie in 0..3"):
        Recorder(MLP(), tmp_path / "a.h5", layers="fc1", probes=[ProbeSet("h", x, y + 4)], class_names=CLASSES,
                 schedule=every(1))
    with pytest.raises(TypeError, match="'probes'"):
        Recorder(MLP(), tmp_path / "a.h5", layers="fc1", probes=ProbeSet("h", x, y), class_names=CLASSES,
                 schedule=every(1))
    with pytest.raises(ValueError, match="distinct"):
        Recorder(MLP(), tmp_path / "a.h5", layers="fc1", probes=[ProbeSet("h", x, y)] * 2, class_names=CLASSES,
                 schedule=every(1))
    with pytest.raises(ValueError, match="'act_dtype'"):
        _recorder(MLP(), tmp_path / "a.h5", act_dtype="int8")
    with pytest.raises(ValueError, match="'batch_size'"):
        _recorder(MLP(), tmp_path / "a.h5", batch_size=0)
    with pytest.raises(ValueError, match="Unknown confidence measure 'brier'"):
        _recorder(MLP(), tmp_path / "a.h5", measures=["brier"])
    with pytest.raises(ValueError, match=r"'y' shape \(n,\)"):
        ProbeSet("h", x, y[:5])
    with pytest.raises(ValueError, match="'name'"):
        ProbeSet("a/b", x, y)
    assert not (tmp_path / "a.h5").exists()


def test_steps_must_increase_and_closed_recorder_refuses(tmp_path):
    torch.manual_seed(0)
    rec = _recorder(MLP(), tmp_path / "s.h5", schedule=every(2))
    assert rec.step(4) and not rec.step(5)
    with pytest.raises(ValueError, match="Steps must increase strictly: step 4 after step 4"):
        rec.step(4)
    rec.close()
    rec.close()
    assert rec.n_snapshots == 1 and rec.last_step == 4
    with pytest.raises(RuntimeError, match="closed"):
        rec.snapshot(8)


def test_meta_holds_user_values_and_library_versions(tmp_path):
    torch.manual_seed(0)
    model = MLP()
    with _recorder(model, tmp_path / "s.h5", meta={"run_name": "t", "seed": 3, "versions": {"cuda": "none"}},
                   schedule=every(5), measures=["margin"], act_dtype="float32"):
        pass
    with Store(tmp_path / "s.h5") as st:
        meta = st.meta
        assert st.measures == ("margin",) and st.spec.act_dtype == "float32"
    assert meta["run_name"] == "t" and meta["seed"] == 3
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["cuda"] == "none"
    assert meta["versions"]["numpy"] == np.__version__
    assert meta["schedule"] == "every(5)"
    assert meta["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert "fc1" in meta["model_summary"]


def _fail_after(monkeypatch, k, action):
    """Make StoreWriter.append succeed k times, then call action(writer, snap)."""
    real = StoreWriter.append
    calls = []

    def append(self, snap):
        calls.append(snap.step)
        if len(calls) > k:
            return action(self, snap, real)
        return real(self, snap)

    monkeypatch.setattr(StoreWriter, "append", append)
    return calls


def _disk_full(self, snap, real):
    raise OSError(28, "No space left on device")


def _close_file_under_it(self, snap, real):
    self._f.close()  # a real h5py failure: the file is gone when the writer touches it
    return real(self, snap)


@pytest.mark.parametrize("failure", [_disk_full, _close_file_under_it])
def test_writer_failure_leaves_training_running(tmp_path, monkeypatch, caplog, failure):
    """The loop runs to the end, one warning, rec.error set, the store holds exactly the committed snapshots."""
    torch.manual_seed(0)
    path = tmp_path / "s.h5"
    calls = _fail_after(monkeypatch, 2, failure)
    model = DropBN()
    with caplog.at_level(logging.ERROR, logger="topotrace.instrument.recorder"):
        with pytest.warns(RuntimeWarning) as warned:
            rec = _recorder(model, path, layers="fc1", batch_size=16)
            _train(model, 20, rec)  # no exception escapes
            # 20 steps > queue_size + 3: the writer has failed by now, so recording has visibly stopped
            assert not rec.recording and not rec.step(21)
            rec.close()
    ours = [w for w in warned if "Recording to" in str(w.message)]
    assert len(ours) == 1
    assert str(path) in str(ours[0].message) and "keeps its 2 committed snapshots" in str(ours[0].message)
    assert rec.error is not None and rec.n_snapshots == 2 and rec.last_step == 1
    if failure is _disk_full:
        assert isinstance(rec.error, OSError) and "No space left" in str(rec.error)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0].getMessage()
    assert calls == [0, 1, 2]  # after the failure nothing more reached the store
    with Store(path) as st:
        assert st.n_snapshots == 2 and st.steps.tolist() == [0, 1]
        assert np.isfinite(st.acts("heldout", "fc1", 1)).all()
    # training itself was unaffected
    torch.manual_seed(0)
    plain = _train(DropBN(), 20)
    for k, v in _state(plain).items():
        assert torch.equal(v, _state(model)[k])


def test_resume_appends_and_keeps_earlier_data(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "s.h5"
    model = MLP()
    with _recorder(model, path, schedule=every(2)) as rec:
        _train(model, 5, rec)
    with Store(path) as st:
        steps, acts, logits = st.steps, st.acts("heldout", "fc2", 1), st.logits("heldout")
    assert steps.tolist() == [0, 2, 4]
    with _recorder(model, path, schedule=every(2), resume=True) as rec:
        assert rec.last_step == 4 and rec.n_snapshots == 3
        _train(model, 4, rec, start=rec.last_step)
        with pytest.raises(ValueError, match="Steps must increase"):
            rec.snapshot(3)
    assert rec.n_snapshots == 5
    with Store(path) as st:
        assert st.steps.tolist() == [0, 2, 4, 6, 8]
        np.testing.assert_array_equal(st.acts("heldout", "fc2", 1), acts)
        np.testing.assert_array_equal(st.logits("heldout")[:3], logits)


def test_resume_from_a_checkpoint_cuts_later_snapshots(tmp_path):
    """resume_step=4 drops the snapshots at steps 6 and 8 (weights that the checkpoint does not hold) and keeps 0-4."""
    torch.manual_seed(0)
    path = tmp_path / "s.h5"
    model = MLP()
    with _recorder(model, path, schedule=every(2)) as rec:
        _train(model, 9, rec)
    with Store(path) as st:
        assert st.steps.tolist() == [0, 2, 4, 6, 8]
        kept = st.logits("heldout")[:3]
    with _recorder(model, path, schedule=every(2), resume=True, resume_step=4) as rec:
        assert rec.last_step == 4 and rec.n_snapshots == 3
        rec.step(6)
    with Store(path) as st:
        assert st.steps.tolist() == [0, 2, 4, 6]
        np.testing.assert_array_equal(st.logits("heldout")[:3], kept)
        assert st._f["probes/heldout/logits"].shape[0] == 4  # the cut rows are gone, not just uncommitted


def test_resume_of_missing_store_creates_it(tmp_path):
    torch.manual_seed(0)
    with _recorder(MLP(), tmp_path / "new.h5", resume=True) as rec:
        assert rec.last_step is None
        rec.snapshot(0)
    assert rec.n_snapshots == 1


def test_resume_with_a_different_model_is_refused(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "s.h5"
    with _recorder(MLP(hidden=16), path) as rec:
        rec.snapshot(0)
    with pytest.raises(StoreError, match=r"existing \[\('fc1', 16, 'flatten'\).*vs new \[\('fc1', 32, 'flatten'\)"):
        _recorder(MLP(hidden=32), path, resume=True)
    with pytest.raises(FileExistsError):
        _recorder(MLP(hidden=16), path)
    with Store(path) as st:
        assert st.n_snapshots == 1


def test_full_queue_blocks_the_training_thread(tmp_path, monkeypatch):
    """Back-pressure: with queue_size=2 and a stalled writer, the third snapshot waits for the writer."""
    torch.manual_seed(0)
    release = threading.Event()
    real = StoreWriter.append
    monkeypatch.setattr(StoreWriter, "append", lambda self, snap: (release.wait(10), real(self, snap))[1])
    rec = _recorder(MLP(), tmp_path / "s.h5", queue_size=2)
    done = []

    def loop():
        for s in range(3):  # 1st: in the writer, 2nd: in the queue, 3rd: blocks
            rec.snapshot(s)
            done.append(s)

    t = threading.Thread(target=loop)
    t.start()
    deadline = time.monotonic() + 10
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert done == [0, 1] and t.is_alive()
    release.set()
    t.join(10)
    assert done == [0, 1, 2]
    rec.close()
    assert rec.n_snapshots == 3


class SeqModel(nn.Module):
    """A tiny sequence classifier whose encoder block returns [batch, tokens, features]."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.block = nn.Sequential(nn.Linear(8, 6), nn.GELU())
        self.head = nn.Linear(6, 4)

    def forward(self, x):  # x: [batch, tokens, 3]
        return self.head(self.block(self.embed(x)).mean(dim=1))


def test_token_mean_reduction_for_sequence_outputs(tmp_path):
    """reductions={'block': 'token_mean'} records the token mean of each feature; channel_mean (asked for: a
    [batch, A, B] output has no automatic reduction) the mean over the last dim."""
    torch.manual_seed(0)
    model = SeqModel()
    x, y = torch.randn(20, 5, 3), torch.arange(20) % 4
    with _recorder(model, tmp_path / "s.h5", layers=["embed", "block"], probe=(x, y),
                   reductions={"bl*": "token_mean", "embed": "channel_mean"}) as rec:
        rec.snapshot(0)
    with torch.no_grad():
        block = model.block(model.embed(x))  # [20, 5, 6]
        embed = model.embed(x)  # [20, 5, 8], channel_mean: the mean over the last dim (5 "channels")
    with Store(tmp_path / "s.h5") as st:
        assert st.layers["block"].reduction == "token_mean" and st.layers["block"].n_neurons == 6
        assert st.layers["embed"].reduction == "channel_mean" and st.layers["embed"].n_neurons == 5
        np.testing.assert_allclose(st.acts("heldout", "block", 0), block.mean(dim=1).numpy(), rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(st.acts("heldout", "embed", 0), embed.mean(dim=2).numpy(), rtol=2e-3, atol=2e-3)


def test_bad_reductions_are_refused(tmp_path):
    """Unknown reduction names and keys that match no selected layer fail before training, naming both."""
    with pytest.raises(ValueError, match=r"Unknown reduction 'mean' for 'fc1'. Allowed: \['flatten', 'channel_mean'"):
        _recorder(MLP(), tmp_path / "a.h5", reductions={"fc1": "mean"})
    with pytest.raises(ValueError, match=r"'reductions' key 'conv\*' matches no selected layer. Selected: \['fc1'"):
        _recorder(MLP(), tmp_path / "b.h5", reductions={"conv*": "flatten"})
    with pytest.raises(ValueError, match=r"reduction 'token_mean' needs outputs with at least 2 dims"):
        _recorder(MLP(), tmp_path / "c.h5", reductions={"fc1": "token_mean"})
    assert not any(tmp_path.iterdir())


class DictOut(nn.Module):
    """Returns a mapping with the logits under a key, like a Hugging Face ModelOutput."""

    def __init__(self):
        super().__init__()
        self.mlp = MLP()

    def forward(self, x):
        return {"hidden": x.mean(1), "logits": self.mlp(x)}


def test_logits_chosen_by_key_or_callable(tmp_path):
    """logits='logits' and a callable pick the logits from a structured output; the stored logits equal them."""
    torch.manual_seed(0)
    model = DictOut()
    x, y = _data(30)
    for i, choice in enumerate(("logits", lambda out: out["logits"])):
        with _recorder(model, tmp_path / f"{i}.h5", layers="mlp.fc*", probe=(x, y), logits=choice) as rec:
            rec.step(0)
        with torch.no_grad():
            ref = model.mlp(x).numpy()
        with Store(tmp_path / f"{i}.h5") as st:
            np.testing.assert_allclose(st.logits("heldout")[0], ref, rtol=1e-6, atol=1e-6)


def test_logits_pointing_at_nothing_is_a_clear_error(tmp_path):
    """A key that is not in the output names the key and the output's type before anything is written."""
    with pytest.raises(TypeError, match="'scores'.*dict"):
        _recorder(DictOut(), tmp_path / "s.h5", layers="mlp.fc*", logits="scores")
    with pytest.raises(TypeError, match="'logits' parameter"):
        _recorder(DictOut(), tmp_path / "s.h5", layers="mlp.fc*", logits=1.0)
    with pytest.raises(ValueError, match=r"logits=3: index 3 is out of range for the 2 entries of the dict"):
        _recorder(DictOut(), tmp_path / "s.h5", layers="mlp.fc*", logits=3)
    assert not (tmp_path / "s.h5").exists()

"""Monte-Carlo dropout measures: values against a hand-run reference, training untouched, refusals."""

import numpy as np
import pytest
import torch
from torch import nn

from topotrace.instrument.confidence import UNCERTAINTY_MEASURES
from topotrace.instrument.recorder import MC_SEED_BASE, ProbeSet, Recorder
from topotrace.instrument.schedules import every
from topotrace.instrument.store import Store

CLASSES = ["a", "b", "c", "d"]


class DropNet(nn.Module):
    def __init__(self, batchnorm=False):
        super().__init__()
        self.fc1 = nn.Linear(10, 16)
        self.bn = nn.BatchNorm1d(16) if batchnorm else nn.Identity()
        self.drop1 = nn.Dropout(0.4)
        self.fc2 = nn.Linear(16, 12)
        self.drop2 = nn.AlphaDropout(0.2)
        self.out = nn.Linear(12, 4)

    def forward(self, x):
        h = self.drop1(torch.relu(self.bn(self.fc1(x))))
        return self.out(self.drop2(torch.relu(self.fc2(h))))


class Boom(nn.Dropout):
    """A dropout module that raises in training mode once armed: fails an MC pass, never the eval pass."""

    armed = False

    def forward(self, x):
        if self.training and self.armed:
            raise RuntimeError("boom")
        return super().forward(x)


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 10, generator=g), torch.randint(0, 4, (n,), generator=g)


def _recorder(model, path, probes=None, **kw):
    if probes is None:
        probes = [ProbeSet("heldout", *_data(37))]
    kw.setdefault("mc_dropout", 4)
    return Recorder(model, path, layers=["fc1", "fc2"], probes=probes, class_names=CLASSES, schedule=every(1), **kw)


def _flags(model):
    return [m.training for m in model.modules()]


def _reference_mc(model, x, step, k, batch_size):
    """The documented rule by hand: seed MC_SEED_BASE + step per probe set, dropout on, K passes per batch."""
    for m in model.modules():
        m.training = isinstance(m, nn.modules.dropout._DropoutNd)
    torch.manual_seed(MC_SEED_BASE + step)
    probs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            z = np.stack([model(x[start : start + batch_size]).numpy() for _ in range(k)]).astype(np.float64)
            e = np.exp(z - z.max(-1, keepdims=True))
            probs.append(e / e.sum(-1, keepdims=True))  # [k, batch, C]
    p = np.concatenate(probs, axis=1)  # [k, n, C]
    mean = p.mean(0)
    h = lambda q: -(q * np.log(q)).sum(-1)  # noqa: E731
    return mean.max(1), h(mean) - h(p).mean(0)


def test_mc_measures_equal_hand_run_reference(tmp_path):
    """mc_prob and mc_mutual_info equal K seeded dropout passes run by hand, per probe set and snapshot."""
    torch.manual_seed(0)
    model = DropNet()
    probes = [ProbeSet("heldout", *_data(37)), ProbeSet("other", *_data(21, seed=1))]
    with _recorder(model, tmp_path / "s.h5", probes=probes, mc_dropout=5, batch_size=16) as rec:
        rec.snapshot(3)
        rec.snapshot(8)
    with Store(tmp_path / "s.h5") as st:
        for p in probes:
            for i, step in enumerate((3, 8)):
                mc_prob, mi = _reference_mc(model, p.x, step, 5, 16)
                np.testing.assert_allclose(st.conf(p.name, "mc_prob")[i], mc_prob, rtol=1e-6, atol=1e-7)
                np.testing.assert_allclose(st.conf(p.name, "mc_mutual_info")[i], mi, rtol=1e-5, atol=1e-7)
        assert not np.array_equal(st.conf("heldout", "mc_prob")[0], st.conf("heldout", "mc_prob")[1])


def test_training_bit_identical_with_mc_dropout(tmp_path):
    """Weights, BatchNorm statistics and the RNG state after training equal those of training without a recorder."""

    def train(rec):
        torch.manual_seed(0)
        model = DropNet(batchnorm=True)
        x, y = _data(64, seed=2)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        r = rec(model) if rec else None
        for step in range(1, 7):
            model.train()
            batch = torch.randperm(64)[:16]
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if r is not None:
                r.step(step)
        if r is not None:
            r.close()
        return model.state_dict(), torch.get_rng_state()

    plain, rng_plain = train(None)
    recorded, rng_recorded = train(lambda m: _recorder(m, tmp_path / "s.h5", mc_dropout=4))
    assert plain.keys() == recorded.keys() and "bn.num_batches_tracked" in plain
    assert all(torch.equal(plain[k], recorded[k]) for k in plain)
    assert torch.equal(rng_plain, rng_recorded)
    with Store(tmp_path / "s.h5") as st:
        assert st.n_snapshots == 6


def test_training_flags_restored_after_mc_pass(tmp_path):
    """Modules deliberately in eval mode before the snapshot (a dropout among them) are so afterwards."""
    torch.manual_seed(0)
    model = DropNet(batchnorm=True)
    with _recorder(model, tmp_path / "s.h5") as rec:
        model.train()
        model.bn.eval()
        model.drop2.eval()
        before = _flags(model)
        rec.snapshot(1)
        assert _flags(model) == before


def test_failing_mc_pass_restores_flags_rng_and_hooks(tmp_path):
    """An MC pass that raises leaves every training flag, the RNG state and the hooks as they were."""
    torch.manual_seed(0)
    model = DropNet()
    model.drop1 = Boom(0.3)
    with _recorder(model, tmp_path / "s.h5") as rec:
        model.train()
        model.fc2.eval()
        before, rng = _flags(model), torch.get_rng_state()
        Boom.armed = True
        try:
            with pytest.raises(RuntimeError, match="boom"):
                rec.snapshot(1)
        finally:
            Boom.armed = False
        assert _flags(model) == before
        assert torch.equal(torch.get_rng_state(), rng)
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_stored_activations_and_logits_are_the_eval_mode_ones(tmp_path):
    """Activations after a dropout module and the logits stored are those of the deterministic eval pass."""
    torch.manual_seed(0)
    model = DropNet()
    x, y = _data(37)
    with _recorder(model, tmp_path / "s.h5", probes=[ProbeSet("heldout", x, y)], act_dtype="float32") as rec:
        rec.snapshot(1)
    acts = {}
    handle = model.fc2.register_forward_hook(lambda m, i, o: acts.__setitem__("fc2", o.clone()))
    model.eval()
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    with Store(tmp_path / "s.h5") as st:
        np.testing.assert_array_equal(st.acts("heldout", "fc2", 0), acts["fc2"].numpy())
        np.testing.assert_array_equal(st.logits("heldout")[0], logits.numpy())


def test_mc_measures_listed_only_with_mc_dropout(tmp_path):
    """The store lists mc_prob and mc_mutual_info (an uncertainty measure) only when mc_dropout > 0."""
    with _recorder(DropNet(), tmp_path / "off.h5", mc_dropout=0):
        pass
    with _recorder(DropNet(), tmp_path / "on.h5", mc_dropout=2):
        pass
    with Store(tmp_path / "off.h5") as off, Store(tmp_path / "on.h5") as on:
        assert "mc_prob" not in off.measures and "mc_mutual_info" not in off.measures
        assert on.measures[-2:] == ("mc_prob", "mc_mutual_info") and on.meta["mc_dropout"]["passes"] == 2
    assert "mc_mutual_info" in UNCERTAINTY_MEASURES and "mc_prob" not in UNCERTAINTY_MEASURES


def test_refused_without_dropout_modules(tmp_path):
    """mc_dropout > 0 on a model without dropout modules is refused at construction, naming the fix."""
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(ValueError, match=r"Recorder\(mc_dropout=5\) needs dropout modules in the model; found none "
                                         r"among its 4 modules\. Add nn\.Dropout layers or set mc_dropout=0\."):
        Recorder(model, tmp_path / "s.h5", layers="0", probes=[ProbeSet("heldout", *_data(8))], class_names=CLASSES,
                 schedule=every(1), mc_dropout=5)
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("value", [-1, True, 2.5])
def test_bad_mc_dropout_values_refused(tmp_path, value):
    """A negative, bool or non-integer mc_dropout is refused with one message naming the parameter."""
    with pytest.raises((TypeError, ValueError), match=rf"The 'mc_dropout' parameter must be an int >= 0 .* "
                                                      rf"Got {value!r} instead\."):
        _recorder(DropNet(), tmp_path / "s.h5", mc_dropout=value)

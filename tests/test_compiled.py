"""Recording a ``torch.compile``d model: no recompilation, eager values, training unchanged, layer names.

The tests compile with Dynamo's ``aot_eager`` backend (Dynamo and AOTAutograd as with inductor, without the
C++ compilation that makes a cold inductor compile take tens of seconds on a CPU); ``bench/bench_record.py``
measures the same with inductor. Dynamo's own counters say what was compiled: a ``CompileCounterWithBackend``
counts the frames its backend received, ``torch._dynamo.utils.counters["frames"]`` every frame Dynamo compiled.
"""

import numpy as np
import pytest
import torch
from torch import nn

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every
from topotrace.instrument.store import Store

from .models import DropoutMLP as MLP

# One xdist work unit (tests/conftest.py): Dynamo, imported by the first test (about 1 s), on one worker only.
pytestmark = pytest.mark.xdist_group("compiled")

CLASSES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module", autouse=True)
def _dynamo():
    """Dynamo, imported when the first test runs (collecting the suite does not import it)."""
    pytest.importorskip("torch._dynamo")


def _counter():
    """A ``CompileCounterWithBackend`` that compiles with ``aot_eager``."""
    from torch._dynamo.testing import CompileCounterWithBackend

    return CompileCounterWithBackend("aot_eager")


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 16)
        self.fc2 = nn.Linear(16, 12)

    def forward(self, x):
        return torch.relu(self.fc2(torch.relu(self.fc1(x))))


class Net(nn.Module):
    """A model whose submodule ``body`` is compiled on its own (``net.body = torch.compile(net.body)``)."""

    def __init__(self):
        super().__init__()
        self.body = Body()
        self.out = nn.Linear(12, 4)

    def forward(self, x):
        return self.out(self.body(x))


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 10, generator=g), torch.randint(0, 4, (n,), generator=g)


def _trainer(net, params, seed=1):
    """One SGD step per call on seeded shuffled batches of 16 (the global RNG draws the batch)."""
    x, y = _data(64, seed)
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)

    def step():
        net.train()
        batch = torch.randperm(64)[:16]
        loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _frames():
    from torch._dynamo.utils import counters

    return counters["frames"]["total"]


def _compiled_run(path, steps=12):
    """Train a compiled MLP for ``steps`` steps; with ``path``, record every step. Returns (model, compiles)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = MLP()
    cc = _counter()
    net = torch.compile(model, backend=cc)
    step = _trainer(net, model.parameters())
    step()  # the first call compiles the training forward
    assert cc.frame_count == 1
    before = (cc.frame_count, _frames())
    rec = None
    if path is not None:
        x, y = _data(30, seed=7)
        rec = Recorder(net, path, layers=["fc1", "_orig_mod.fc2", "out"], probes=[ProbeSet("heldout", x, y)],
                       class_names=CLASSES, schedule=every(1), batch_size=7)  # batches of 7, 7, 7, 7, 2
        rec.step(0)
    for s in range(1, steps + 1):
        step()
        if rec is not None:
            rec.step(s)
    if rec is not None:
        rec.close()
        assert rec.error is None and rec.n_snapshots == steps + 1
    return model, (cc.frame_count - before[0], _frames() - before[1])


@pytest.mark.slow
def test_compiled_model_is_not_recompiled_and_trains_bit_identically(tmp_path):
    """No frame compiled after the recorder's creation; weights equal to compiled training without it."""
    plain, plain_compiles = _compiled_run(None)
    model, compiles = _compiled_run(tmp_path / "s.h5")
    assert compiles == (0, 0) == plain_compiles
    a, b = dict(plain.named_parameters()), dict(model.named_parameters())
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_compiled_model_records_eager_values(tmp_path):
    """The stored activations and logits equal an eager recomputation; names have no ``_orig_mod.`` part."""
    model, _ = _compiled_run(tmp_path / "s.h5", steps=3)
    x, _ = _data(30, seed=7)
    outs, handles = {}, []
    for name in ("fc1", "fc2", "out"):
        def hook(module, inputs, output, name=name):
            outs[name] = output.clone()

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    model.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, 30, 7):  # the recorder's batches: a matmul's rounding may depend on the batch size
            logits = model(x[start : start + 7])
            parts.append({"": logits, **outs})
    for h in handles:
        h.remove()
    ref = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
    with Store(tmp_path / "s.h5") as st:
        assert list(st.layers) == ["fc1", "fc2", "out"]
        for name in ("fc1", "fc2", "out"):
            np.testing.assert_array_equal(st.acts("heldout", name, -1, dtype=None), ref[name].astype(np.float16))
        np.testing.assert_array_equal(st.logits("heldout")[-1], ref[""])


def test_compiled_submodule_runs_eagerly_in_the_probe_pass(tmp_path):
    """A compiled submodule: names with or without ``_orig_mod``, and the probe pass compiles nothing."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = Net()
    eager_body = net.body
    cc = _counter()
    net.body = torch.compile(net.body, backend=cc)
    assert "body._orig_mod.fc1" in dict(net.named_modules())
    step = _trainer(net, net.parameters())
    x, y = _data(30, seed=7)
    before = _frames()
    with Recorder(net, tmp_path / "s.h5", layers=["body._orig_mod.fc1", "body.fc2", "out"],
                  reductions={"body._orig_mod.fc2": "flatten"}, probes=[ProbeSet("heldout", x, y)],
                  class_names=CLASSES, schedule=every(1), batch_size=11) as rec:
        assert list(rec.layers) == ["body.fc1", "body.fc2", "out"]
        assert rec.layers["body.fc1"] is eager_body.fc1
        assert cc.frame_count == 0 and _frames() == before  # the dry pass ran eagerly
        rec.step(0)
        assert cc.frame_count == 0  # so did the probe pass
        for s in range(1, 4):
            step()
            rec.step(s)
    assert cc.frame_count == 1 and _frames() == before + 1  # the training forward of body, once
    with Store(tmp_path / "s.h5") as st:
        assert list(st.layers) == ["body.fc1", "body.fc2", "out"]
        net.eval()
        with torch.no_grad():
            ref = torch.cat([eager_body.fc1(x[start : start + 11]) for start in range(0, 30, 11)])
        np.testing.assert_array_equal(st.acts("heldout", "body.fc1", -1, dtype=None), ref.numpy().astype(np.float16))


def test_unknown_layer_of_a_compiled_model_lists_names_without_orig_mod(tmp_path):
    torch._dynamo.reset()
    net = torch.compile(MLP(), backend="aot_eager")
    x, y = _data(4, seed=0)
    with pytest.raises(ValueError) as err:
        Recorder(net, tmp_path / "s.h5", layers="_orig_mod.fc3", probes=[ProbeSet("heldout", x, y)],
                 class_names=CLASSES, schedule=every(1))
    assert str(err.value) == "Unknown layer '_orig_mod.fc3'. Available: ['fc1', 'act1', 'drop', 'fc2', 'out']"
    assert not (tmp_path / "s.h5").exists()


def test_module_compiled_in_place_runs_eagerly_in_the_probe_pass(tmp_path):
    """``model.compile()``: the probe passes compile nothing; the training forward compiles once."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = MLP()
    cc = _counter()
    model.compile(backend=cc)
    step = _trainer(model, model.parameters())
    x, y = _data(30, seed=7)
    with Recorder(model, tmp_path / "s.h5", layers="fc*", probes=[ProbeSet("heldout", x, y)], class_names=CLASSES,
                  schedule=every(1), batch_size=9) as rec:
        rec.step(0)
        assert cc.frame_count == 0
        for s in range(1, 4):
            step()
            rec.step(s)
    assert cc.frame_count == 1

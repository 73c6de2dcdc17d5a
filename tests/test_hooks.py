"""Scoped forward hooks, output capture and reduction, and layer selection."""

import numpy as np
import pytest
import torch
from torch import nn

from topotrace.instrument.hooks import capture, forward_hooks
from topotrace.instrument.layers import reduce_output, reduction_for, resolve_layers, unwrap


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 5)
        self.out = nn.Linear(5, 3)
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_hooks_gone_after_normal_exit():
    net = Net()
    seen = []
    with forward_hooks([(m, lambda mod, i, o: seen.append(o.shape)) for m in (net.fc1, net.fc2, net.out)]):
        assert len(net.fc1._forward_hooks) == 1
        net(torch.zeros(4, 6))
    assert seen == [torch.Size([4, 8]), torch.Size([4, 5]), torch.Size([4, 3])]
    assert _no_hooks(net)
    net(torch.zeros(4, 6))
    assert len(seen) == 3


def test_hooks_gone_after_exception_inside_block():
    net = Net()
    with pytest.raises(KeyError, match="boom"):
        with capture(resolve_layers(net, ["fc1", "fc2", "out"])) as cap:
            cap.begin({}, 2, 0)
            net(torch.zeros(2, 6))
            raise KeyError("boom")
    assert _no_hooks(net)


def test_hooks_gone_after_exception_in_a_hook():
    net = Net()

    def bad(mod, i, o):
        raise ValueError("hook failed")

    with pytest.raises(ValueError, match="hook failed"):
        with forward_hooks([(net.fc1, lambda *a: None), (net.fc2, bad)]):
            net(torch.zeros(2, 6))
    assert _no_hooks(net)


def run_batches(cap, model, x, batch):
    """Run ``x`` through ``model`` in batches, capturing into fresh arrays; returns them."""
    dest = {}
    for start in range(0, len(x), batch):
        cap.begin(dest, len(x), start)
        model(x[start : start + batch])
        cap.end_batch()
    return dest


def test_capture_is_immune_to_later_inplace_changes():
    """An output changed in place after its hook (ReLU(inplace=True) after a Linear) is recorded as it was."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 6)
    model = nn.Sequential(lin, nn.ReLU(inplace=True), nn.Linear(6, 3), nn.ReLU())
    x = torch.randn(10, 4)
    with torch.no_grad():
        ref = x @ lin.weight.T + lin.bias
    assert (ref < 0).any()
    with torch.no_grad(), capture({"0": lin, "2": model[2]}) as cap:
        dest = run_batches(cap, model, x, batch=4)
    np.testing.assert_allclose(dest["0"], ref.numpy(), rtol=1e-6, atol=1e-6)
    assert cap.sample_shapes == {"0": (6,), "2": (3,)}


def test_capture_reuses_given_arrays():
    """Arrays handed in with begin() are filled in place, batch rows at their offsets."""
    lin = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    buf = np.full((5, 2), np.nan, np.float32)
    dest = {"lin": buf}
    with torch.no_grad(), capture({"lin": lin}) as cap:
        for start in (0, 2, 4):
            cap.begin(dest, 5, start)
            lin(x[start : start + 2])
            cap.end_batch()
    with torch.no_grad():
        expected = lin(x).numpy()
    assert dest["lin"] is buf
    np.testing.assert_allclose(buf, expected, rtol=1e-6)


def test_capture_conv_channel_mean_and_tuple_output():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    lstm = nn.LSTM(5, 4, batch_first=True)  # returns (output, (h, c)); output is [batch, T, 4]
    x = torch.randn(6, 2, 7, 7)
    seq = torch.randn(6, 9, 5)
    dest = {}
    # the LSTM's output holds 3 tensors and is [batch, T, 4]: both choices are named
    with torch.no_grad(), capture({"conv": conv, "lstm": lstm}, {"lstm": "token_mean"}, outputs={"lstm": 0}) as cap:
        cap.begin(dest, 6, 0)
        y = conv(x)
        o, _ = lstm(seq)
        cap.end_batch()
    np.testing.assert_allclose(dest["conv"], y.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dest["lstm"], o.mean(dim=1).numpy(), rtol=1e-5, atol=1e-6)
    assert cap.reductions() == {"conv": "channel_mean", "lstm": "token_mean"}
    assert cap.sample_shapes == {"conv": (3, 7, 7), "lstm": (9, 4)}


def test_end_batch_names_layers_that_did_not_run():
    net = Net()
    with capture(resolve_layers(net, ["fc1", "unused"])) as cap:
        cap.begin({}, 2, 0)
        net(torch.zeros(2, 6))
        with pytest.raises(RuntimeError, match=r"Layers \['unused'\] did not run .* fused fast path"):
            cap.end_batch()
    assert _no_hooks(net)


def test_end_batch_refuses_a_module_run_twice():
    lin = nn.Linear(3, 3)
    with capture({"lin": lin}) as cap:
        cap.begin({}, 1, 0)
        lin(lin(torch.zeros(1, 3)))
        with pytest.raises(RuntimeError, match=r"\['lin'\] ran more than once"):
            cap.end_batch()


def test_reduce_output_shapes():
    assert reduce_output(torch.ones(4, 3, 5, 5)).shape == (4, 3)
    assert reduce_output(torch.ones(4, 2, 3, 5, 5)).shape == (4, 2)
    assert reduce_output(torch.ones(4, 3, 5), "channel_mean").shape == (4, 3)
    assert reduce_output(torch.ones(4, 3, 5), "token_mean").shape == (4, 5)
    assert reduce_output(torch.ones(4, 7)).shape == (4, 7)
    assert reduce_output(torch.ones(4)).shape == (4, 1)
    assert reduction_for((3, 5, 5)) == "channel_mean"
    assert reduction_for((7,)) == "flatten"
    with pytest.raises(ValueError, match="no automatic reduction"):  # [batch, A, B]: tokens or channels?
        reduce_output(torch.ones(4, 3, 5))


def test_unknown_layer_lists_available_names():
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(2, 2))
    model.add_module("fc2", nn.Linear(2, 2))
    model.add_module("out", nn.Linear(2, 2))
    with pytest.raises(ValueError) as err:
        resolve_layers(model, "fc3")
    assert str(err.value) == "Unknown layer 'fc3'. Available: ['fc1', 'fc2', 'out']"
    with pytest.raises(ValueError, match=r"Layer pattern 'conv\*' matches no layer. Available: \['fc1'"):
        resolve_layers(model, ["fc1", "conv*"])


def test_selection_by_name_glob_list_and_predicate():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Linear(2, 2)
            self.norm = nn.LayerNorm(2)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.ModuleList([Block(), Block()])
            self.head = nn.Linear(2, 2)

    m = Encoder()
    assert list(resolve_layers(m, "head")) == ["head"]
    assert list(resolve_layers(m, "encoder.*.mlp")) == ["encoder.0.mlp", "encoder.1.mlp"]
    # '*' stays within one dotted part; '**' crosses dots
    assert list(resolve_layers(m, "encoder*")) == ["encoder"]
    assert list(resolve_layers(m, "encoder.*")) == ["encoder.0", "encoder.1"]
    assert list(resolve_layers(m, "encoder.**")) == ["encoder.0", "encoder.0.mlp", "encoder.0.norm", "encoder.1",
                                                     "encoder.1.mlp", "encoder.1.norm"]
    assert list(resolve_layers(m, "encoder.[!0].?lp")) == ["encoder.1.mlp"]
    # order follows named_modules(), whatever the order asked for
    assert list(resolve_layers(m, ["head", "encoder.1.norm"])) == ["encoder.1.norm", "head"]
    picked = resolve_layers(m, lambda name, mod: isinstance(mod, nn.Linear))
    assert list(picked) == ["encoder.0.mlp", "encoder.1.mlp", "head"]
    assert picked["head"] is m.head
    with pytest.raises(ValueError, match="selected no module"):
        resolve_layers(m, lambda name, mod: False)
    with pytest.raises(TypeError, match="'layers' parameter"):
        resolve_layers(m, 3)
    with pytest.raises(ValueError, match="empty list"):
        resolve_layers(m, [])


def test_unwrap_data_parallel():
    net = Net()
    wrapped = nn.DataParallel(net)
    assert unwrap(wrapped) is net
    assert list(resolve_layers(unwrap(wrapped), "fc*")) == ["fc1", "fc2"]
    with pytest.raises(TypeError, match="'model'"):
        unwrap("net")

"""Which tensor is the logits and how a layer output becomes neurons: chosen by the user, never guessed.

Every refusal happens in Recorder.__init__, in one line naming the layer, the shapes and what to pass, before
any file (or its ``.creating`` twin) exists.
"""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from topotrace.instrument.layers import reduction_for
from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every
from topotrace.instrument.store import Store

CLASSES = ["a", "b", "c", "d"]


def _data(n=12, shape=(6,), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.arange(n) % 4


def _recorder(model, path, layers, x, y, **kw):
    return Recorder(model, path, layers=layers, probes=[ProbeSet("heldout", x, y)], class_names=CLASSES,
                    schedule=every(1), act_dtype="float32", batch_size=5, **kw)


def _refused(exc, model, tmp_path, layers, x, y, **kw):
    """Recorder(...) raises ``exc``; returns its one-line message after checking that nothing was written."""
    path = tmp_path / "store.h5"
    with pytest.raises(exc) as err:
        _recorder(model, path, layers, x, y, **kw)
    assert not path.exists() and not path.with_name("store.h5.creating").exists()
    assert list(tmp_path.iterdir()) == []
    msg = str(err.value)
    assert "\n" not in msg
    return msg


class AuxLogits(nn.Module):
    """Returns (aux, logits); aux has as many columns as there are classes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.aux = nn.Linear(8, 4)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return self.aux(h), self.head(h)


def test_two_tensor_output_without_logits_is_refused(tmp_path):
    """A (aux, logits) output with logits unset is refused, both candidates listed with their shapes."""
    x, y = _data()
    msg = _refused(ValueError, AuxLogits(), tmp_path, "fc", x, y)
    assert msg == ("The model returns 2 tensors: [0] shape (2, 4), [1] shape (2, 4). Pass logits=<index> (or a "
                   "key/callable) to say which are the logits.")


def test_logits_index_records_the_chosen_tensor(tmp_path):
    """logits=1: the stored logits, predictions and losses are those of the head, recomputed by hand."""
    torch.manual_seed(0)
    model = AuxLogits()
    x, y = _data()
    with _recorder(model, tmp_path / "s.h5", "fc", x, y, logits=1) as rec:
        rec.step(0)
    with torch.no_grad():
        h = torch.clamp(x @ model.fc.weight.T + model.fc.bias, min=0)  # [12, 8]
        ref = (h @ model.head.weight.T + model.head.bias).numpy()  # [12, 4]
        aux = (h @ model.aux.weight.T + model.aux.bias).numpy()
    assert not np.allclose(ref, aux, atol=1e-2)
    z = ref.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    with Store(tmp_path / "s.h5") as st:
        np.testing.assert_allclose(st.logits("heldout")[0], ref, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(st.pred("heldout")[0], ref.argmax(1))
        np.testing.assert_allclose(st.loss("heldout")[0], -np.log(p[np.arange(12), y.numpy()]), rtol=1e-5)


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return {"features": x[:, :4] * 2, "logits": self.fc(x)}


def test_dict_output_needs_a_key(tmp_path):
    torch.manual_seed(0)
    model = DictOut()
    x, y = _data()
    msg = _refused(ValueError, model, tmp_path, "fc", x, y)
    assert msg == ("The model returns 2 tensors: ['features'] shape (2, 4), ['logits'] shape (2, 4). Pass "
                   "logits=<key> (or an index/callable) to say which are the logits.")
    with _recorder(model, tmp_path / "s.h5", "fc", x, y, logits="logits") as rec:
        rec.step(0)
    with Store(tmp_path / "s.h5") as st:
        with torch.no_grad():
            ref = (x @ model.fc.weight.T + model.fc.bias).numpy()
        np.testing.assert_allclose(st.logits("heldout")[0], ref, rtol=1e-6, atol=1e-6)


@dataclasses.dataclass
class Output:
    features: torch.Tensor  # [batch, 8]
    logits: torch.Tensor  # [batch, 4]


class DataclassOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = self.fc(x)
        return Output(h, self.head(h))


@pytest.mark.parametrize("choice", ["logits", 1, lambda out: out.logits])
def test_dataclass_output_by_attribute_index_or_callable(tmp_path, choice):
    torch.manual_seed(0)
    model = DataclassOut()
    x, y = _data()
    with _recorder(model, tmp_path / "s.h5", "fc", x, y, logits=choice) as rec:
        rec.step(0)
    with torch.no_grad():
        ref = ((x @ model.fc.weight.T + model.fc.bias) @ model.head.weight.T + model.head.bias).numpy()
    with Store(tmp_path / "s.h5") as st:
        np.testing.assert_allclose(st.logits("heldout")[0], ref, rtol=1e-5, atol=1e-6)


def test_dataclass_output_without_logits_is_refused(tmp_path):
    x, y = _data()
    msg = _refused(ValueError, DataclassOut(), tmp_path, "fc", x, y)
    assert msg == ("The model returns 2 tensors: .features shape (2, 8), .logits shape (2, 4). Pass "
                   "logits=<attribute> (or an index/callable) to say which are the logits.")


@pytest.mark.xdist_group("hf")  # on the worker that imports transformers for tests/test_hf.py (tests/conftest.py)
def test_hf_model_output_needs_logits_when_it_holds_more(tmp_path):
    """A ModelOutput holding loss-free logits and hidden states: refused unset, recorded with logits='logits'."""
    outputs = pytest.importorskip("transformers.modeling_outputs")

    class HFLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 4)

        def forward(self, x):
            return outputs.SequenceClassifierOutput(logits=self.fc(x), hidden_states=(x,))

    torch.manual_seed(0)
    model = HFLike()
    x, y = _data()
    msg = _refused(ValueError, model, tmp_path, "fc", x, y)
    assert msg.startswith("The model returns 2 tensors: ['logits'] shape (2, 4), ['hidden_states'][0] shape (2, 6).")
    for i, choice in enumerate(("logits", 0)):
        with _recorder(model, tmp_path / f"{i}.h5", "fc", x, y, logits=choice) as rec:
            rec.step(0)
        with Store(tmp_path / f"{i}.h5") as st, torch.no_grad():
            np.testing.assert_allclose(st.logits("heldout")[0], model.fc(x).numpy(), rtol=1e-6, atol=1e-6)


class OneTensorTuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return (self.fc(x), None)


def test_single_tensor_in_a_tuple_needs_no_choice(tmp_path):
    x, y = _data()
    with _recorder(OneTensorTuple(), tmp_path / "s.h5", "fc", x, y) as rec:
        assert rec.snapshot(0)


class TokenLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):  # x: [batch, 5, 6] -> [batch, 5, 4], per-token logits
        return self.fc(x)


def test_logits_of_the_wrong_shape_are_refused(tmp_path):
    x, y = _data(shape=(5, 6))
    msg = _refused(ValueError, TokenLogits(), tmp_path, "fc", x, y, reductions={"fc": "token_mean"})
    assert msg == ("The logits (the model's output) must have shape (batch, n_classes) with batch = 2. Got shape "
                   "(2, 5, 4) for probe set 'heldout'. Pass logits= (an index, key or callable) that gives the "
                   "(batch, n_classes) logits.")


def test_logits_selectors_that_point_at_nothing(tmp_path):
    x, y = _data()
    msg = _refused(TypeError, AuxLogits(), tmp_path, "fc", x, y, logits="logits")
    assert msg == ("logits='logits': no key or attribute 'logits' in the tuple that the model returns. It holds "
                   "[0] shape (2, 4), [1] shape (2, 4).")
    msg = _refused(TypeError, OneTensorTuple(), tmp_path, "fc", x, y, logits=1)
    assert msg == "logits=1 must give a tensor. Got NoneType from the tuple that the model returns."
    msg = _refused(ValueError, AuxLogits(), tmp_path, "fc", x, y, logits=2)
    assert msg.startswith("logits=2: index 2 is out of range for the 2 entries of the tuple that the model returns.")
    msg = _refused(TypeError, TokenLogits(), tmp_path, "fc", x, y, logits=0)
    assert msg == ("logits=0 picks from a tuple, list, mapping or dataclass output, but the model returns a single "
                   "tensor of shape (2, 4). Leave it unset.")
    with pytest.raises(TypeError, match=r"The 'logits' parameter must be None, an int index"):
        _recorder(AuxLogits(), tmp_path / "s.h5", "fc", x, y, logits=True)


class Tokens(nn.Module):
    """A sequence classifier whose ``block`` returns [batch, tokens, features]."""

    def __init__(self):
        super().__init__()
        self.block = nn.Linear(3, 6)
        self.head = nn.Linear(6, 4)

    def forward(self, x):  # x: [batch, 5, 3]
        return self.head(torch.tanh(self.block(x)).mean(dim=1))


def test_token_features_output_is_refused_listing_the_choices(tmp_path):
    x, y = _data(shape=(5, 3))
    msg = _refused(ValueError, Tokens(), tmp_path, "block", x, y)
    assert msg == ("Layer 'block' outputs [batch, 5, 6], which has no automatic reduction (tokens x features, or "
                   "channels x length?). Pass reductions={'block': <reduction>}: 'token_mean' gives 6 neurons (the "
                   "mean over 5 tokens), 'channel_mean' 5 neurons (the mean over 6 positions), 'flatten' 30 neurons.")


def test_token_mean_equals_numpy_mean_over_tokens(tmp_path):
    torch.manual_seed(0)
    model = Tokens()
    x, y = _data(shape=(5, 3))
    with _recorder(model, tmp_path / "s.h5", "block", x, y, reductions={"block": "token_mean"}) as rec:
        rec.step(0)
    w, b = model.block.weight.detach().numpy(), model.block.bias.detach().numpy()
    ref = (x.numpy() @ w.T + b).mean(axis=1)  # [12, 5, 6] -> [12, 6]
    with Store(tmp_path / "s.h5") as st:
        la = st.layers["block"]
        assert (la.reduction, la.n_neurons, la.output_shape) == ("token_mean", 6, (5, 6))
        np.testing.assert_allclose(st.acts("heldout", "block", 0), ref, rtol=1e-5, atol=1e-6)


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.head = nn.Linear(3, 4)

    def forward(self, x):  # x: [batch, 1, 6, 6]
        return self.head(self.conv(x).mean(dim=(2, 3)))


def test_conv_map_is_channel_mean_automatically(tmp_path):
    torch.manual_seed(0)
    model = Conv()
    x, y = _data(shape=(1, 6, 6))
    with _recorder(model, tmp_path / "s.h5", "conv", x, y) as rec:
        rec.step(0)
    w, b = model.conv.weight.detach().numpy(), model.conv.bias.detach().numpy()  # [3, 1, 3, 3], [3]
    xs = x.numpy()[:, 0]
    windows = np.lib.stride_tricks.sliding_window_view(xs, (3, 3), axis=(1, 2))  # [12, 4, 4, 3, 3]
    maps = np.einsum("nijkl,ckl->ncij", windows, w[:, 0]) + b[None, :, None, None]  # [12, 3, 4, 4]
    with Store(tmp_path / "s.h5") as st:
        assert st.layers["conv"].reduction == "channel_mean" and st.layers["conv"].n_neurons == 3
        np.testing.assert_allclose(st.acts("heldout", "conv", 0), maps.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    assert reduction_for((3, 4, 4, 4)) == "channel_mean"  # [batch, C, D, H, W]: 3-D conv maps too


class Gate(nn.Module):
    """Returns (out, weights), like an attention module."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)

    def forward(self, x):
        weights = torch.sigmoid(self.fc(x))  # [batch, 8]
        return x.repeat(1, 2)[:, :8] * weights, weights


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = Gate()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.gate(x)[0])


def test_layer_with_two_tensors_needs_outputs(tmp_path):
    torch.manual_seed(0)
    model = Gated()
    x, y = _data()
    msg = _refused(ValueError, model, tmp_path, "gate", x, y)
    assert msg == ("Layer 'gate' returns 2 tensors: [0] shape (2, 8), [1] shape (2, 8). Pass outputs={'gate': "
                   "<index>} (or a key/callable) to say which to record.")
    with _recorder(model, tmp_path / "s.h5", "gate", x, y, outputs={"ga*": 1}) as rec:
        rec.step(0)
    with torch.no_grad():
        ref = torch.sigmoid(x @ model.gate.fc.weight.T + model.gate.fc.bias).numpy()
    with Store(tmp_path / "s.h5") as st:
        np.testing.assert_allclose(st.acts("heldout", "gate", 0), ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"The 'outputs' key 'attn' matches no selected layer. Selected: \['gate'\]"):
        _recorder(model, tmp_path / "t.h5", "gate", x, y, outputs={"attn": 0})
    with pytest.raises(TypeError, match=r"The 'outputs' parameter must map layer names or globs"):
        _recorder(model, tmp_path / "t.h5", "gate", x, y, outputs={"gate": 1.5})
    assert not (tmp_path / "t.h5").exists()


def test_callbacks_pass_logits_and_outputs_through():
    from topotrace.integrations._recorder_args import RECORDER_KWARGS, check_recorder_kwargs

    assert {"logits", "outputs", "reductions"} <= set(RECORDER_KWARGS)
    check_recorder_kwargs({"logits": 1, "outputs": {"attn": 0}, "reductions": {"attn": "token_mean"}})


@pytest.mark.xdist_group("lightning")  # on the worker that imports Lightning for tests/test_lightning.py
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:The 'train_dataloader' does not have many workers:UserWarning")
def test_lightning_callback_with_aux_logits(tmp_path):
    """The Lightning callback refuses the (aux, logits) module unless told, and records the head with logits=1."""
    L = pytest.importorskip("lightning.pytorch")
    from topotrace.integrations.lightning import TopotraceCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = AuxLogits()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0])[1], batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = _data(20)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=10)
    probe = ProbeSet("heldout", x[:12], y[:12])

    def fit(path, **kw):
        torch.manual_seed(0)
        module = Module()
        cb = TopotraceCallback(path, layers="net.fc", probes=[probe], class_names=CLASSES, schedule=every(1), **kw)
        L.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, callbacks=[cb]).fit(module, loader)
        return module

    with pytest.raises(ValueError, match=r"The model returns 2 tensors: \[0\] shape \(2, 4\), \[1\] shape \(2, 4\)"):
        fit(tmp_path / "a.h5")
    assert not (tmp_path / "a.h5").exists()
    module = fit(tmp_path / "b.h5", logits=1)
    with Store(tmp_path / "b.h5") as st, torch.no_grad():
        assert st.steps.tolist() == [0, 1, 2]
        np.testing.assert_allclose(st.logits("heldout")[-1], module.net(x[:12])[1].numpy(), rtol=1e-6, atol=1e-6)

"""The store's dtype and the training's precision: float16 overflow counted and warned about, autocast mirrored."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from topotrace.instrument.hooks import capture, overflow_limit
from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every
from topotrace.instrument.store import Store

from .models import TwoLayerMLP as MLP

CLASSES = ["a", "b", "c", "d"]


class Loud(nn.Module):
    """``big`` multiplies ``fc1``'s output by 1e5: finite float32 values far beyond float16's 65504."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 16)
        self.big = nn.Linear(16, 8)
        self.out = nn.Linear(8, 4)
        with torch.no_grad():
            self.big.weight.mul_(1e5)
            self.out.weight.mul_(1e-5)

    def forward(self, x):
        return self.out(self.big(self.fc1(x)))


def _data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 10, generator=g), torch.randint(0, 4, (n,), generator=g)


def _recorder(model, path, layers=("fc1", "big"), **kw):
    x, y = _data()
    return Recorder(model, path, layers=list(layers), probes=[ProbeSet("heldout", x, y)], class_names=CLASSES,
                    schedule=every(1), batch_size=8, **kw)


def test_overflow_limit():
    """Values from 65520 round to inf in float16; below it they round to 65504."""
    limit = overflow_limit("float16")
    assert limit == 65520.0
    x = torch.tensor([65504.0, np.nextafter(limit, 0, dtype=np.float32), limit])
    assert x.to(torch.float16).tolist() == [65504.0, 65504.0, float("inf")]
    assert torch.tensor([overflow_limit("float32")], dtype=torch.float64).to(torch.float32).isinf().all()
    assert overflow_limit("int64") is None


def test_capture_counts_only_finite_values_that_overflow():
    """inf and NaN in the model are not overflow; ±65520 and beyond are, 65519 is not."""
    layer = nn.Identity()
    x = torch.tensor([[float("inf"), float("nan"), 7e4, -7e4], [65519.0, 65520.0, 1.0, -float("inf")]])
    with capture({"layer": layer}, dtype=np.float16) as cap:
        cap.begin({}, 2, 0)
        layer(x)
        cap.end_batch()
        copies = cap.finish()
    assert copies.ready() and copies.event is None
    assert copies.overflow() == {"layer": 3}
    with capture({"layer": layer}, dtype=np.float32) as cap:  # float32 holds every float32 value
        cap.begin({}, 2, 0)
        layer(x)
        cap.end_batch()
        assert cap.finish().overflow() == {}


def test_overflowing_layer_is_warned_about_once_and_counted(tmp_path):
    """One warning naming the layer and act_dtype="float32"; the overflowed values count as non-finite."""
    torch.manual_seed(0)
    model = Loud()
    x, _ = _data()
    with torch.no_grad():
        big = model.big(model.fc1(x))  # [30, 8] float32, finite
    n_over = int((big.abs() >= 65520).sum())
    assert torch.isfinite(big).all() and 0 < n_over < big.numel()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _recorder(model, tmp_path / "s.h5") as rec:
            for step in range(3):
                rec.step(step)
    ours = [w for w in caught if "float16 range" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    message = str(ours[0].message)
    assert ours[0].category is RuntimeWarning
    assert "Layer 'big'" in message and f"{n_over} at step 0" in message and 'act_dtype="float32"' in message
    assert ours[0].filename == __file__  # points at the training loop's rec.step
    with Store(tmp_path / "s.h5") as st:
        counts = st.nonfinite("heldout")
        assert counts["big"].tolist() == [n_over] * 3 and counts["fc1"].tolist() == [0] * 3
        assert counts["logits"].tolist() == [0] * 3
        stored = st.acts("heldout", "big", -1)
        np.testing.assert_array_equal(np.isinf(stored), (big.abs() >= 65520).numpy())


def test_float32_store_keeps_what_float16_cannot(tmp_path):
    torch.manual_seed(0)
    model = Loud()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with _recorder(model, tmp_path / "s.h5", act_dtype="float32") as rec:
            rec.step(0)
    x, _ = _data()
    with torch.no_grad():
        ref = model.big(model.fc1(x)).numpy()
    with Store(tmp_path / "s.h5") as st:
        assert st.nonfinite("heldout")["big"].tolist() == [0]
        np.testing.assert_array_equal(st.acts("heldout", "big", 0), ref)


def _reference(model, x, batch=8, **autocast):
    """Logits and fc1's output, batch by batch as the recorder runs them, under ``torch.autocast(**autocast)``."""
    model.eval()
    logits, fc1 = [], []
    with torch.no_grad(), torch.autocast("cpu", **autocast):
        for start in range(0, len(x), batch):
            h = model.fc1(x[start : start + batch])
            fc1.append(h)
            logits.append(model.fc2(torch.relu(h)))
    return torch.cat(logits).float().numpy(), torch.cat(fc1)


def test_autocast_records_what_bfloat16_training_computes(tmp_path):
    """Recorder(autocast=torch.bfloat16): stored logits equal a bfloat16 autocast recomputation, exactly."""
    torch.manual_seed(0)
    model = MLP()
    x, _ = _data()
    with _recorder(model, tmp_path / "s.h5", layers=["fc1"], autocast=torch.bfloat16) as rec:
        rec.step(0)
    logits, fc1 = _reference(model, x, dtype=torch.bfloat16)
    assert fc1.dtype == torch.bfloat16
    plain, _ = _reference(model, x, enabled=False)
    assert not np.array_equal(logits, plain)  # bfloat16 does change the logits
    with Store(tmp_path / "s.h5") as st:
        np.testing.assert_array_equal(st.logits("heldout")[0], logits)
        np.testing.assert_array_equal(st.acts("heldout", "fc1", 0, dtype=None), fc1.to(torch.float16).numpy())


def test_without_autocast_the_pass_runs_in_float32_inside_an_autocast_block(tmp_path):
    """The default records the model's own precision, also when called inside the training's autocast block."""
    torch.manual_seed(0)
    model = MLP()
    x, _ = _data()
    with _recorder(model, tmp_path / "s.h5", layers=["fc1"]) as rec, torch.autocast("cpu", dtype=torch.bfloat16):
        rec.step(0)
        assert torch.is_autocast_enabled("cpu")  # the caller's block is left as it was
    plain, _ = _reference(model, x, enabled=False)
    with Store(tmp_path / "s.h5") as st:
        np.testing.assert_array_equal(st.logits("heldout")[0], plain)


@pytest.mark.parametrize("value, error, match", [
    ("bfloat16", TypeError, "Got str instead"),
    (torch.float64, ValueError, "Got torch.float64 instead"),
])
def test_autocast_argument_errors(tmp_path, value, error, match):
    with pytest.raises(error, match=rf"The 'autocast' parameter must be None or a torch.dtype among .*{match}"):
        _recorder(MLP(), tmp_path / "s.h5", layers=["fc1"], autocast=value)
    assert not (tmp_path / "s.h5").exists()


def _train_autocast(model, steps, rec=None):
    """SGD under bfloat16 autocast; the recorder is called inside the autocast block, before the forward pass."""
    x, y = _data(64, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        batch = torch.randperm(64)[:16]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if rec is not None:
                rec.step(step)
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
        opt.step()
        opt.zero_grad()
    return model


def test_autocast_training_is_bit_identical_with_and_without_recorder(tmp_path):
    """A probe pass inside the training's autocast block leaves no cached no-grad weight casts behind."""
    torch.manual_seed(0)
    plain = _train_autocast(MLP(), 6)
    torch.manual_seed(0)
    model = MLP()
    with _recorder(model, tmp_path / "s.h5", layers=["fc1"], autocast=torch.bfloat16) as rec:
        _train_autocast(model, 6, rec)
    assert rec.n_snapshots == 6
    for (name, a), b in zip(plain.named_parameters(), model.parameters()):
        assert torch.equal(a, b), name

"""The built-in models (topotrace.models): each kind trains, records and analyses; BatchNorm training is untouched by
the recorder; the transformer's recorded values are the token means; bad kinds and parameters are one line."""

import numpy as np
import pytest
import torch
from torch import nn

from topotrace.config import MODEL_KINDS, load_config
from topotrace.data import load_dataset, stratified_indices, train_subset
from topotrace.instrument.store import Store
from topotrace.models import BUILDERS, build_model
from topotrace.train import check_run_config, load_checkpoint, train_run


def tiny(tmp_path, kind: str, source: str, name: str = "run", **model) -> dict:
    """A few seconds' run: 5 training samples per class, 2 epochs of 4 steps, 4 snapshots, 3 probe samples a class."""
    return load_config(None, {
        "run": {"name": name, "out_dir": str(tmp_path)},
        "data": {"source": source, "heldout_per_class": 3, "train_probe_per_class": 2, "train_per_class": 5},
        "model": {"kind": kind, **model},
        "train": {"epochs": 2, "batch_size": 16},
        "record": {"snapshots": 4, "act_dtype": "float32"},
    })


KINDS = [("mlp", "mnist1d", {}, ["hidden1", "hidden2"], [128, 64], "flatten"),
         ("cnn", "digits", {"channels": [4, 6]}, ["conv1", "conv2"], [4, 6], "channel_mean"),
         ("cnn", "mnist1d", {"channels": [4, 6, 5], "kernel_size": 5}, ["conv1", "conv2", "conv3"], [4, 6, 5],
          "channel_mean"),
         ("resnet", "mnist1d", {"channels": [4, 8], "blocks": 2}, ["block1", "block2", "block3", "block4"],
          [4, 4, 8, 8], "channel_mean"),
         ("transformer", "digits", {"d_model": 8, "heads": 2, "blocks": 2, "ff": 16}, ["block1", "block2"], [8, 8],
          "token_mean"),
         ("transformer", "mnist1d", {"d_model": 8, "heads": 2, "blocks": 1, "ff": 16, "kernel_size": 5}, ["block1"],
          [8], "token_mean")]


@pytest.mark.parametrize("kind, source, params, layers, widths, reduction", KINDS,
                         ids=[f"{k[0]}-{k[1]}" for k in KINDS])
@pytest.mark.slow
def test_each_kind_trains_records_and_analyses(tmp_path, kind, source, params, layers, widths, reduction):
    """Default layers of the kind, one neuron per unit / channel / feature, the kind in the store's metadata."""
    from topotrace.analysis.pipeline import analyze

    cfg = tiny(tmp_path, kind, source, **params)
    assert cfg["record"]["layers"] == layers  # record.layers not given: the kind's default layers
    summary = train_run(cfg)
    assert summary.error is None and summary.n_snapshots == summary.expected_snapshots == 4
    with Store(summary.store_path) as st:
        assert list(st.layers) == layers
        assert [st.layers[n].n_neurons for n in layers] == widths
        assert {st.layers[n].reduction for n in layers} == {reduction}
        assert st.meta["model_kind"] == kind and st.meta["model_description"].startswith(kind + ":")
        assert st.meta["config"]["model"]["kind"] == kind
        conv_dims = {"digits": 2, "mnist1d": 1}[source]
        if kind == "cnn":
            assert f"Conv{conv_dims}d" in st.meta["model_summary"]
            assert len(st.layers["conv1"].output_shape) == 1 + conv_dims  # [C, L] or [C, H, W] before the mean
        if kind == "transformer":
            assert tuple(st.layers["block1"].output_shape) == ((8, 8) if source == "digits" else (40, 8))
    res = analyze(summary.store_path)
    assert list(res.layers) == layers and res.n_snapshots == 4
    assert np.isfinite(res.curves["heldout"]["accuracy"]).all()


@pytest.mark.slow
def test_batchnorm_training_is_bit_identical_with_and_without_the_recorder(tmp_path):
    """The ResNet (BatchNorm everywhere) trained by train_run, recording 4 snapshots, ends with exactly the weights
    and running statistics of the same training loop written here without any recorder."""
    cfg = tiny(tmp_path, "resnet", "digits", channels=[4, 8])
    cfg["train"].update(epochs=3, batch_size=8)
    summary = train_run(cfg)
    recorded = load_checkpoint(summary.run_dir / "checkpoint.npz")["model"]

    seed, d, t = cfg["run"]["seed"], cfg["data"], cfg["train"]
    torch.manual_seed(seed)
    data = load_dataset("digits", "", d["test_fraction"], seed)
    idx = train_subset(data.y_train, d["train_per_class"], seed + 2)
    x, y = torch.from_numpy(data.x_train[idx]), torch.from_numpy(data.y_train[idx])
    model = build_model(cfg["model"], (1, 8, 8), 10)
    opt = torch.optim.SGD(model.parameters(), lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    for _ in range(t["epochs"]):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(order), t["batch_size"]):
            b = order[start : start + t["batch_size"]]
            model.train()
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    plain = model.state_dict()
    assert any("running_mean" in k for k in plain) and recorded.keys() == plain.keys()
    for k in plain:
        assert torch.equal(recorded[k], plain[k]), k
    assert int(plain["block1.bn1.num_batches_tracked"]) == summary.steps  # probe passes did not update BN


@pytest.mark.slow
@pytest.mark.parametrize("source", ["digits", "mnist1d"])
def test_transformer_records_the_token_mean(tmp_path, source):
    """The stored values of block1 and block2 at the last snapshot equal the mean over tokens of each block's output,
    recomputed here with a forward hook on the final weights and the held-out probe samples."""
    cfg = tiny(tmp_path, "transformer", source, d_model=8, heads=2, blocks=2, ff=16, dropout=0.1, kernel_size=3)
    summary = train_run(cfg)
    data = load_dataset(source, "", cfg["data"]["test_fraction"], cfg["run"]["seed"])
    model = build_model(cfg["model"], data.input_shape, 10)
    model.load_state_dict(load_checkpoint(summary.run_dir / "checkpoint.npz")["model"])  # the weights at the end
    model.eval()
    outs = {}
    for name in ("block1", "block2"):
        getattr(model, name).register_forward_hook(lambda m, a, out, name=name: outs.__setitem__(name, out))
    with Store(summary.store_path) as st:
        assert st.steps[-1] == summary.steps  # the last snapshot is the final model
        held = stratified_indices(data.y_test, 3, cfg["run"]["seed"])
        assert np.array_equal(st.labels("heldout"), data.y_test[held])
        with torch.no_grad():
            model(torch.from_numpy(data.x_test[held]))
        tokens = 8 if source == "digits" else 40
        for name in ("block1", "block2"):
            out = outs[name].numpy()  # [n, T, d_model]
            assert out.shape == (len(held), tokens, 8)
            by_hand = out.sum(axis=1) / tokens
            stored = st.acts("heldout", name, st.n_snapshots - 1)  # recorded as float32
            np.testing.assert_allclose(stored, by_hand, rtol=1e-5, atol=1e-6)
            assert not np.allclose(stored, out[:, 0, :], atol=1e-3)  # not the first token: a mean over tokens


def test_the_registry_and_the_parameters_agree():
    """Every kind has a builder and parameters; unknown kinds are refused naming the known ones."""
    assert list(BUILDERS) == list(MODEL_KINDS) == ["mlp", "cnn", "resnet", "transformer"]
    with pytest.raises(ValueError, match=r"'model.kind' setting must be one of \['mlp', 'cnn', 'resnet', 'trans"):
        build_model({"kind": "rnn"}, (1, 40), 10)
    for kind, params in MODEL_KINDS.items():  # every kind builds with its defaults on both input layouts
        for shape in ((1, 8, 8), (1, 40)):
            with torch.device("meta"):
                out = build_model({"kind": kind, **params}, shape, 10)(torch.empty(3, int(np.prod(shape))))
            assert out.shape == (3, 10)


@pytest.mark.parametrize("text, message", [
    ('[model]\nkind = "rnn"\n', r"The 'model.kind' setting must be one of \['mlp', 'cnn', 'resnet', 'transformer'\]. "
                                r"Got 'rnn' instead."),
    ('[model]\nkind = "cnn"\nhidden = [8]\n', r"The 'model.hidden' setting is a parameter of model.kind = 'mlp', "
                                              r"not of 'cnn'. Parameters of 'cnn': \['channels', 'kernel_size'"),
    ('[model]\nchannels = [8]\n', r"'model.channels' setting is a parameter of model.kind = 'cnn' or 'resnet', "
                                  r"not of 'mlp'"),
    ('[model]\nkind = "cnn"\nchannels = []\n', r"'model.channels' setting must be a non-empty list of ints >= 1"),
    ('[model]\nkind = "cnn"\nchannels = [8, 0]\n', r"'model.channels' setting must be a non-empty list of ints >= 1"),
    ('[model]\nkind = "cnn"\nkernel_size = 0\n', r"'model.kernel_size' setting must be an int >= 1"),
    ('[model]\nkind = "resnet"\nblocks = 0\n', r"'model.blocks' setting must be an int >= 1"),
    ('[model]\nkind = "transformer"\nd_model = 30\nheads = 4\n', r"'model.d_model' setting \(30\) must be a multiple "
                                                                  r"of model.heads \(4\)"),
    ('[model]\nkind = "transformer"\nff = 2.5\n', r"'model.ff' must be of type int. Got 2.5"),
    ('[model]\nkind = "resnet"\ndropout = 1.0\n', r"'model.dropout' setting must be a finite number in \[0.0, 1.0\)"),
    ('[model]\nkind = 3\n', r"'model.kind' must be of type str"),
    ('[model]\nwidth = 3\n', r"Unknown setting 'model.width'. Allowed in \[model\]: \['batchnorm', 'blocks'"),
])
def test_bad_model_settings_are_one_line(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises((ValueError, TypeError), match=message) as err:
        load_config(tmp_path / "c.toml")
    assert "\n" not in str(err.value)


def test_layers_are_checked_against_the_configured_model_of_any_kind(tmp_path):
    """record.layers must name modules of the configured kind (before anything is written)."""
    cfg = load_config(None, {"model": {"kind": "cnn"}, "record": {"layers": ["conv1", "hidden1"]},
                             "run": {"out_dir": str(tmp_path)}})
    with pytest.raises(ValueError, match=r"Unknown layer 'hidden1'.*conv1.*Fix record.layers") as err:
        check_run_config(cfg)
    assert "cnn: Conv2d blocks of [16, 32] channels" in str(err.value)
    check_run_config(load_config(None, {"model": {"kind": "transformer"}, "record": {"layers": "block*.ff"}}))
    assert list(tmp_path.iterdir()) == []


def test_the_mlp_default_is_unchanged():
    """No [model] kind: the MLP with the same settings and layers as before the other kinds existed."""
    cfg = load_config()
    assert cfg["model"] == {"kind": "mlp", "hidden": [128, 64], "dropout": 0.0, "batchnorm": False}
    assert cfg["record"]["layers"] == ["hidden1", "hidden2"]
    from topotrace.train import MLP  # still importable from its old home

    torch.manual_seed(0)
    a = build_model(cfg["model"], (1, 8, 8), 10)
    torch.manual_seed(0)
    b = MLP(64, [128, 64], 10)
    assert isinstance(a, MLP) and all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in b.state_dict())

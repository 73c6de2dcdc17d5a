"""The results codec (topotrace.analysis.codec): the file layout of analysis.h5, round trips, older files, the hook."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

import topotrace.analysis.results as results_module
from topotrace.analysis import codec
from topotrace.analysis.results import (
    AnalysisResults,
    Calibration,
    CorrResult,
    Divergence,
    GroupedNaps,
    InterpOperator,
    LayerResult,
    LayoutResult,
    SampleEvidence,
    load_results,
    save_results,
)

S, N = 3, 4


def _layer(name: str, rng: np.random.Generator, evidence: bool) -> LayerResult:
    op = InterpOperator((2, 3), (0.0, 1.0, -0.5, 0.5), np.arange(5, dtype=np.int32),
                        rng.integers(0, N, (5, 3)).astype(np.int32), np.full((5, 3), 1 / 3, np.float32),
                        np.array([[0, 0], [1, 0], [0, 1], [0, 0]], np.float32))
    ev = SampleEvidence(("strength", "distinctness"), ["max_prob"], *(rng.normal(size=s) for s in (
        (2, S), (2, S, 2), (2, S, 1), (2, S, 1, 2), (2, S, 1), (2, S, 1, 2), (2,), (2, 2))),
        peak=np.array([2, 1]), peak_change=rng.normal(size=2), peak_change_ci=rng.normal(size=(2, 2)),
        n_samples=30, n_boot=200) if evidence else None
    corr = CorrResult("max_prob", *(rng.normal(size=(S, N)) for _ in range(6)),
                      summary={"mean_r": rng.normal(size=S), "frac_sig_pos": rng.random(S)}, alpha=0.1)
    return LayerResult(
        name=name, n_neurons=N, reduction="mean", default_layout="pca",
        naps={"pred": GroupedNaps("pred", ["a", "b"], rng.normal(size=(S, 2, N)).astype(np.float32),
                                  np.ones((S, 2), np.int64)),
              "class": GroupedNaps("class", ["a", "b"], rng.normal(size=(S, 2, N)).astype(np.float32),
                                   np.ones((S, 2), np.int64))},
        layouts={"pca": LayoutResult("pca", rng.random((N, 2)).astype(np.float32), 0.9, 0.5, 0.25, 0.01, op)},
        color_limit=2.5, corr={"max_prob": corr}, strength=rng.random(S), distinctness=rng.random(S),
        bin_names=["low", "high"], strength_by_bin=rng.random((S, 2)), distinctness_by_bin=rng.random((S, 2)),
        cka=rng.random(S), evidence=ev, color_limit_contrast=1.5, nonnegative=True,
        excluded_values=np.array([0, 1, 0]), excluded_samples=np.array([0, 0, 2]), dormant=rng.random(S),
        dormant_mask=rng.random((S, N)) > 0.5, nc1=rng.random(S), nap_gap=rng.random(S),
        trends={"dormant_change": np.array([-0.1, -0.2, 0.0]), "nc1_log_ratio": np.array([0.1, 0.0, 0.2])})


def _results(divergence: Divergence | None = None, reference: int = -1) -> AnalysisResults:
    rng = np.random.default_rng(0)
    return AnalysisResults(
        store_path="/runs/a/store.h5", store_sha256="ab" * 32, n_snapshots=S, steps=np.array([1, 2, 3]),
        epochs=np.array([0, 0, 1]), probe_set="heldout", primary_measure="max_prob", measures=["max_prob"],
        class_names=["a", "b"],
        curves={"train": {"loss": rng.random(S), "accuracy": rng.random(S)}, "heldout": {"loss": rng.random(S)}},
        layers={"z.fc": _layer("z.fc", rng, True), "a.fc": _layer("a.fc", rng, False)},
        params={"layouts": ["pca"], "dormant_tau": 0.01}, meta={"run_name": "a", "seed": 3},
        nonfinite_outputs=np.array([0, 0, 1]), divergence=divergence,
        calibration={"heldout": Calibration(["max_prob"], rng.random((1, S)), np.ones((1, S, 4), np.int64),
                                            rng.random((1, S, 4)), rng.random((1, S, 4)), 4, rng.random((S, 2)))},
        temperature=rng.random(S), loss_min=1, ece_trend={"max_prob": np.array([0.01, -0.02, 0.03])},
        reference_snapshot=reference)


def _same(a: object, b: object) -> None:
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b)
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, dict):
        assert list(a) == list(b)  # the same keys in the same order
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and np.array_equal(a, b)
    else:
        assert type(a) is type(b) and a == b


def _tree(path) -> dict[str, object]:
    """Every attribute (name -> value) and dataset (name -> dtype and shape) of a file, by path."""
    out: dict[str, object] = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = v
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.dtype.str, obj.shape, obj.chunks, obj.compression)
        visit("", f)
        f.visititems(visit)
    return out


def test_the_file_layout_is_todays(tmp_path):
    """Names, attribute values and dataset dtypes of analysis.h5 as docs/analysis.md ("Cache") describes them."""
    res = _results(Divergence(snapshot=3, step=40, last_step=30, layers=["a.fc"], outputs=True, n_snapshots=5))
    tree = _tree(save_results(res, tmp_path / "a.h5", extra_attrs={"fingerprint": "{}"}))
    root = {"format": "topotrace-analysis", "version": 1, "fingerprint": "{}", "store_path": "/runs/a/store.h5",
            "store_sha256": "ab" * 32, "n_snapshots": 3, "probe_set": "heldout", "primary_measure": "max_prob",
            "measures": '["max_prob"]', "class_names": '["a", "b"]', "loss_min": 1,
            "params": '{"layouts": ["pca"], "dormant_tau": 0.01}', "meta": '{"run_name": "a", "seed": 3}',
            "layer_order": '["z.fc", "a.fc"]', "curve_order": '{"train": ["loss", "accuracy"], "heldout": ["loss"]}',
            "divergence": '{"snapshot": 3, "step": 40, "last_step": 30, "layers": ["a.fc"], "outputs": true, '
                          '"n_snapshots": 5}'}
    assert {k[1:]: tree[k] for k in tree if k.startswith("@")} == root  # no reference_snapshot: it is final
    assert isinstance(tree["@n_snapshots"], np.int64) and isinstance(tree["@loss_min"], np.int64)
    plain = (None, None)
    for name, dtype in (("steps", "<i8"), ("epochs", "<i8"), ("nonfinite_outputs", "<i8"), ("temperature", "<f8"),
                        ("ece_trend/max_prob", "<f8"), ("curves/train/accuracy", "<f8"),
                        ("calibration/heldout/counts", "<i8"), ("calibration/heldout/temperature_cv", "<f8"),
                        ("layers/z.fc/excluded_values", "<i8"), ("layers/z.fc/dormant_mask", "|b1"),
                        ("layers/z.fc/trends/nc1_log_ratio", "<f8"), ("layers/z.fc/naps/class/naps", "<f4"),
                        ("layers/z.fc/layouts/pca/pixel", "<i4"), ("layers/z.fc/layouts/pca/outline", "<f4"),
                        ("layers/z.fc/corr/max_prob/summary/frac_sig_pos", "<f8"),
                        ("layers/z.fc/evidence/peak", "<i8")):
        assert tree[name][0] == dtype and tree[name][2:] == plain, name
    assert "layers/a.fc/evidence" not in tree and "layers/a.fc/evidence/mean" not in tree
    layer = {k.split("@")[1]: v for k, v in tree.items() if k.startswith("layers/z.fc@")}
    assert set(layer) == {"n_neurons", "reduction", "default_layout", "color_limit", "color_limit_contrast",
                          "nonnegative", "bin_names", "grouping_order", "layout_order", "corr_order"}
    assert layer["grouping_order"] == '["pred", "class"]' and layer["nonnegative"] and layer["color_limit"] == 2.5
    lay = {k.split("@")[1]: v for k, v in tree.items() if k.startswith("layers/z.fc/layouts/pca@")}
    assert lay["method"] == "pca" and lay["grid_shape"].dtype == np.int64 and list(lay["grid_shape"]) == [2, 3]
    assert lay["extent"].dtype == np.float64 and set(lay) == {"method", "trustworthiness", "shepard", "smoothness",
                                                              "seconds", "grid_shape", "extent"}
    assert tree["layers/z.fc/corr/max_prob@summary_order"] == '["mean_r", "frac_sig_pos"]'
    assert tree["layers/z.fc/corr/max_prob@alpha"] == 0.1
    assert tree["layers/z.fc/evidence@quantities"] == '["strength", "distinctness"]'
    assert tree["calibration/heldout@n_bins"] == 4 and tree["calibration/heldout@measures"] == '["max_prob"]'
    per_layer = 5 + 2 + 4 + 2 + 2 * 2 + 5 + 6 + 2  # arrays, excluded, extras, trends, naps, layout, corr, summary
    n_datasets = 4 + 1 + 3 + 5 + 2 * per_layer + 11  # root, ece_trend, curves, calibration, layers, one evidence
    assert sum(isinstance(v, tuple) for v in tree.values()) == n_datasets


@pytest.mark.parametrize("reference", [-1, 2])
def test_round_trip_keeps_every_field_and_key_order(tmp_path, reference):
    """Loading what was saved gives the same objects, mapping keys in the same (non-alphabetical) order."""
    for div in (None, Divergence(3, 40, 30, ["a.fc"], False, 5)):
        res = _results(div, reference)
        back = load_results(save_results(res, tmp_path / "a.h5"))
        _same(res, back)
        assert isinstance(back.layers["z.fc"].evidence.quantities, tuple)
        assert back.layers["a.fc"].layouts["pca"].interp.grid_shape == (2, 3)
        with h5py.File(tmp_path / "a.h5", "r") as f:
            assert ("reference_snapshot" in f.attrs) == (reference >= 0)
    res = _results()
    res.layers["z.fc"].trends = dict(reversed(res.layers["z.fc"].trends.items()))
    back = load_results(save_results(res, tmp_path / "a.h5"))
    assert list(back.layers["z.fc"].trends) == ["dormant_change", "nc1_log_ratio"]  # no order attribute: by name


def test_an_older_file_reads_with_the_defaults(tmp_path):
    """Results an older analysis did not write take their defaults; a missing required one is a KeyError."""
    path = save_results(_results(), tmp_path / "a.h5")
    with h5py.File(path, "a") as f:
        for name in ("temperature", "ece_trend", "calibration", "nonfinite_outputs", "layers/z.fc/trends",
                     "layers/z.fc/layouts/pca/outline", "layers/z.fc/evidence", "layers/z.fc/dormant_mask"):
            del f[name]
        del f.attrs["loss_min"], f.attrs["divergence"]
    back = load_results(path)
    assert back.temperature.shape == (0,) and back.ece_trend == {} and back.calibration == {}
    assert back.nonfinite_outputs.shape == (0,) and back.loss_min == -1 and back.divergence is None
    lr = back.layers["z.fc"]
    assert lr.trends == {} and lr.evidence is None and lr.dormant_mask.shape == (0, 0)
    assert lr.layouts["pca"].interp.outline.shape == (0, 2) and lr.nc1.shape == (S,)
    with h5py.File(path, "a") as f:
        del f["layers/a.fc/cka"]
    with pytest.raises(KeyError, match="cka"):
        load_results(path)


def test_every_dataset_goes_through_the_put_hook(tmp_path, monkeypatch):
    seen = []
    real = results_module._put
    def put(g, name, arr):
        seen.append(f"{g.name}/{name}")
        real(g, name, arr)

    monkeypatch.setattr(results_module, "_put", put)
    path = save_results(_results(), tmp_path / "a.h5")
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda n, o: names.append(f"/{n}") if isinstance(o, h5py.Dataset) else None)
    assert sorted(n.replace("//", "/") for n in seen) == sorted(names)


def test_every_result_field_declares_its_storage():
    """A field without a storage is refused when written (so none is silently left out of the file)."""
    for cls in (AnalysisResults, LayerResult, GroupedNaps, LayoutResult, InterpOperator, CorrResult, SampleEvidence,
                Calibration):
        assert all(codec.KEY in f.metadata for f in dataclasses.fields(cls)), cls

    @dataclasses.dataclass
    class Bare:
        x: int = codec.attr("int")
        y: int = 0

    with h5py.File("unused.h5", "w", driver="core", backing_store=False) as f, pytest.raises(TypeError, match="y"):
        codec.write(f, Bare(1), put=results_module._put)
    with pytest.raises(ValueError, match="unknown attribute rule"):
        codec.attr("text")
    assert json.loads(codec._dumps({"a": np.int64(3), "b": np.arange(2)})) == {"a": 3, "b": [0, 1]}

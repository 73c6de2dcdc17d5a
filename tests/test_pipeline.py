"""The cached analysis (topotrace.analysis.pipeline.analyze) against references computed directly from small stores."""

import dataclasses
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats as sps

from topotrace.analysis.findings import run_findings
from topotrace.analysis.pipeline import GRID, analyze
from topotrace.analysis.results import AnalysisResults, load_results, save_results
from topotrace.instrument.store import LayerSpec, ProbeRecord, ProbeSpec, Snapshot, Store, StoreSpec, StoreWriter
from topotrace.instrument.synthetic import write_synthetic_store

from . import reference as ref_impl

FAST = ["pca", "force"]
N_CLASSES = 3


def _spec():
    probes = (ProbeSpec("heldout", np.arange(30), np.repeat(np.arange(N_CLASSES), 10)),
              ProbeSpec("train", np.arange(15) + 100, np.tile(np.arange(N_CLASSES), 5)))
    layers = (LayerSpec("fc1", 6, "flatten", (6,)), LayerSpec("block.conv", 5, "channel_mean", (5, 2, 2)))
    return StoreSpec(layers, probes, ("a", "b", "c"), ("max_prob", "margin"), act_dtype="float32")


def _snapshot(spec, step, rng):
    recs = {}
    for p in spec.probes:
        n = len(p.label)
        logits = rng.normal(size=(n, N_CLASSES)).astype(np.float32) + 2 * np.eye(N_CLASSES, dtype=np.float32)[p.label]
        pr = np.exp(logits - logits.max(1, keepdims=True))
        pr /= pr.sum(1, keepdims=True)
        top = np.sort(pr, axis=1)
        conf = {"max_prob": top[:, -1], "margin": top[:, -1] - top[:, -2]}
        acts = {}
        for la in spec.layers:
            a = rng.normal(size=(n, la.n_neurons)) + p.label[:, None] * (step / 10)
            a[:, 0] = np.maximum(a[:, 0], 0)  # ReLU-like ties
            a[:, 1] = np.round(a[:, 1])
            acts[la.name] = a.astype(np.float32)
        pred = logits.argmax(1)
        recs[p.name] = ProbeRecord(acts, logits, pred, pred == p.label,
                                   (-np.log(pr[np.arange(n), p.label])).astype(np.float32),
                                   {k: v.astype(np.float32) for k, v in conf.items()})
    return Snapshot(step=step, epoch=0, time=time.time(), probes=recs)


@pytest.fixture()
def small_store(tmp_path):
    path = tmp_path / "run" / "store.h5"
    rng = np.random.default_rng(0)
    spec = _spec()
    with StoreWriter.create(path, spec, {"run_name": "small", "seed": 0}) as w:
        for step in (1, 3, 7, 15):
            w.append(_snapshot(spec, step, rng))
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = write_synthetic_store(tmp_path_factory.mktemp("syn") / "store.h5", n_snapshots=8, layer_sizes=(24,),
                                 n_classes=4, per_class=15)
    return path, analyze(path, layout_methods=FAST)


def _bh(p):
    m = len(p)
    rank = sps.rankdata(p, method="ordinal")
    return np.array([min(1.0, min(p[j] * m / rank[j] for j in range(m) if p[j] >= p[i])) for i in range(m)])


def _resid(v, labels):
    v = np.array(v, float)
    for c in np.unique(labels):
        v[labels == c] -= v[labels == c].mean(0)
    return v


@pytest.mark.slow
def test_every_statistic_matches_direct_reference(small_store):
    res = analyze(small_store, layout_methods=FAST, n_bins=2)
    with Store(small_store) as st:
        labels = st.labels("heldout")
        for name, lr in res.layers.items():
            final = st.acts("heldout", name, -1)
            for s in range(st.n_snapshots):
                a = st.acts("heldout", name, s).astype(np.float64)
                for m in st.measures:
                    c = st.conf("heldout", m)[s].astype(np.float64)
                    cr = lr.corr[m]
                    ref_p = [sps.pearsonr(a[:, j], c).statistic for j in range(a.shape[1])]
                    ref_s = [sps.spearmanr(a[:, j], c).statistic for j in range(a.shape[1])]
                    ra, rc = _resid(a, labels), _resid(c, labels)
                    ref_pw = [np.corrcoef(ra[:, j], rc)[0, 1] for j in range(a.shape[1])]
                    # within-class Spearman: partial correlation of the all-sample ranks given the class
                    rka, rkc = _resid(sps.rankdata(a, axis=0), labels), _resid(sps.rankdata(c), labels)
                    ref_sw = [np.corrcoef(rka[:, j], rkc)[0, 1] for j in range(a.shape[1])]
                    np.testing.assert_allclose(cr.pearson[s], ref_p, atol=1e-5)
                    np.testing.assert_allclose(cr.spearman[s], ref_s, atol=1e-5)
                    np.testing.assert_allclose(cr.pearson_within[s], ref_pw, atol=1e-5)
                    np.testing.assert_allclose(cr.spearman_within[s], ref_sw, atol=1e-5)
                    p = [sps.pearsonr(a[:, j], c).pvalue for j in range(a.shape[1])]
                    np.testing.assert_allclose(cr.q_pearson[s], _bh(np.array(p)), rtol=1e-4)
                    sig = cr.q_pearson[s] < cr.alpha
                    assert cr.summary["frac_sig_pos"][s] == np.mean(sig & (cr.pearson[s] > 0))
                    assert cr.summary["mean_r"][s] == pytest.approx(np.mean(ref_p), abs=1e-6)
                assert lr.strength[s] == pytest.approx(np.abs(a).mean())
                strength_i = np.abs(a).mean(axis=1)
                distinct_i = ref_impl.sample_distinctness(a, labels, N_CLASSES)
                assert lr.evidence.mean[0, s] == pytest.approx(strength_i.mean())
                assert lr.evidence.mean[1, s] == pytest.approx(np.nanmean(distinct_i))
                for j, m in enumerate(lr.evidence.measures):
                    c = st.conf("heldout", m)[s].astype(np.float64)
                    assert lr.evidence.rho[0, s, j] == pytest.approx(sps.spearmanr(strength_i, c).statistic)
                    assert lr.evidence.rho_partial[1, s, j] == pytest.approx(
                        ref_impl.partial_spearman(distinct_i, c, labels))
                means = np.stack([a[labels == k].mean(0) for k in range(N_CLASSES)])
                between = (10 * (means - a.mean(0)) ** 2).sum()
                within = sum(((a[labels == k] - means[k]) ** 2).sum() for k in range(N_CLASSES))
                assert lr.distinctness[s] == pytest.approx(between / within)
                np.testing.assert_allclose(lr.naps["class"].naps[s], means, rtol=1e-5, atol=1e-6)
                xc, yc = a - a.mean(0), final - final.mean(0)
                cka = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
                assert lr.cka[s] == pytest.approx(cka, rel=1e-5)
                conf_s = st.conf("heldout", "max_prob")[s]  # per-snapshot bins: the lower half of the ranks
                low = np.zeros(len(conf_s), bool)
                low[np.argsort(conf_s, kind="stable")[: len(conf_s) // 2]] = True
                for b, rows in enumerate([low, ~low]):
                    if rows.any():
                        assert lr.strength_by_bin[s, b] == pytest.approx(np.abs(a[rows]).mean())
            assert lr.cka[-1] == pytest.approx(1.0)
            assert lr.nonnegative == all(np.nanmin(g.naps) >= 0 for g in lr.naps.values())
        for probe in st.probes:
            np.testing.assert_allclose(res.curves[probe]["accuracy"], st.correct(probe).mean(1))
            np.testing.assert_allclose(res.curves[probe]["loss"], st.loss(probe).mean(1), rtol=1e-6)
            for m in st.measures:
                np.testing.assert_allclose(res.curves[probe][f"conf_{m}"], st.conf(probe, m).mean(1), rtol=1e-6)
        assert res.store_sha256 == st.sha256()
    assert res.layers["block.conv"].reduction == "channel_mean"
    assert list(res.layers) == ["fc1", "block.conv"]


def test_planted_signals_on_synthetic_store(synthetic):
    _, res = synthetic
    lr = res.layers["layer0"]
    cr = lr.corr["max_prob"]
    assert (cr.pearson[:, 0] > 0.999).all() and (cr.pearson_within[:, 0] > 0.999).all()
    assert (cr.spearman[:, 0] > 0.99).all() and (cr.spearman_within[:, 0] > 0.99).all()
    assert np.abs(cr.pearson_within[:, 1]).max() < 1e-6 and np.abs(cr.spearman_within[:, 1]).max() < 1e-6
    assert (cr.q_pearson[:, 0] < 0.05).all()
    found = {(f.claim, f.measure): f for f in run_findings(res)}
    assert found["stronger_with_time", ""].verdict == "holds in this run"  # planted: neurons grow over training
    assert found["more_distinct_with_time", ""].verdict == "holds in this run"
    assert all(f.n_runs == 1 and f.ci_low <= f.effect <= f.ci_high for f in found.values())
    gn = lr.naps["class"]
    for s in range(res.n_snapshots):
        w = gn.counts[s][:, None]
        overall = lr.naps["correct"]
        wc = overall.counts[s][:, None]
        np.testing.assert_allclose((gn.naps[s] * w).sum(0) / w.sum(), np.nansum(overall.naps[s] * wc, 0) / wc.sum(),
                                   rtol=1e-5, atol=1e-6)
    assert set(lr.naps) == {"class", "pred", "correct", "confbin", "class_confbin"}
    assert lr.color_limit == pytest.approx(max(np.nanmax(np.abs(g.naps)) for g in lr.naps.values()))
    assert set(lr.layouts) == {"pca+declutter", "force+declutter"} and lr.default_layout in lr.layouts
    assert set(res.curves) == {"heldout", "train"}


@pytest.mark.slow
def test_cache_hit_reads_no_activations(small_store, monkeypatch):
    first = analyze(small_store, layout_methods=FAST)
    assert (small_store.parent / "analysis.h5").exists()

    def forbidden(*args, **kwargs):
        raise AssertionError("activations read on a cache hit")

    monkeypatch.setattr(Store, "iter_acts", forbidden)
    monkeypatch.setattr(Store, "acts", forbidden)
    monkeypatch.setattr(Store, "sha256", forbidden)
    again = analyze(small_store.parent, layout_methods=FAST)  # run folder -> store.h5
    _assert_same(first, again)


@pytest.mark.slow
def test_cache_invalidated_when_store_grows_or_params_change(small_store, monkeypatch):
    analyze(small_store, layout_methods=FAST)
    calls = []
    orig = Store.iter_acts
    # the analysed probe set's pass over each layer (the train probe set is read too, for the NAP gap)
    monkeypatch.setattr(Store, "iter_acts", lambda self, p, la, **kw: (calls.append(la) if p == "heldout" else None,
                                                                      orig(self, p, la, **kw))[1])
    analyze(small_store, layout_methods=FAST, n_bins=3)
    assert len(calls) == 2
    with Store(small_store) as st:
        spec = st.spec
    with StoreWriter.resume(small_store, spec) as w:
        w.append(_snapshot(spec, 20, np.random.default_rng(1)))
    res = analyze(small_store, layout_methods=FAST, n_bins=3)
    assert len(calls) == 4 and res.n_snapshots == 5
    analyze(small_store, layout_methods=FAST, n_bins=3)
    assert len(calls) == 4
    analyze(small_store, layout_methods=FAST, n_bins=3, refresh=True)
    assert len(calls) == 6


@pytest.mark.slow
def test_progress_and_explicit_cache_path(small_store, tmp_path):
    seen = []
    cache = tmp_path / "new" / "folder" / "elsewhere.h5"  # folders are created
    res = analyze(small_store, cache, layout_methods=["pca"], default_layout="pca+declutter",
                  progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert cache.exists() and not (small_store.parent / "analysis.h5").exists()
    assert ("fc1: snapshots", 4, 4) in seen and ("block.conv: layouts", 1, 1) in seen
    assert res.layers["fc1"].default_layout == "pca+declutter"


def test_errors_name_the_parameter(small_store):
    with pytest.raises(ValueError, match="'probe_set' parameter must be one of \\['heldout', 'train'\\]"):
        analyze(small_store, probe_set="test")
    with pytest.raises(ValueError, match="'measure' parameter"):
        analyze(small_store, measure="entropy")
    with pytest.raises(ValueError, match="'default_layout' parameter"):
        analyze(small_store, layout_methods=["pca"], default_layout="force")
    with pytest.raises(FileNotFoundError):
        analyze(small_store.parent / "missing.h5")


def _assert_same(a, b):
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b)
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_save_load_round_trip(synthetic, tmp_path):
    _, res = synthetic
    assert isinstance(res, AnalysisResults)
    path = save_results(res, tmp_path / "copy.h5")
    back = load_results(path)
    _assert_same(res, back)
    img = back.layers["layer0"].layouts["pca+declutter"].interp.apply(back.layers["layer0"].naps["class"].naps[-1, 0])
    assert img.shape == (GRID, GRID) and np.isfinite(img).mean() > 0.3


def test_load_refuses_other_files(tmp_path, synthetic):
    path, _ = synthetic
    with pytest.raises(ValueError, match="not a topotrace analysis cache"):
        load_results(path)


@pytest.mark.subprocess
def test_analysis_never_imports_torch():
    code = "import topotrace.analysis.pipeline, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_thread_count_does_not_change_results(small_store, tmp_path, monkeypatch):
    import topotrace.analysis.stream as stream

    monkeypatch.setattr(stream, "MAX_WORKERS", 1)
    one = analyze(small_store, tmp_path / "one.h5", layout_methods=["pca"])
    monkeypatch.setattr(stream, "MAX_WORKERS", 3)
    monkeypatch.setattr(stream.os, "cpu_count", lambda: 3)
    three = analyze(small_store, tmp_path / "three.h5", layout_methods=["pca"])
    for name in one.layers:
        for res in (one, three):
            for lay in res.layers[name].layouts.values():
                lay.seconds = 0.0  # wall time, the only field allowed to differ
        _assert_same(one.layers[name], three.layers[name])


def test_tiny_layer_gets_statistics_but_no_map(tmp_path):
    probes = (ProbeSpec("heldout", np.arange(30), np.repeat(np.arange(N_CLASSES), 10)),)
    spec = StoreSpec((LayerSpec("head", 2, "flatten", (2,)),), probes, ("a", "b", "c"), ("max_prob", "margin"),
                     act_dtype="float32")
    rng = np.random.default_rng(3)
    full = _spec()
    with StoreWriter.create(tmp_path / "store.h5", spec, {}) as w:
        for step in (1, 2, 3):
            snap = _snapshot(full, step, rng)
            rec = snap.probes["heldout"]
            rec.acts = {"head": rec.acts["fc1"][:, :2]}
            w.append(Snapshot(step, 0, snap.time, {"heldout": rec}))
    lr = analyze(tmp_path / "store.h5").layers["head"]
    assert lr.layouts == {} and lr.default_layout == ""
    assert lr.corr["max_prob"].pearson.shape == (3, 2) and np.isfinite(lr.strength).all()


def test_cli_prints_findings_and_cache_path(small_store, capsys):
    from topotrace.cli import main

    assert main(["analyze", str(small_store.parent), "--layouts", "pca", "--measure", "margin"]) == 0
    out = capsys.readouterr().out
    assert "stronger with time" in out and "more distinct with confidence" in out and "95 %" in out
    assert "in this run" in out and "bootstrap interval over probe samples" in out
    assert str(small_store.parent / "analysis.h5") in out.replace("\n", "")
    assert main(["analyze", str(small_store.parent / "nothing.h5")]) == 2


def test_default_layout_is_most_trustworthy_among_filled_maps():
    """A thin-strip layout loses to a filled one even with higher trustworthiness; with none filled, max fill."""
    from topotrace.analysis.maps import interp_operator
    from topotrace.analysis.pipeline import MIN_MAP_FILL, map_fill, pick_default_layout
    from topotrace.analysis.results import LayoutResult

    rng = np.random.default_rng(0)
    square = rng.random((60, 2))
    strip = np.vstack([square[:55] * [0.1, 1.0], [[1.0, 0.5], [0.98, 0.52], [0.99, 0.48], [0.97, 0.5], [1.0, 0.45]]])

    def lay(name, xy, trust):
        return LayoutResult(method=name, xy=xy.astype(np.float32), trustworthiness=trust, shepard=0.5, smoothness=0.5,
                            seconds=0.0, interp=interp_operator(xy, grid=32))

    cands = {"tsne+declutter": lay("tsne+declutter", strip, 0.97), "som+declutter": lay("som+declutter", square, 0.9),
             "pca+declutter": lay("pca+declutter", square, 0.8)}
    assert map_fill(cands["tsne+declutter"]) < MIN_MAP_FILL <= map_fill(cands["som+declutter"])
    assert pick_default_layout(cands) == "som+declutter"
    thinner = strip.copy()
    thinner[:55, 0] *= 0.3
    only_thin = {"a": lay("a", strip, 0.9), "b": lay("b", thinner, 0.99)}
    assert map_fill(only_thin["b"]) < map_fill(only_thin["a"]) < MIN_MAP_FILL
    assert pick_default_layout(only_thin) == "a"

"""Non-finite values are data, not poison: each statistic leaves out its own unit's NaN/inf values, counts them,
layouts never see them, and a diverged run is analysed up to the snapshot before it diverged."""

import time

import numpy as np
import pytest
from markupsafe import escape

from topotrace.analysis import naps, stats
from topotrace.analysis.pipeline import analyze
from topotrace.instrument.store import ProbeRecord, ProbeSpec, Snapshot, Store, StoreSpec, StoreWriter
from topotrace.instrument.synthetic import write_synthetic_store

LAYOUTS = ["pca"]
CORR = ("pearson", "spearman", "pearson_within", "spearman_within")
SAMPLE, NEURON = 5, 3  # the planted sample (class 0) and neuron


def _rewrite(src, dst, keep=None, edit=None):
    """Copy the store ``src`` to ``dst`` with only the samples ``keep`` (indices), after ``edit(s, probe, rec)``."""
    with Store(src) as st:
        spec = st.spec
        probes = tuple(ProbeSpec(p.name, p.index if keep is None else p.index[keep],
                                 p.label if keep is None else p.label[keep]) for p in spec.probes)
        new = StoreSpec(spec.layers, probes, spec.class_names, spec.measures, spec.act_dtype)
        rows = slice(None) if keep is None else keep
        with StoreWriter.create(dst, new, st.meta) as w:
            for s, step in enumerate(st.steps):
                recs = {}
                for p in spec.probes:
                    q = p.name
                    rec = ProbeRecord({la: st.acts(q, la, s, dtype=None)[rows] for la in st.layers},
                                      st.logits(q)[s][rows], st.pred(q)[s][rows], st.correct(q)[s][rows],
                                      st.loss(q)[s][rows], {m: st.conf(q, m)[s][rows] for m in spec.measures})
                    if edit is not None:
                        edit(s, q, rec)
                    recs[q] = rec
                w.append(Snapshot(int(step), int(st.epochs[s]), time.time(), recs))
    return dst


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny synthetic store (3 classes x 8 samples, 12 + 6 neurons, 4 snapshots) and its analysis."""
    root = tmp_path_factory.mktemp("nonfinite")
    path = write_synthetic_store(root / "base.h5", n_snapshots=4, layer_sizes=(12, 6), n_classes=3, per_class=8,
                                 with_train_probe=False)
    keep = np.delete(np.arange(24), SAMPLE)
    without = _rewrite(path, root / "without.h5", keep=keep)
    res = analyze(path, root / "base_cache.h5", layout_methods=LAYOUTS)
    res_without = analyze(without, root / "without_cache.h5", layout_methods=LAYOUTS)
    return root, path, res, res_without


def _plant(root, path, name, what):
    def edit(s, probe, rec):
        a = rec.acts["layer0"]
        if what == "nan_value":
            a[SAMPLE, NEURON] = np.nan
        elif what == "inf_row":
            a[SAMPLE] = np.inf
        else:  # the sample's outputs
            rec.loss[SAMPLE] = np.nan
            rec.conf["max_prob"][SAMPLE] = np.nan
    planted = _rewrite(path, root / f"{name}.h5", edit=edit)
    return analyze(planted, root / f"{name}_cache.h5", layout_methods=LAYOUTS)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, equal_nan=True)


def test_nan_in_one_value_leaves_only_that_value_out(base):
    """A NaN in neuron j of sample i: that neuron's class NAP and correlations equal those without sample i;
    every other neuron, class and layer is untouched."""
    root, path, res, res_without = base
    got = _plant(root, path, "nan_value", "nan_value")
    la, la0, la_wo = got.layers["layer0"], res.layers["layer0"], res_without.layers["layer0"]
    cls = 0  # the class of SAMPLE
    nap, nap0, nap_wo = la.naps["class"].naps, la0.naps["class"].naps, la_wo.naps["class"].naps
    assert np.isfinite(nap).all()
    _close(nap[:, cls, NEURON], nap_wo[:, cls, NEURON])
    others = np.ones(nap.shape[1:], bool)
    others[cls, NEURON] = False
    _close(nap[:, others], nap0[:, others])
    for m in got.measures:
        for k in CORR:
            r, r0, r_wo = (getattr(x.corr[m], k) for x in (la, la0, la_wo))
            _close(r[:, NEURON], r_wo[:, NEURON])
            _close(np.delete(r, NEURON, axis=1), np.delete(r0, NEURON, axis=1))
    _close(got.layers["layer1"].naps["class"].naps, res.layers["layer1"].naps["class"].naps)


def test_inf_row_leaves_the_sample_out(base):
    """An inf in every neuron of sample i: NAPs, correlations, q-values, strength and distinctness equal those
    computed on the store without sample i; the other classes' NAPs are untouched."""
    root, path, res, res_without = base
    got = _plant(root, path, "inf_row", "inf_row")
    la, la0, la_wo = got.layers["layer0"], res.layers["layer0"], res_without.layers["layer0"]
    for g in ("class", "pred", "correct"):
        _close(la.naps[g].naps, la_wo.naps[g].naps)
    _close(la.naps["class"].naps[:, 1:], la0.naps["class"].naps[:, 1:])
    for m in got.measures:
        for k in (*CORR, "q_pearson", "q_pearson_within"):
            _close(getattr(la.corr[m], k), getattr(la_wo.corr[m], k))
    for k in ("strength", "distinctness"):
        _close(getattr(la, k), getattr(la_wo, k))
    _close(la.evidence.mean, la_wo.evidence.mean)


def test_nonfinite_outputs_leave_the_sample_out_of_correlations(base):
    """NaN loss and confidence of sample i: correlations equal those without it; class NAPs keep the sample."""
    root, path, res, res_without = base
    got = _plant(root, path, "outputs", "outputs")
    la, la0, la_wo = got.layers["layer0"], res.layers["layer0"], res_without.layers["layer0"]
    for m in got.measures:
        for k in CORR:
            _close(getattr(la.corr[m], k), getattr(la_wo.corr[m], k))
    _close(la.naps["class"].naps, la0.naps["class"].naps)
    assert np.array_equal(got.nonfinite_outputs, [1, 1, 1, 1])
    assert np.array_equal(la.excluded_values, [0, 0, 0, 0])
    assert np.array_equal(la.excluded_samples, [1, 1, 1, 1])


def test_excluded_counts(base, tmp_path):
    """The cache holds, per layer and snapshot, the non-finite values and the samples left out."""
    root, path, res, _ = base

    def edit(s, probe, rec):
        a = rec.acts["layer0"]
        if s == 1:
            a[[2, 9], 4] = np.nan  # two values in two samples
        if s == 2:
            a[7, :5] = -np.inf  # five values in one sample
    got = analyze(_rewrite(path, tmp_path / "counts.h5", edit=edit), tmp_path / "c.h5", layout_methods=LAYOUTS)
    assert np.array_equal(got.layers["layer0"].excluded_values, [0, 2, 5, 0])
    assert np.array_equal(got.layers["layer0"].excluded_samples, [0, 2, 1, 0])
    assert np.array_equal(got.layers["layer1"].excluded_values, [0, 0, 0, 0])
    assert np.array_equal(res.layers["layer0"].excluded_values, [0, 0, 0, 0])
    again = analyze(tmp_path / "counts.h5", tmp_path / "c.h5", layout_methods=LAYOUTS)  # from the cache
    assert np.array_equal(again.layers["layer0"].excluded_samples, [0, 2, 1, 0])


def test_neuron_without_finite_profile_is_placed_nowhere(base, tmp_path):
    """A neuron NaN for every sample at the last snapshot has no position; the maps never use it."""
    root, path, _, _ = base

    def edit(s, probe, rec):
        if s == 3:
            rec.acts["layer0"][:, NEURON] = np.nan
    got = analyze(_rewrite(path, tmp_path / "dead.h5", edit=edit), tmp_path / "d.h5",
                  layout_methods=["pca", "force"])
    for lay in got.layers["layer0"].layouts.values():
        assert lay.unplaced.tolist() == [NEURON]
        assert np.isfinite(np.delete(lay.xy, NEURON, axis=0)).all()
        assert NEURON not in lay.interp.neurons
    assert got.divergence is None


def test_all_zero_last_snapshot_does_not_crash_tsne(base, tmp_path):
    """Identical (all-zero) profiles used to crash t-SNE's PCA start; now every layout is finite."""
    root, path, _, _ = base

    def edit(s, probe, rec):
        if s == 3:
            for a in rec.acts.values():
                a[:] = 0
    got = analyze(_rewrite(path, tmp_path / "zeros.h5", edit=edit), tmp_path / "z.h5", layout_methods=["tsne"])
    assert np.isfinite(got.layers["layer0"].layouts["tsne+declutter"].xy).all()


def test_bins_skip_nonfinite_confidence():
    """A non-finite confidence is in no bin; the others are binned by their rank among the finite ones."""
    v = np.array([[0.1, np.nan, 0.3, 0.2, np.inf, 0.4]])
    assert naps.snapshot_bins(v, 2).tolist() == [[0, -1, 1, 0, -1, 1]]
    assert naps.assign_bins(v[0], np.array([0.0, 0.25, 1.0])).tolist() == [0, -1, 1, 0, -1, 1]
    idx, _ = naps.group_index("class_confbin", np.zeros(6, int), None, None, naps.snapshot_bins(v, 2)[0], 1, 2)
    assert idx.tolist() == [0, -1, 1, 0, -1, 1]


def test_masked_correlations_match_per_neuron_subsets():
    """Each neuron's correlations equal snapshot_correlations on its usable samples alone."""
    rng = np.random.default_rng(0)
    n, n_neurons = 40, 5
    labels = np.repeat(np.arange(4), 10)
    acts = rng.normal(size=(n, n_neurons))
    conf = rng.normal(size=(n, 2))
    usable = rng.random((n, n_neurons)) > 0.2
    usable[:, 0] = True
    usable[:, 4] = usable[:, 3]  # a shared mask
    acts[~usable] = np.nan
    r, n_used, n_cls = stats.masked_correlations(acts, conf, labels, usable)
    for j in range(n_neurons):
        rows = usable[:, j]
        ref = stats.snapshot_correlations(acts[rows, j:j + 1], conf[rows], labels[rows])
        for k in CORR:
            _close(r[k][j], ref[k][0])
        assert n_used[j] == rows.sum() and n_cls[j] == len(np.unique(labels[rows]))


@pytest.mark.slow
def test_diverged_run_is_analysed_up_to_the_divergence_and_reported(base, tmp_path):
    """Non-finite layer0 activations and outputs from snapshot 2 on: the analysis holds snapshots 0 and 1 (equal
    to the finite run's), and the report opens with the divergence banner (and the note on one NaN before it)."""
    from topotrace.report_templates.generate import build_report
    from topotrace.report_templates.words import nonfinite_sentences

    root, path, res, _ = base

    def edit(s, probe, rec):
        if s == 1:
            rec.acts["layer1"][SAMPLE, 2] = np.nan
        if s >= 2:
            rec.acts["layer0"][:] = np.nan
            rec.logits[:] = np.inf
            rec.loss[:] = np.nan
            for v in rec.conf.values():
                v[:] = np.nan
    got = analyze(_rewrite(path, tmp_path / "diverged.h5", edit=edit), tmp_path / "dv.h5", layout_methods=LAYOUTS)
    d = got.divergence
    assert got.n_snapshots == 2 and len(got.steps) == 2
    assert (d.snapshot, d.step, d.last_step, d.layers, d.outputs, d.n_snapshots) == (
        2, int(res.steps[2]), int(res.steps[1]), ["layer0"], True, 4)
    _close(got.layers["layer0"].naps["class"].naps, res.layers["layer0"].naps["class"].naps[:2])
    _close(got.layers["layer1"].naps["class"].naps[0], res.layers["layer1"].naps["class"].naps[0])
    assert np.array_equal(got.layers["layer1"].excluded_values, [0, 1])
    assert all(got.layers[name].layouts for name in ("layer0", "layer1"))
    assert all(len(c) == 2 for curves in got.curves.values() for c in curves.values())
    text = (f"The run diverged at step {d.step:,} (snapshot 3 of 4): layer layer0 and the logits hold non-finite "
            f"values from there on; the analysis and maps stop at step {d.last_step:,}.")
    page = build_report(got, tmp_path / "report.html").read_text()
    assert str(escape(text)) in page
    note = nonfinite_sentences(got)
    assert len(note) == 1 and note[0].startswith("Layer layer1 holds 1 non-finite activation value at 1 of 2")
    assert str(escape(note[0])) in page  # as the template escapes


def test_run_diverged_from_the_start_is_refused(base, tmp_path):
    """Nothing finite to analyse: a clear error, not a crash inside a layout."""
    root, path, _, _ = base

    def edit(s, probe, rec):
        rec.acts["layer1"][:] = np.nan
    with pytest.raises(ValueError, match="diverged from its first snapshot"):
        analyze(_rewrite(path, tmp_path / "nan.h5", edit=edit), tmp_path / "n.h5", layout_methods=LAYOUTS)

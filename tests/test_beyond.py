"""Beyond the study (issue 12) in the analysis: calibration, dormant units, NC1, the NAP gap and the trends.

Each result of the pipeline is checked against numpy written here from the store's own arrays; the trends'
verdicts against planted intervals.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from topotrace.analysis.findings import TRENDS, trend_findings
from topotrace.analysis.pipeline import N_BOOT_TRENDS, analyze
from topotrace.analysis.results import load_results
from topotrace.instrument.store import Store
from topotrace.instrument.synthetic import write_synthetic_store


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A synthetic run (heldout and train probe sets), analysed once; (store path, results)."""
    d = tmp_path_factory.mktemp("beyond")
    store = write_synthetic_store(d / "store.h5", n_snapshots=5, layer_sizes=(20, 6), n_classes=3, per_class=10,
                                  seed=4)
    return store, analyze(store, layout_methods=["pca"])


def _ece_loop(conf, correct, bins=15):
    """ECE with a Python loop over equal-width bins (b/B, (b+1)/B], confidence 0 in the first."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (conf > lo) & (conf <= hi) if b else (conf >= 0) & (conf <= hi)
        if sel.any():
            total += sel.sum() / len(conf) * abs(correct[sel].mean() - conf[sel].mean())
    return total


def test_ece_and_loss_minimum_match_numpy(run):
    """ECE per probe set, measure and snapshot equals a loop over bins; loss_min is the held-out loss argmin."""
    store, res = run
    with Store(store) as st:
        for p, cal in res.calibration.items():
            assert cal.measures == ["max_prob", "temp_prob_cv"] and cal.ece.shape == (2, res.n_snapshots)
            for s in range(res.n_snapshots):
                conf, correct = st.conf(p, "max_prob")[s].astype(np.float64), st.correct(p)[s].astype(bool)
                assert cal.ece[0, s] == pytest.approx(_ece_loop(conf, correct), abs=1e-12)
                assert cal.counts[0, s].sum() == len(conf)
        assert res.loss_min == int(np.argmin(st.loss("heldout").mean(axis=1)))


def test_dormant_share_and_nc1_match_numpy(run):
    """Per snapshot: the tau-dormant share and NC1 of each layer equal their definitions in plain numpy."""
    store, res = run
    tau = res.params["dormant_tau"]
    with Store(store) as st:
        labels = st.labels("heldout")
        for name, lr in res.layers.items():
            for s in range(res.n_snapshots):
                a = st.acts("heldout", name, s).astype(np.float64)  # [n, N]
                score = np.abs(a).mean(0) / np.abs(a).mean()
                np.testing.assert_array_equal(lr.dormant_mask[s], score <= tau)
                assert lr.dormant[s] == pytest.approx((score <= tau).mean())
                means = np.array([a[labels == c].mean(0) for c in range(3)])  # [C, N]
                sw = sum(np.outer(x - means[y], x - means[y]) for x, y in zip(a, labels)) / len(a)
                cm = means - means.mean(0)
                sb = cm.T @ cm / 3
                assert lr.nc1[s] == pytest.approx(np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10)) / 3, rel=1e-6)


def test_nap_gap_matches_numpy(run):
    """The NAP gap is ||NAP_train - NAP_heldout||_F / ||NAP_heldout||_F of the class NAPs at each snapshot."""
    store, res = run
    with Store(store) as st:
        for name, lr in res.layers.items():
            for s in range(res.n_snapshots):
                nap = {p: np.array([st.acts(p, name, s).astype(np.float64)[st.labels(p) == c].mean(0)
                                    for c in range(3)]) for p in ("heldout", "train")}
                want = np.linalg.norm(nap["train"] - nap["heldout"]) / np.linalg.norm(nap["heldout"])
                assert lr.nap_gap[s] == pytest.approx(want, rel=1e-5)


def test_trends_cached_and_intervals_bracket_the_effect(run, tmp_path):
    """The trends survive the cache; each bootstrap interval over probe samples brackets its effect."""
    _, res = run
    for lr in res.layers.values():
        for key in ("dormant_change", "nc1_log_ratio"):
            effect, lo, hi = lr.trends[key]
            assert lo <= hi and (effect == 0 or lo <= effect <= hi) or np.isnan(lo)
        assert lr.trends["nc1_log_ratio"][0] == pytest.approx(np.log(lr.nc1[-1] / lr.nc1[0]))
    back = load_results(res.store_path.replace("store.h5", "analysis.h5"))
    for name, lr in res.layers.items():
        for key, v in lr.trends.items():
            np.testing.assert_array_equal(back.layers[name].trends[key], v)
        np.testing.assert_array_equal(back.layers[name].dormant_mask, lr.dormant_mask)
    assert back.loss_min == res.loss_min and sorted(back.calibration) == sorted(res.calibration)


def _planted(res, dormant, nc1, ece):
    """``res`` with planted trend intervals: dormant change, NC1 log ratio (last over first), ECE change."""
    layers = {k: dataclasses.replace(v, trends={"dormant_change": np.array(dormant),
                                                "nc1_log_ratio": np.array(nc1)}) for k, v in res.layers.items()}
    return dataclasses.replace(res, layers=layers, ece_trend={"max_prob": np.array(ece)})


def test_trend_verdicts_follow_the_rule(run):
    """One run: its bootstrap interval decides; three runs: the t-interval across them and every run's own."""
    _, res = run
    one = trend_findings([_planted(res, [0.1, 0.05, 0.2], [-2.0, -2.5, -1.5], [0.02, -0.01, 0.05])])
    by = {(f.layer, f.claim): f for f in one}
    assert set(f.claim for f in one) == set(TRENDS)
    assert by[("layer0", "dormant_share_grows")].verdict == "holds in this run"  # one run: one run's words
    nc1 = by[("layer0", "nc1_falls")]
    assert nc1.verdict == "holds in this run" and (nc1.effect, nc1.ci_low, nc1.ci_high) == (2.0, 1.5, 2.5)
    assert by[("", "ece_rises_after_loss_minimum")].verdict == "does not hold in this run"  # straddles 0
    runs = [_planted(res, [d, d - 0.01, d + 0.01], [-1, -1.2, -0.8], [0.01, 0.005, 0.02]) for d in (0.1, 0.12, 0.02)]
    across = {(f.layer, f.claim): f for f in trend_findings(runs, ["a", "b", "c"])}
    d = across[("layer0", "dormant_share_grows")]
    x = np.array([0.1, 0.12, 0.02])
    half = 4.302652729911275 * x.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert d.effect == pytest.approx(x.mean()) and d.ci_low == pytest.approx(x.mean() - half)
    assert d.verdict == ("supported" if x.mean() - half > 0 else "not supported") and d.n_runs == 3
    assert across[("", "ece_rises_after_loss_minimum")].verdict == "supported"


@pytest.mark.slow
def test_findings_json_holds_the_trends(run, tmp_path):
    """`topotrace report` writes the trends into findings.json next to the study's claims."""
    from topotrace.cli import main

    store, _ = run
    out = tmp_path / "r" / "report.html"
    out.parent.mkdir()
    assert main(["report", str(store), "--out", str(out), "--layouts", "pca"]) == 0
    found = json.loads((tmp_path / "r" / "findings.json").read_text("utf-8"))
    claims = {f["claim"] for f in found}
    assert {"dormant_share_grows", "nc1_falls", "stronger_with_time"} <= claims
    page = out.read_text("utf-8")
    assert "The study&#39;s claims on both probe sets" in page or "The study's claims on both probe sets" in page
    assert (store.parent / "analysis_train.h5").exists()  # the train probe set's analysis, for that table
    from topotrace.analysis.findings import run_findings
    from topotrace.report_templates.words import interval, number

    train = run_findings(load_results(store.parent / "analysis_train.h5"))
    t = next(f for f in train if f.layer == "layer0" and f.claim == "stronger_with_time")
    assert f"{number(t.effect)} [{interval(t)}]" in page.replace("&#8722;", "\u2212")
    nc1 = next(f for f in found if f["claim"] == "nc1_falls" and f["layer"] == "layer0")
    assert nc1["verdict"] in ("holds in this run", "does not hold in this run") and nc1["n_runs"] == 1
    assert N_BOOT_TRENDS >= 100


@pytest.mark.slow
def test_dormant_units_shipped_for_hollow_markers(run, tmp_path):
    """The maps' callback carries each layer's dormant mask at the shown snapshots, and a marker source."""
    from bokeh.models import ColumnDataSource, CustomJS, GlyphRenderer

    from topotrace.report_templates.generate import report_roots
    from topotrace.report_templates.maps import RENDER_NAME

    _, res = run
    planted = np.zeros_like(res.layers["layer0"].dormant_mask)
    planted[:, [1, 4]] = True
    planted[-1, 7] = True
    layers = dict(res.layers, layer0=dataclasses.replace(res.layers["layer0"], dormant_mask=planted))
    roots = report_roots(dataclasses.replace(res, layers=layers))
    cb = next(m for r in roots.values() for m in r.select({"type": CustomJS}) if m.name == RENDER_NAME)
    marks, masks = cb.args["dormant"][0]
    assert isinstance(marks, ColumnDataSource) and len(marks.data["x"]) == 0  # filled in the browser
    np.testing.assert_array_equal(masks.data["m"], planted.astype(np.uint8))
    marker_renderers = [r for root in roots.values() for r in root.select({"type": GlyphRenderer})
                        if r.data_source is marks]
    assert marker_renderers and all(r.glyph.fill_color == "white" for r in marker_renderers)


@pytest.mark.slow
def test_dormant_tau_is_a_parameter(run, tmp_path, capsys):
    """analyze(dormant_tau=...) and `--dormant-tau` set the threshold; a negative one is refused in one line."""
    from topotrace.cli import main

    store, _ = run
    res = analyze(store, tmp_path / "a.h5", layout_methods=["pca"], dormant_tau=0.9)
    assert res.params["dormant_tau"] == 0.9
    with Store(store) as st:
        a = st.acts("heldout", "layer0", 2).astype(np.float64)
    score = np.abs(a).mean(0) / np.abs(a).mean()
    np.testing.assert_array_equal(res.layers["layer0"].dormant_mask[2], score <= 0.9)
    with pytest.raises(ValueError, match="dormant_tau"):
        analyze(store, tmp_path / "b.h5", dormant_tau=-1)
    assert main(["analyze", str(store), "--dormant-tau", "-0.5", "--layouts", "pca"]) == 2
    assert "dormant_tau" in capsys.readouterr().err

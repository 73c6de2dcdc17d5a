"""The verdict rule (analysis.findings): smallest effects of interest, time courses, one run's words vs a study's.

Planted per-sample data with known answers: sample i at snapshot s has strength ``means[s] * u_i`` with fixed
positive ``u`` of mean 1, so the mean per snapshot is exactly ``means[s]`` and every change is perfectly
consistent across samples (narrow bootstrap intervals): the cases where a tiny change used to read as a finding.
"""

import json
import math

import numpy as np
import pytest

from topotrace.analysis import evidence as ev
from topotrace.analysis.findings import (
    RunEffect,
    check_thresholds,
    combine,
    course,
    rule_text,
    verdict,
    write_findings_json,
)
from topotrace.analysis.vocabulary import RUN_VERDICTS, STUDY_COMMAND, STUDY_VERDICTS
from topotrace.report_templates.words import VERDICT_COLOR, VERDICT_STYLE, finding_sentence, scope_note

N, N_CLASSES = 400, 4


def _run(means, seed=0, rho=None, n=N):
    """One run's per-sample evidence: strength (and distinctness) ``means[s] * u_i``; with ``rho``, a confidence
    measure related to the last snapshot's strength with Pearson ``rho`` (else unrelated noise)."""
    rng = np.random.default_rng(seed)
    u = rng.gamma(25.0, 1 / 25.0, n)
    u /= u.mean()
    per = np.asarray(means, np.float64)[:, None] * u[None, :]  # [S, n]
    s = per.shape[0]
    conf = rng.normal(size=(s, n, 1))
    if rho is not None:
        z = (per[-1] - per[-1].mean()) / per[-1].std()
        conf[-1, :, 0] = rho * z + math.sqrt(1 - rho**2) * rng.normal(size=n)
    labels = np.arange(n) % N_CLASSES
    return ev.sample_evidence(np.stack([per, per]), conf, labels, N_CLASSES, ["c"], n_boot=300, seed=seed)


def _time(evs, steps, **kw):
    names = [f"seed {i}" for i in range(len(evs))]
    return combine("conv1", "stronger_with_time", "", evs, names, np.asarray(steps), **kw)


STEPS = [0, 49, 98, 147, 196]


def test_a_one_percent_consistent_change_is_negligible():
    """+1 % with a narrow interval: inside ±10 % of the first snapshot -> negligible; with a smaller threshold
    (0.5 %) or none (0) the same numbers hold in the run."""
    means = [0.2, 0.2005, 0.201, 0.2015, 0.202]
    f = _time([_run(means)], STEPS)
    d = 0.1 * 0.2  # the smallest effect of interest, by hand
    assert f.min_effect == pytest.approx(d) and f.relative == pytest.approx(0.01)
    assert f.effect == pytest.approx(0.002) and -d < f.ci_low <= f.ci_high < d and f.ci_low > 0
    assert f.verdict == "negligible in this run" and f.course == "flat"
    assert _time([_run(means)], STEPS, min_change=0.005).verdict == "holds in this run"
    assert _time([_run(means)], STEPS, min_change=0.0).verdict == "holds in this run"
    study = _time([_run(means, seed=k) for k in range(3)], STEPS)
    assert study.verdict == "negligible" and study.n_runs == 3


def test_dip_and_recover_is_named_and_not_growth():
    """The issue's CNN: 0.259 -> 0.131 (step 98) -> 0.262 is a dip and a recovery, never "stronger with time"."""
    f = _time([_run([0.259, 0.2, 0.131, 0.2, 0.262])], STEPS)
    assert (f.course, f.extreme_step) == ("dips then recovers", 98)
    assert f.extreme_value == pytest.approx(0.131, abs=1e-12) and f.peak_step == -1
    assert f.verdict == "negligible in this run"  # +1.2 %, its interval inside ±0.0259
    text = finding_sentence(f)
    assert "change 0.003 (+1.16 % of the first snapshot)" in text
    assert "smallest effect of interest ±0.0259 (10 % of the first snapshot) — negligible in this run." in text
    assert text.endswith("Course: dips then recovers, trough 0.131 at step 98, 0.262 at the last snapshot (0.259 at "
                         "the first).")
    # ends 15 % up, but fell by 50 % first: the gain is no more than a recovery -> not growth
    g = _time([_run([0.26, 0.2, 0.13, 0.2, 0.30])], STEPS)
    assert g.course == "dips then recovers" and g.ci_low > g.min_effect
    assert g.verdict == "does not hold in this run"
    assert "a recovery, not growth" in finding_sentence(g)
    study = _time([_run([0.26, 0.2, 0.13, 0.2, 0.30], seed=k) for k in range(3)], STEPS)
    assert study.verdict == "not supported" and study.course == "dips then recovers"
    # a small early dip, then a doubling: growth, with the dip named
    h = _time([_run([0.26, 0.23, 0.3, 0.4, 0.52])], STEPS)
    assert (h.course, h.extreme_step, h.verdict) == ("dips then recovers", 49, "holds in this run")


def test_rising_course_holds_in_a_run_and_is_supported_by_a_study():
    means = [0.2, 0.25, 0.3, 0.35, 0.4]
    one = _time([_run(means)], STEPS)
    assert (one.course, one.extreme_step, one.verdict) == ("rises", -1, "holds in this run")
    assert math.isnan(one.extreme_value) and one.relative == pytest.approx(1.0)
    study = _time([_run([m * (1 + 0.03 * k) for m in means], seed=k) for k in range(3)], STEPS)
    assert (study.course, study.verdict, study.n_runs) == ("rises", "supported", 3)
    assert study.min_effect == pytest.approx(0.1 * np.mean([0.2 * (1 + 0.03 * k) for k in range(3)]))


def test_rises_then_falls_back_and_falls():
    f = _time([_run([0.2, 0.35, 0.5, 0.4, 0.3])], STEPS)
    assert (f.course, f.extreme_step, f.peak_step) == ("rises then falls back", 98, 98)
    assert f.extreme_value == pytest.approx(0.5)
    assert f.verdict == "holds in this run"  # still 50 % above the start at the end
    assert "Course: rises then falls back, peak 0.5 at step 98" in finding_sentence(f)
    g = _time([_run([0.4, 0.35, 0.3, 0.25, 0.2])], STEPS)
    assert (g.course, g.verdict, g.extreme_step) == ("falls", "does not hold in this run", -1)
    study = _time([_run([0.4, 0.35, 0.3, 0.25, 0.2], seed=k) for k in range(2)], STEPS)
    assert study.verdict == "not supported"


def test_confidence_claims_have_a_smallest_correlation():
    """No relation in 3000 samples: an interval inside ±0.1 is negligible; 0.5 holds; min_r=0 makes 0 inconclusive."""
    names, steps = ["run"], np.array([0, 10])
    none = _run([0.2, 0.3], seed=1, rho=0.0, n=3000)
    f = combine("conv1", "stronger_with_confidence", "c", [none], names, steps)
    assert f.min_effect == 0.1 and -0.1 < f.ci_low < f.ci_high < 0.1
    assert f.verdict == "negligible in this run" and f.course == "" and f.extreme_step == -1
    assert combine("conv1", "stronger_with_confidence", "c", [none], names, steps,
                   min_r=0.0).verdict == "does not hold in this run"
    strong = _run([0.2, 0.3], seed=2, rho=0.5, n=3000)
    g = combine("conv1", "stronger_with_confidence", "c", [strong], names, steps)
    assert g.ci_low > 0.1 and g.verdict == "holds in this run"
    assert "smallest effect of interest ±0.1 — holds in this run." in finding_sentence(g)


def test_verdict_rule_is_an_equivalence_rule():
    """supported: interval above +d (and every run's); negligible: inside (-d, d); otherwise not supported."""
    a, b, weak = RunEffect("a", 0.3, 0.15, 0.45), RunEffect("b", 0.3, 0.2, 0.4), RunEffect("c", 0.2, 0.05, 0.35)
    assert verdict(0.15, [a, b], 0.4, 0.1) == "supported"
    assert verdict(0.15, [a, weak], 0.4, 0.1) == "mixed"  # run c's own interval reaches below +d
    assert verdict(0.05, [a, b], 0.4, 0.1) == "not supported"  # inconclusive: straddles +d
    assert verdict(-0.05, [a, b], 0.05, 0.1) == "negligible"
    assert verdict(-0.1, [a, b], 0.05, 0.1) == "not supported"  # touches -d: not inside
    assert verdict(-0.4, [a, b], -0.2, 0.1) == "not supported"  # the other direction
    assert verdict(0.15, [a, b], 0.4, 0.1, recovery=True) == "not supported"
    assert verdict(-0.01, [a, b], 0.01, 0.0) == "not supported"  # d = 0: never negligible
    assert verdict(float("nan"), [a, b], float("nan"), 0.1) == "not supported"
    one = [a]
    assert [verdict(0.15, one, 0.4, 0.1), verdict(-0.05, one, 0.05, 0.1), verdict(0.05, one, 0.4, 0.1)] == list(
        RUN_VERDICTS)
    assert not set(RUN_VERDICTS) & set(STUDY_VERDICTS)


def test_course_rule_on_hand_made_curves():
    steps = np.array([0, 1, 2, 3])
    narrow = lambda c: np.stack([np.asarray(c) - 0.01, np.asarray(c) + 0.01], 1)  # noqa: E731
    assert course(steps, [1.0, 1.5, 1.3, 1.2], narrow([1.0, 1.5, 1.3, 1.2]), 0.1) == ("rises then falls back", 1, 1.5)
    assert course(steps, [1.0, 0.5, 0.7, 1.0], narrow([1.0, 0.5, 0.7, 1.0]), 0.1) == ("dips then recovers", 1, 0.5)
    assert course(steps, [1.0, 1.3, 0.4, 1.0], narrow([1.0, 1.3, 0.4, 1.0]), 0.1)[:2] == ("dips then recovers", 2)
    assert course(steps, [1.0, 1.1, 1.3, 1.4], narrow([1.0, 1.1, 1.3, 1.4]), 0.1)[0] == "rises"
    assert course(steps, [1.4, 1.3, 1.1, 1.0], narrow([1.4, 1.3, 1.1, 1.0]), 0.1)[0] == "falls"
    assert course(steps, [1.0, 1.05, 1.0, 0.98], narrow([1.0, 1.05, 1.0, 0.98]), 0.1)[0] == "flat"  # within d
    wide = np.stack([np.full(4, 0.8), np.full(4, 1.2)], 1)  # the ends lie inside the trough's interval
    assert course(steps, [1.0, 0.85, 0.9, 1.0], wide, 0.1)[0] == "flat"
    assert course(steps, [1.0, 0.85, 0.9, 1.0], np.full((4, 2), np.nan), 0.1)[0] == "flat"  # no band: no extreme
    assert course(steps, [np.nan, 1.0, 1.0, 1.0], narrow([1.0] * 4), 0.1)[0] == ""


def test_one_run_reads_as_one_run_and_a_study_as_a_study():
    """One run never says "supported", nor in the study's colour; its note says how to make a study."""
    means = [0.2, 0.25, 0.3, 0.35, 0.4]
    one = _time([_run(means)], STEPS)
    study = _time([_run(means, seed=k) for k in range(3)], STEPS)
    assert "— holds in this run." in finding_sentence(one) and "supported" not in finding_sentence(one)
    assert "— supported." in finding_sentence(study) and "in this run" not in finding_sentence(study)
    assert VERDICT_COLOR[one.verdict] != VERDICT_COLOR[study.verdict]
    assert VERDICT_STYLE[one.verdict] != VERDICT_STYLE[study.verdict]
    assert set(VERDICT_COLOR) == set(STUDY_VERDICTS) | set(RUN_VERDICTS) == set(VERDICT_STYLE)
    assert STUDY_COMMAND == "topotrace study runs/a runs/b runs/c --name NAME"
    assert STUDY_COMMAND in scope_note([one]) and scope_note([study]) == ""
    assert STUDY_COMMAND in one.rule and "holds in this run" in one.rule


def test_thresholds_are_settable_and_written_to_findings_json(tmp_path):
    means = [0.2, 0.25, 0.3, 0.35, 0.4]
    run = _run(means, rho=0.3)
    found = [_time([run], STEPS, min_change=0.2, min_r=0.3),
             combine("conv1", "stronger_with_confidence", "c", [run], ["run"], np.array(STEPS), 0.2, 0.3)]
    out = json.loads(write_findings_json(found, tmp_path / "findings.json").read_text("utf-8"))
    t, c = out
    assert t["min_effect"] == pytest.approx(0.2 * 0.2) and c["min_effect"] == pytest.approx(0.3)
    assert (t["course"], t["extreme_step"], t["extreme_value"]) == ("rises", -1, None)
    assert t["relative"] == pytest.approx(1.0) and c["relative"] is None and t["verdict"] == "holds in this run"
    for f in out:
        assert f["rule"] == rule_text(0.2, 0.3)
        assert "0.2 times the first snapshot's mean (a change of 20 %)" in f["rule"]
        assert "partial correlation of 0.3" in f["rule"]
    assert "0.1 times the first snapshot's mean (a change of 10 %)" in rule_text()
    with pytest.raises(ValueError, match="'min_change' smallest effect of interest must be a number >= 0"):
        check_thresholds(-0.1, 0.1)
    with pytest.raises(ValueError, match="'min_r' smallest effect of interest must be a number >= 0 and < 1"):
        combine("conv1", "stronger_with_confidence", "c", [run], ["run"], np.array(STEPS), 0.1, 1.0)


@pytest.mark.slow
def test_cli_thresholds_change_verdicts_from_the_cached_analysis(tmp_path, capsys):
    """--min-change / --min-r: checked in one line before any work; they change the verdicts of `analyze` and
    `report` (and findings.json) without recomputing the cached analysis."""
    from topotrace.cli import main
    from topotrace.instrument.synthetic import write_synthetic_store

    for argv, option in ((["analyze", str(tmp_path / "none"), "--min-change", "-0.1"], "--min-change"),
                         (["analyze", str(tmp_path / "none"), "--min-change", "nan"], "--min-change"),
                         (["report", str(tmp_path / "none"), "--min-r", "1"], "--min-r")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"topotrace: error: The '{option}' option must be")
    store = write_synthetic_store(tmp_path / "run" / "store.h5", n_snapshots=4, layer_sizes=(12,), n_classes=3,
                                  per_class=10)
    assert main(["analyze", str(store.parent)]) == 0 and "computed" in capsys.readouterr().out
    cache = (store.parent / "analysis.h5").stat().st_mtime_ns
    assert main(["analyze", str(store.parent), "--min-change", "0"]) == 0
    out = capsys.readouterr().out
    assert "loaded from cache" in out and "holds in this run" in out and STUDY_COMMAND in out.replace("\n", "")
    assert main(["analyze", str(store.parent), "--min-change", "1000", "--min-r", "0.99"]) == 0
    out = capsys.readouterr().out
    assert "negligible in this run" in out and "1000 times the first snapshot" in out.replace("\n", " ")
    page = tmp_path / "r" / "report.html"
    page.parent.mkdir()
    assert main(["report", str(store.parent), "--out", str(page), "--min-change", "1000"]) == 0
    found = json.loads((page.parent / "findings.json").read_text("utf-8"))
    grows = next(f for f in found if f["claim"] == "stronger_with_time")
    assert grows["verdict"] == "negligible in this run" and grows["rule"] == rule_text(1000, 0.1)
    text = page.read_text("utf-8")  # the single run's report: one run's words, and how to make a study
    assert "— negligible in this run." in text and STUDY_COMMAND in text and "— supported." not in text
    assert (store.parent / "analysis.h5").stat().st_mtime_ns == cache  # verdicts from the cached numbers


def test_chart_rings_the_trough_in_the_verdict_colour():
    """The findings chart marks the trough that names the course and colours its title by the verdict."""
    from bokeh.models import GlyphRenderer, Scatter

    from topotrace.report_templates.findings_view import _chart

    f = _time([_run([0.259, 0.2, 0.131, 0.2, 0.262])], STEPS)
    fig = _chart(f)
    rings = [r for r in fig.renderers if isinstance(r, GlyphRenderer) and isinstance(r.glyph, Scatter)]
    assert len(rings) == 1 and list(rings[0].data_source.data["y"]) == [pytest.approx(0.131)]
    assert fig.title.text == "strength vs time" and fig.above[-1].text == "negligible in this run"
    assert fig.above[-1].text_color == VERDICT_COLOR[f.verdict]
    assert not [r for r in _chart(_time([_run([0.2, 0.3, 0.4, 0.5, 0.6])], STEPS)).renderers
                if isinstance(r, GlyphRenderer) and isinstance(r.glyph, Scatter)]

"""The one renderer of results as sentences (report_templates.words), used by the HTML report and the terminal."""

import numpy as np

from topotrace.analysis.findings import Finding, RunEffect
from topotrace.report_templates.words import finding_sentence, number


def _finding(claim, measure="", effect=0.5, lo=0.2, hi=0.8, n_runs=3, verdict="supported", curve=None, **kw):
    steps = np.array([0, 10, 100])
    curve = np.array([0.1, 0.6, 0.4]) if curve is None else curve
    runs = [RunEffect(f"seed {i}", effect, lo, hi) for i in range(n_runs)]
    return Finding("hidden1", claim, measure, effect, lo, hi, n_runs, verdict, "", runs, steps, curve,
                   np.zeros((3, 2)), np.zeros((n_runs, 3)), **kw)


def test_sentences_carry_effect_interval_and_verdict():
    """A finding reads as its claim, layer, measure, effect, the kind of interval, the interval, the smallest effect
    of interest, the verdict and the course (with its peak or trough) or the onset."""
    f = _finding("stronger_with_time", peak_step=10, course="rises then falls back", extreme_step=10,
                 extreme_value=0.6, min_effect=0.01, relative=5.0)
    assert finding_sentence(f) == (
        "Activity becomes stronger with training time (hidden1): change 0.5 (+500 % of the first snapshot), 95 % "
        "t-interval across 3 runs 0.2 to 0.8; smallest effect of interest ±0.01 (10 % of the first snapshot) — "
        "supported. Course: rises then falls back, peak 0.6 at step 10, 0.4 at the last snapshot (0.1 at the "
        "first).")
    assert finding_sentence(_finding("more_distinct_with_time", course="rises", min_effect=0.01)).endswith(
        "— supported. Course: rises, 0.4 at the last snapshot (0.1 at the first).")
    g = _finding("more_distinct_with_confidence", "logit_margin", -0.25, -0.4, -0.1, n_runs=1,
                 verdict="does not hold in this run", onset_step=-1, min_effect=0.1)
    assert finding_sentence(g) == (
        "The more confident the network, the more class-distinct a sample's activity (hidden1, confidence = "
        "logit_margin): partial Spearman ρ at the last snapshot −0.25, 95 % bootstrap interval over probe samples, "
        "1 run −0.4 to −0.1; smallest effect of interest ±0.1 — does not hold in this run.")
    h = _finding("stronger_with_confidence", "margin", onset_step=10)
    assert finding_sentence(h).endswith("— supported. The interval stays above 0 from step 10 on.")


def test_numbers():
    assert (number(0.12345), number(-2.5), number(float("nan")), number(0.0001234)) == (
        "0.123", "−2.5", "n/a", "1.23e−04")


def test_percent_reads_as_a_percentage_at_any_size():
    """Large relative changes read as whole percent with separators, never in exponent form."""
    from topotrace.report_templates.words import percent

    assert [percent(v) for v in (13.1, -25.3, 1.56, -0.486, 0.01)] == ["+1,310 %", "−2,530 %", "+156 %", "−48.6 %",
                                                                     "+1 %"]

"""The one renderer of results as sentences (report_templates.words), used by the HTML report and the terminal."""

from topotrace.analysis.results import Trend
from topotrace.report_templates.words import trend_sentence


def _trend(verdict, value=0.8, p=1e-4, versus="time", quantity="strength", n=12):
    return Trend(quantity, versus, "spearman_rho", value, p, verdict, n)


def test_each_verdict_reads_as_its_own_sentence():
    """Rises, falls, no trend and not enough data give distinct sentences with the numbers behind them."""
    assert trend_sentence(_trend("rises")) == (
        "Activity strength rises with training time (Spearman rho = 0.80, p = 0.0001, over 12 snapshots).")
    assert trend_sentence(_trend("falls", -0.7, versus="confidence", quantity="distinctness", n=30)) == (
        "Class distinctness falls with confidence (Spearman rho = -0.70, p = 0.0001, bin index vs value centred "
        "per snapshot, 30 cells).")
    assert "shows no significant trend with training time" in trend_sentence(_trend("no trend", 0.1, 0.6))
    assert trend_sentence(_trend("not enough data", float("nan"), float("nan"))) == (
        "Not enough data to tell whether activity strength changes with training time.")

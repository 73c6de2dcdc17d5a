"""Words for numbers: the one place where analysis results become sentences, for the HTML and the terminal.

The analysis stores effects, statistics and verdicts only (:class:`topotrace.analysis.results.Trend`); the
report and ``topotrace analyze`` both call these functions, so a result reads the same everywhere. The
returned text is plain: callers escape it for their medium (HTML, rich markup).
"""

from __future__ import annotations

import math

from topotrace.analysis.results import Trend

QUANTITY = {"strength": "activity strength", "distinctness": "class distinctness"}
VERSUS = {"time": "with training time", "confidence": "with confidence"}
VERDICT = {"rises": "rises", "falls": "falls", "no trend": "shows no significant trend",
           "not enough data": "cannot be judged"}


def trend_detail(t: Trend) -> str:
    """What the statistic was computed over, e.g. ``"over 60 snapshots"``."""
    if t.versus == "time":
        return f"over {t.n} snapshots"
    return f"bin index vs value centred per snapshot, {t.n} cells"


def trend_sentence(t: Trend) -> str:
    """One sentence for a trend, e.g. ``"Activity strength rises with training time (Spearman rho = 0.93, ...)."``."""
    quantity = QUANTITY.get(t.quantity, t.quantity)
    versus = VERSUS.get(t.versus, f"with {t.versus}")
    if t.verdict == "not enough data" or not math.isfinite(t.value):
        return f"Not enough data to tell whether {quantity} changes {versus}."
    verb = VERDICT.get(t.verdict, t.verdict)
    return (f"{quantity[:1].upper()}{quantity[1:]} {verb} {versus} (Spearman rho = {t.value:.2f}, "
            f"p = {t.p_value:.2g}, {trend_detail(t)}).")

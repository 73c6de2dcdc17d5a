"""The findings in words: claims, verdicts (their colours), effects, intervals, time courses and trends.

The analysis makes the verdicts and courses (:mod:`topotrace.analysis.vocabulary` holds their words, re-exported
here); these functions turn a :class:`topotrace.analysis.findings.Finding` into the sentences and table cells
the report and the terminal show, so a result reads the same everywhere. The returned text is plain: callers
escape it for their medium (HTML, rich markup).
"""

from __future__ import annotations

import math

import numpy as np

from ...analysis.findings import Finding
from ...analysis.vocabulary import (
    EXTREME,
    IN_THIS_RUN,
    MIXED,
    NEGLIGIBLE,
    NOT_SUPPORTED,
    RUN_VERDICTS,
    STUDY_COMMAND,
    SUPPORTED,
    TROUGH,
)
from .numbers import number, percent, percentage_points, ratio

CLAIM_TEXT = {
    "stronger_with_time": "Activity becomes stronger with training time",
    "more_distinct_with_time": "Activity becomes more class-distinct with training time",
    "stronger_with_confidence": "The more confident the network, the stronger a sample's activity",
    "more_distinct_with_confidence": "The more confident the network, the more class-distinct a sample's activity",
}
CLAIM_SHORT = {
    "stronger_with_time": "stronger with time",
    "more_distinct_with_time": "more distinct with time",
    "stronger_with_confidence": "stronger with confidence",
    "more_distinct_with_confidence": "more distinct with confidence",
}

# The verdicts' colours: a study's (green when supported) and one run's (blue when it holds: never the study's
# green, so one run's narrow bootstrap interval does not read as a finding across seeds). HTML and terminal.
VERDICT_COLOR = {SUPPORTED: "#1a7f37", MIXED: "#9a6700", NEGLIGIBLE: "#8250df", NOT_SUPPORTED: "#57606a",
                 IN_THIS_RUN[SUPPORTED]: "#0969da", IN_THIS_RUN[NEGLIGIBLE]: "#8250df",
                 IN_THIS_RUN[NOT_SUPPORTED]: "#57606a"}
VERDICT_STYLE = {SUPPORTED: "bold green", MIXED: "yellow", NEGLIGIBLE: "magenta", NOT_SUPPORTED: "",
                 IN_THIS_RUN[SUPPORTED]: "cyan", IN_THIS_RUN[NEGLIGIBLE]: "magenta",
                 IN_THIS_RUN[NOT_SUPPORTED]: ""}
ONE_RUN_NOTE = ("These verdicts speak for this one run only (its 95 % bootstrap interval over probe samples): "
                f"\"{RUN_VERDICTS[0]}\", never \"{SUPPORTED}\". A verdict across seeds needs a study of replicate "
                f"runs; make one from runs you already have with: {STUDY_COMMAND}")


def scope_note(found: list[Finding]) -> str:
    """For one run's findings, what its verdicts speak for and how to get a verdict across seeds; else ``""``."""
    return ONE_RUN_NOTE if found and found[0].n_runs == 1 else ""



def interval(f: Finding) -> str:
    """``"0.12 to 0.31"``, or "n/a" when the interval is undefined."""
    if not (math.isfinite(f.ci_low) and math.isfinite(f.ci_high)):
        return "n/a"
    return f"{number(f.ci_low)} to {number(f.ci_high)}"


def interval_kind(f: Finding) -> str:
    """What the interval is: across runs, or a bootstrap over probe samples for one run."""
    if f.n_runs == 1:
        return "95 % bootstrap interval over probe samples, 1 run"
    return f"95 % t-interval across {f.n_runs} runs"



def course_sentence(f: Finding) -> str:
    """The time course of a time claim in one sentence; ``""`` for the other findings.

    E.g. "Course: dips then recovers, trough 0.131 at step 98, 0.262 at the last snapshot (0.259 at the first)."
    """
    if f.versus != "time" or not f.course:
        return ""
    curve = np.asarray(f.curve, np.float64)
    ends = f"{number(curve[-1])} at the last snapshot ({number(curve[0])} at the first)"
    if f.course in EXTREME:
        text = f"Course: {f.course}, {EXTREME[f.course]} {number(f.extreme_value)} at step {f.extreme_step:,}, {ends}."
        depth, gain = curve[0] - f.extreme_value, curve[-1] - curve[0]
        if f.course == TROUGH and depth >= gain and f.ci_low > f.min_effect:
            text += (" The dip below the first snapshot is at least as deep as the gain above it: a recovery, "
                     "not growth.")
        return text
    return f"Course: {f.course}, {ends}."


def finding_sentence(f: Finding) -> str:
    """One sentence per finding: effect, interval, smallest effect of interest, verdict, course or onset.

    E.g. "Activity becomes stronger with training time (conv1): change 0.0026 (+1 % of the first snapshot),
    95 % bootstrap interval over probe samples, 1 run 0.001 to 0.004; smallest effect of interest ±0.0259 (10 %
    of the first snapshot) — negligible in this run. Course: dips then recovers, trough 0.131 at step 98, 0.262
    at the last snapshot (0.259 at the first)."
    """
    measure = f", confidence = {f.measure}" if f.measure else ""
    effect = "change" if f.versus == "time" else "partial Spearman ρ at the last snapshot"
    relative = f" ({percent(f.relative)} of the first snapshot)" if f.versus == "time" and math.isfinite(
        f.relative) else ""
    sesoi = ""
    if f.min_effect > 0:
        of = ""
        first = float(np.asarray(f.curve, np.float64)[0]) if len(f.curve) else float("nan")
        if f.versus == "time" and math.isfinite(first) and first != 0:
            of = f" ({number(100 * f.min_effect / abs(first))} % of the first snapshot)"
        sesoi = f"; smallest effect of interest ±{number(f.min_effect)}{of}"
    text = (f"{CLAIM_TEXT[f.claim]} ({f.layer}{measure}): {effect} {number(f.effect)}{relative}, {interval_kind(f)} "
            f"{interval(f)}{sesoi} — {f.verdict}.")
    course = course_sentence(f)
    if course:
        text += " " + course
    if f.versus == "confidence" and f.onset_step >= 0:
        text += f" The interval stays above 0 from step {f.onset_step} on."
    return text


def effect_text(f: Finding) -> str:
    """What a finding's effect is, in a few words: ``"change"``, or ``"partial ρ with logit_margin"``."""
    return "change" if f.versus == "time" else f"partial ρ with {f.measure}"


def comparison_sentence(layer: str, claim: str, entries: list[tuple[str, Finding | str]]) -> str:
    """One sentence for one layer and claim over several runs: each run's verdict, effect and interval.

    E.g. "Activity becomes stronger with training time (hidden1): lr-0.1 supported (change 0.83, 0.77 to 0.89);
    lr-0.01 not supported (change 0.02, −0.05 to 0.1). The verdicts differ."

    Args:
        layer: the layer name.
        claim: a key of :data:`CLAIM_TEXT`.
        entries: ``(run label, finding)`` per run; where a run has no finding, a few words saying why instead
            (e.g. "no such layer").
    """
    parts = []
    for label, f in entries:
        if isinstance(f, str):
            parts.append(f"{label}: {f}")
        else:
            parts.append(f"{label} {f.verdict} ({effect_text(f)} {number(f.effect)}, {interval(f)})")
    verdicts = {f.verdict for _, f in entries if not isinstance(f, str)}
    ending = " The verdicts differ." if len(verdicts) > 1 else ""
    return f"{CLAIM_TEXT[claim]} ({layer}): {'; '.join(parts)}.{ending}"


# ------------------------------------------------------------------------------ one unit per quantity (trends)
# The trends beyond the study, each in the unit the report's collapse section uses: the dormant share's change in
# percentage points, NC1's change as the ratio last / first (the analysis keeps its log), the ECE's change as is.
TREND_TEXT = {"dormant_share_grows": "dormant share grows (change, pp)",
              "nc1_falls": "NC1 falls (ratio last / first)",
              "ece_rises_after_loss_minimum": "held-out ECE rises after the loss minimum (change)"}



def trend_name(f: Finding) -> str:
    """A trend finding's name in the tables (:data:`TREND_TEXT`), with its measure where it has one.

    E.g. ``"held-out ECE rises after the loss minimum (change) (max_prob)"``.
    """
    return TREND_TEXT.get(f.claim, f.claim) + (f" ({f.measure})" if f.measure else "")


def missing_finding(has_layer: bool) -> str:
    """Why a run has no finding for a layer, in a few words (a cell of the findings side by side)."""
    return "no per-sample evidence (analyse it again)" if has_layer else "no such layer"


def trend_effect(f: Finding) -> tuple[str, str]:
    """``(effect, 95 % interval)`` of a trend finding in its one unit (:data:`TREND_TEXT`).

    ``nc1_falls`` holds log(first / last) (positive: falls); it is shown as the ratio last / first, so its
    interval's ends swap.
    """
    if f.claim == "dormant_share_grows":
        if not (math.isfinite(f.ci_low) and math.isfinite(f.ci_high)):
            return percentage_points(f.effect), "n/a"
        return percentage_points(f.effect), f"{percentage_points(f.ci_low)} to {percentage_points(f.ci_high)}"
    if f.claim == "nc1_falls":
        if not (math.isfinite(f.ci_low) and math.isfinite(f.ci_high)):
            return ratio(-f.effect), "n/a"
        return ratio(-f.effect), f"{ratio(-f.ci_high)} to {ratio(-f.ci_low)}"
    return number(f.effect), interval(f)


# The verdicts of the report's trends tables (one run's: the first seed's in a study's report).
TREND_TABLE_NOTE = (f"Verdicts by the findings' rule with no smallest effect of interest, for this run's own interval: "
                    f"{IN_THIS_RUN[SUPPORTED]} when the interval lies on the trend's side (the dormant share grows: "
                    "above 0; NC1 falls: the ratio last / first below 1; the held-out ECE rises after the loss "
                    f"minimum: above 0), {IN_THIS_RUN[NOT_SUPPORTED]} otherwise.")

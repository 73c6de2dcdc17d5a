"""Words for numbers: the one place where analysis results become sentences, for the HTML and the terminal.

The analysis stores effects, intervals and verdicts only (:class:`topotrace.analysis.findings.Finding`); the
report and the command line both call these functions, so a result reads the same everywhere. The returned
text is plain: callers escape it for their medium (HTML, rich markup).
"""

from __future__ import annotations

import math

import numpy as np

from topotrace.analysis.findings import IN_THIS_RUN, STUDY_COMMAND, Finding
from topotrace.analysis.results import AnalysisResults, Divergence

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
VERDICT_COLOR = {"supported": "#1a7f37", "mixed": "#9a6700", "negligible": "#8250df", "not supported": "#57606a",
                 IN_THIS_RUN["supported"]: "#0969da", IN_THIS_RUN["negligible"]: "#8250df",
                 IN_THIS_RUN["not supported"]: "#57606a"}
VERDICT_STYLE = {"supported": "bold green", "mixed": "yellow", "negligible": "magenta", "not supported": "",
                 IN_THIS_RUN["supported"]: "cyan", IN_THIS_RUN["negligible"]: "magenta",
                 IN_THIS_RUN["not supported"]: ""}
ONE_RUN_NOTE = ("These verdicts speak for this one run only (its 95 % bootstrap interval over probe samples): "
                "\"holds in this run\", never \"supported\". A verdict across seeds needs a study of replicate "
                f"runs; make one from runs you already have with: {STUDY_COMMAND}")


def scope_note(found: list[Finding]) -> str:
    """For one run's findings, what its verdicts speak for and how to get a verdict across seeds; else ``""``."""
    return ONE_RUN_NOTE if found and found[0].n_runs == 1 else ""


def number(value: float, digits: int = 3) -> str:
    """A number for a sentence or a table: 3 significant digits, a real minus sign, "n/a" for NaN."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return text.replace("-", "−")


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


def percent(value: float) -> str:
    """A fraction as a signed percentage: ``"+1 %"``, ``"−48.6 %"``, ``"+1,310 %"``; "n/a" for NaN."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) >= 10:  # 1,000 % and more: whole percent with thousands separators, not "1.31e+03 %"
        return f"{100 * value:+,.0f} %".replace("-", "−")
    return ("+" if value > 0 else "") + number(100 * value) + " %"


def course_sentence(f: Finding) -> str:
    """The time course of a time claim in one sentence; ``""`` for the other findings.

    E.g. "Course: dips then recovers, trough 0.131 at step 98, 0.262 at the last snapshot (0.259 at the first)."
    """
    if f.versus != "time" or not f.course:
        return ""
    curve = np.asarray(f.curve, np.float64)
    ends = f"{number(curve[-1])} at the last snapshot ({number(curve[0])} at the first)"
    if f.course in ("rises then falls back", "dips then recovers"):
        what = "peak" if f.course == "rises then falls back" else "trough"
        text = f"Course: {f.course}, {what} {number(f.extreme_value)} at step {f.extreme_step:,}, {ends}."
        depth, gain = curve[0] - f.extreme_value, curve[-1] - curve[0]
        if f.course == "dips then recovers" and depth >= gain and f.ci_low > f.min_effect:
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


def _names(names: list[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def divergence_sentence(d: Divergence) -> str:
    """The banner of a diverged run.

    E.g. "The run diverged at step 1,200 (snapshot 7 of 10): layer fc1 and the logits hold non-finite values
    from there on; the analysis and maps stop at step 1,000."
    """
    parts = ([("layer " if len(d.layers) == 1 else "layers ") + _names(list(d.layers))] if d.layers else [])
    parts += ["the logits"] if d.outputs else []
    verb = "holds" if len(parts) == 1 and len(d.layers) == 1 else "hold"
    return (f"The run diverged at step {d.step:,} (snapshot {d.snapshot + 1} of {d.n_snapshots}): "
            f"{_names(parts)} {verb} non-finite values from there on; the analysis and maps stop at step "
            f"{d.last_step:,}.")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def nonfinite_sentences(results: AnalysisResults) -> list[str]:
    """One sentence per layer with non-finite activations, and one for non-finite outputs; empty when none.

    E.g. "Layer fc1 holds 12 non-finite activation values at 3 of 40 snapshots (first at step 200): each is left
    out of its neuron's profiles and correlations, and the per-sample statistics leave out up to 2 samples per
    snapshot."
    """
    steps = np.asarray(results.steps)
    n_s = len(steps)
    out = []

    def where(counts: np.ndarray) -> str:
        at = np.flatnonzero(counts)
        return f"at {at.size} of {n_s} snapshots (first at step {int(steps[at[0]]):,})"

    for layer in results.layers.values():
        values, samples = np.asarray(layer.excluded_values), np.asarray(layer.excluded_samples)
        if values.sum() > 0:
            out.append(f"Layer {layer.name} holds {_plural(int(values.sum()), 'non-finite activation value')} "
                       f"{where(values)}: each is left out of its neuron's profiles and correlations, and the "
                       f"per-sample statistics leave out up to {_plural(int(samples.max()), 'sample')} per snapshot.")
    outputs = np.asarray(results.nonfinite_outputs)
    if outputs.sum() > 0:
        out.append(f"Non-finite loss or confidence: up to {_plural(int(outputs.max()), 'probe sample')} per "
                   f"snapshot {where(outputs)}, left out of the correlations, the groupings by prediction and "
                   "confidence, the per-sample statistics and the curves.")
    return out


def unplaced_sentence(neurons: np.ndarray, shown: int = 20) -> str:
    """Which neurons a layout placed nowhere (no finite profile); empty when there are none.

    E.g. "2 neurons placed nowhere (no finite profile at the last snapshot): 4, 9."
    """
    ids = [int(i) for i in np.asarray(neurons).ravel()]
    if not ids:
        return ""
    listed = ", ".join(str(i) for i in ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")
    return f"{_plural(len(ids), 'neuron')} placed nowhere (no finite profile at the last snapshot): {listed}."


# ------------------------------------------------------------------------------------ definitions on the page
# What each confidence measure is, in one phrase (higher = more confident unless it is an uncertainty measure).
MEASURE_TEXT = {
    "max_prob": "the softmax probability of the predicted class",
    "margin": "the largest minus the second-largest softmax probability",
    "entropy": "the Shannon entropy of the softmax probabilities divided by log C, from 0 (all on one class) to 1 "
               "(uniform); an uncertainty: higher means less confident",
    "true_prob": "the softmax probability of the true class",
    "logit_margin": "the largest minus the second-largest logit",
    "temp_prob": "max_prob after dividing the logits by a temperature T fitted at each snapshot on the train probe "
                 "set (shows how sharp the fit of the training images is; not a calibration)",
    "temp_prob_cv": "max_prob after temperature scaling with T cross-fitted on halves of the probe set (fitted on "
                    "one half, applied to the other)",
    "mc_prob": "Monte-Carlo dropout (Gal & Ghahramani 2016): the largest probability of the softmax averaged over "
               "{passes} stochastic passes with dropout on",
    "mc_mutual_info": "Monte-Carlo dropout: the mutual information between the prediction and the dropout masks "
                      "(BALD, Houlsby et al. 2011), the entropy of the mean softmax minus the mean entropy of the "
                      "{passes} passes, in nats; an epistemic uncertainty: higher means less confident",
}


def measure_definitions(measures: list[str], meta: dict | None = None) -> list[tuple[str, str]]:
    """``(measure, definition)`` for each measure; one registered for the run reads as such.

    Args:
        measures: measure names, in the order to list them.
        meta: the run's metadata; its ``mc_dropout.passes`` gives the number of Monte-Carlo passes (K).
    """
    mc = (meta or {}).get("mc_dropout")
    passes = str(mc.get("passes")) if isinstance(mc, dict) and mc.get("passes") else "K"
    return [(m, MEASURE_TEXT[m].format(passes=passes) if m in MEASURE_TEXT else
             "a confidence measure registered for this run (higher: more confident)") for m in measures]


def uncertainty_note(measures: list[str], what: str = "r") -> str:
    """For the uncertainty measures among ``measures``: a positive ``what`` means activity rises with uncertainty.

    ``""`` when there are none. E.g. "entropy and mc_mutual_info measure uncertainty (higher: less confident): for
    them a positive r means activity rises as the network grows *less* confident, the opposite of the other
    measures. The findings turn their sign around so that "with confidence" reads the same for every measure."
    """
    from topotrace.instrument.confidence import UNCERTAINTY_MEASURES

    names = [m for m in measures if m in UNCERTAINTY_MEASURES]
    if not names:
        return ""
    verb = "measures" if len(names) == 1 else "measure"
    them = "it" if len(names) == 1 else "them"
    return (f"{_names(names)} {verb} uncertainty (higher: less confident): for {them} a positive {what} means "
            "activity rises as the network grows less confident, the opposite of the other measures. The findings "
            "turn the sign around so that \"with confidence\" reads the same for every measure.")


def dormant_glyph_note(tau: float | None, dormant: bool = True) -> str:
    """What the map glyphs are: the neuron dots and (``dormant``) the white circles of the tau-dormant units."""
    text = "Small open dots mark each neuron's place (hover one for its id and value; \"neuron dots\" hides them)."
    if dormant:
        at = f" (τ = {number(tau)})" if tau is not None and math.isfinite(tau) else ""
        text += (f" White circles with a dark ring mark the τ-dormant units{at} at the snapshot shown: units whose "
                 "mean |activation| over the probe samples is at most τ times the layer's average (Sokar et al. "
                 "2023; their share over training is in the dormant-units section).")
    return text


def bin_note(measure: str, bins: str, names: list[str]) -> str:
    """How the confidence bins are made: quantiles of each snapshot (the default) or edges pooled over snapshots."""
    example = f"\"{names[0]}\"" if names else "the first bin"
    if bins == "pooled":
        return (f"The bins are quantile bins of {measure} over all snapshots pooled: each bin is the same range of "
                f"{measure} at every snapshot, so early snapshots fill the low bins, late ones the high bins, and a "
                "bin can be empty (a blank map).")
    return (f"The bins are quantile bins of {measure} taken at each snapshot separately: {example} holds the "
            f"{_share(names)} of the probe samples the network is least confident about at that snapshot, "
            f"whatever their {measure} values. Every bin holds the same number of samples at every snapshot; the "
            "same bin covers higher confidence values as training goes on.")


def _share(names: list[str]) -> str:
    n = max(len(names), 1)
    return f"{number(100 / n)} %"


# ------------------------------------------------------------------------------ one unit per quantity (trends)
# The trends beyond the study, each in the unit the report's collapse section uses: the dormant share's change in
# percentage points, NC1's change as the ratio last / first (the analysis keeps its log), the ECE's change as is.
TREND_TEXT = {"dormant_share_grows": "dormant share grows (change, pp)",
              "nc1_falls": "NC1 falls (ratio last / first)",
              "ece_rises_after_loss_minimum": "held-out ECE rises after the loss minimum (change)"}


def percentage_points(value: float) -> str:
    """A change of a share (a fraction) in signed percentage points: ``"+1.5 pp"``, ``"−0.3 pp"``; "n/a" for NaN."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:+.1f} pp".replace("-", "−")


def ratio(log_value: float) -> str:
    """A ratio from its natural log: ``"0.0567×"``; "n/a" when undefined."""
    if log_value is None or not math.isfinite(log_value):
        return "n/a"
    return number(math.exp(log_value)) + "×"


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

"""Sentences about a run beyond its findings: divergence, non-finite values, unplaced neurons, definitions."""

from __future__ import annotations

import math

import numpy as np

from ...analysis.results import AnalysisResults, Divergence
from .numbers import _names, _plural, number


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
    from ...instrument.confidence import UNCERTAINTY_MEASURES

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


# The atlas's x axis, in words (written to atlas.json as "depth_rule" and shown on its page).
DEPTH_RULE = ("relative depth = weight layers (Linear and convolution) up to and including the layer's output, "
              "divided by the model's total weight layers")

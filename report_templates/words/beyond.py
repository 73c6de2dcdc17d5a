"""Sentences of the report beyond the study: calibration, overfitting (the held-out loss minimum) and trends.

The view modules compute the numbers (:mod:`topotrace.report_templates.beyond_page`) and pass them in; these
functions only word them. Plain text: the template escapes it.
"""

from __future__ import annotations

from ...analysis.calibration import TEMP_PROB_CV
from .numbers import number

TEMP_PROB_CV_NOTE = ("temp_prob_cv is temperature scaling fitted where it can calibrate: each probe set is split into "
                     "two halves (balanced per class, seeded), T is fitted on one half (lowest NLL) and applied to the "
                     "other, so every sample's scaled confidence comes from a T fitted without it and its ECE is "
                     "measured on samples the fit has not seen.")
TEMP_PROB_NOTE = ("temp_prob, recorded during training, uses a T fitted on the train probe set, which the network "
                  "fits ever more closely: late in training that T falls towards its lower bound and makes "
                  "held-out confidences more extreme, so temp_prob shows how sharp the training fit is, not a "
                  "calibration.")


def calibration_note(measures: list[str], probe: str | None, last_ece: list[tuple[str, float]], step: int) -> str:
    """The calibration chart's caption: which temperature calibrates, and the ECE at the last snapshot.

    States that ``temp_prob_cv`` is the temperature scaling that calibrates (cross-fitted on halves of the probe
    set) and what the recorded ``temp_prob`` (T fitted on the train probe set) is, so neither the ECE lines nor T
    read the wrong way.

    Args:
        measures: the calibrated measures.
        probe: the probe set of the reliability diagram (``None``: no ECE sentence).
        last_ece: ``(measure, ECE at the last snapshot)`` for the measures with a finite one.
        step: the last snapshot's step.
    """
    text = []
    if TEMP_PROB_CV in measures:
        text.append(TEMP_PROB_CV_NOTE)
    if "temp_prob" in measures:
        text.append(TEMP_PROB_NOTE)
    if probe is not None and last_ece:
        values = ", ".join(f"{m} {number(e)}" for m, e in last_ece)
        text.append(f"ECE of the {probe} probe set at the last snapshot (step {step:,}): {values}.")
    return " ".join(text)


def loss_minimum_label(step: int) -> str:
    """The legend entry of the held-out loss minimum's marker on the charts over training time."""
    return f"held-out loss minimum (step {step:,})"


def loss_sentence(steps: list[int], i: int, loss: dict[str, list[str]]) -> str:
    """Where the held-out loss is lowest, with the train and held-out loss there and at the end.

    Args:
        steps: every snapshot's step.
        i: the snapshot of the held-out loss minimum.
        loss: ``{"heldout": [at the minimum, at the last snapshot], "train": [...]}``, already worded numbers.
    """
    n = len(steps)
    head = (f"The held-out loss is lowest at step {steps[i]:,} (snapshot {i + 1} of {n}): held-out loss "
            f"{loss['heldout'][0]}, train loss {loss['train'][0]}")
    if i == n - 1:
        return head + "; that is the last snapshot, so the held-out loss had not turned up by the end of training."
    return (head + f"; at the last snapshot (step {steps[-1]:,}) they are {loss['heldout'][1]} and "
            f"{loss['train'][1]}.")


def ece_text(steps: list[int], i: int | None, has_trend: bool) -> str:
    """What the ECE rows of the trends are (``has_trend``), or why there are none (``i``: the loss minimum)."""
    if has_trend:
        return (f"ECE of the held-out probe set at the held-out loss minimum (step {steps[i]:,}) and at the last "
                f"snapshot (step {steps[-1]:,}); the change is the last minus the minimum."
                if i is not None else "Change of the held-out ECE from the held-out loss minimum to the last snapshot.")
    if i is None:
        return "No ECE change after the held-out loss minimum: the analysis holds no held-out loss minimum."
    if i == len(steps) - 1:
        return ("No ECE change after the held-out loss minimum: the held-out loss is lowest at the last snapshot, so "
                "there is no time after it.")
    return "No ECE change after the held-out loss minimum: the analysis holds none (analyse the run again)."


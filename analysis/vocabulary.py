"""The vocabulary of the findings: verdict words, direction words, and the sentences written into findings.json.

Every sentence a user reads comes from ``topotrace.report_templates.words``, except the words the analysis
itself has to write: the verdicts (:func:`topotrace.analysis.findings.verdict` returns them, ``findings.json``
stores them), the time courses (:func:`topotrace.analysis.findings.course`), and the texts ``findings.json``
holds (the rule, what each effect is). The analysis may not import the report layer (imports point one way,
``tests/test_architecture.py``), so these live here, next to the analysis that writes them, and ``words``
re-exports them: both layers use one vocabulary, and no other module spells a verdict or a direction word.

Two vocabularies, never mixed:

* **Verdicts** (:data:`VERDICTS`) judge a claim against the rule (:func:`rule_text`): a study's
  :data:`STUDY_VERDICTS`, one run's :data:`RUN_VERDICTS`. Every "verdict" a page, table or line shows is one
  of these.
* **Directions** (:data:`COURSES`) describe how a quantity moves over training: :data:`RISES`, :data:`FALLS`,
  :data:`FLAT`, :data:`PEAK` ("rises then falls back") and :data:`TROUGH` ("dips then recovers"). They never
  stand in for a verdict.

The strings are also the machine-readable values of ``findings.json`` (``verdict``, ``course``), so they do not
change lightly (``docs/analysis.md``).
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------------- verdicts
SUPPORTED, MIXED, NEGLIGIBLE, NOT_SUPPORTED = "supported", "mixed", "negligible", "not supported"
STUDY_VERDICTS = (SUPPORTED, MIXED, NEGLIGIBLE, NOT_SUPPORTED)  # two or more runs
RUN_VERDICTS = ("holds in this run", "negligible in this run", "does not hold in this run")  # one run
VERDICTS = STUDY_VERDICTS + RUN_VERDICTS
IN_THIS_RUN = {SUPPORTED: RUN_VERDICTS[0], NEGLIGIBLE: RUN_VERDICTS[1], NOT_SUPPORTED: RUN_VERDICTS[2]}
HOLDS = (SUPPORTED, IN_THIS_RUN[SUPPORTED])  # the verdicts that say a claim holds (a study's, one run's)

# ----------------------------------------------------------------------------------------------- directions
RISES, FALLS, FLAT = "rises", "falls", "flat"
PEAK, TROUGH = "rises then falls back", "dips then recovers"  # the courses named by an extreme
COURSES = (RISES, FALLS, FLAT, PEAK, TROUGH)
EXTREME = {PEAK: "peak", TROUGH: "trough"}  # what the extreme of such a course is called

STUDY_COMMAND = "topotrace study runs/a runs/b runs/c --name NAME"


def rule_text(min_change: float, min_r: float) -> str:
    """The verdict rule in words, with its smallest effects of interest (written to ``findings.json`` as "rule")."""
    return (
        f"Smallest effect of interest d: with training time, {min_change:g} times the first snapshot's mean (a "
        f"change of {100 * min_change:g} %); with confidence, a partial correlation of {min_r:g}. "
        f"{SUPPORTED.capitalize()}: the 95 % interval of the effect across runs lies above +d, and so does every "
        f"run's own bootstrap interval over probe samples; {MIXED}: the interval across runs lies above +d but a "
        f"run's own interval does not; {NEGLIGIBLE}: the interval lies inside -d to +d (a consistent effect too "
        f"small to matter); {NOT_SUPPORTED}: otherwise (the interval reaches below +d without lying inside -d to "
        f"+d, or lies below). With training time, {NOT_SUPPORTED} either when the course {TROUGH} and the dip "
        "below the first snapshot is at least as deep as the gain above it at the end (a recovery, not growth). "
        f"Course: {PEAK} when the curve's highest point between the first and the last snapshot lies above both "
        f"ends by more than d and both ends lie below that point's interval; {TROUGH} likewise for the lowest "
        f"point; otherwise {RISES}, {FALLS} or {FLAT} by the change against d. One run's interval speaks for that "
        f"run only, so its verdicts read {RUN_VERDICTS[0]}, {RUN_VERDICTS[1]} or {RUN_VERDICTS[2]}; a verdict "
        f"across seeds needs a study, made from existing runs with: {STUDY_COMMAND}.")


TREND_RULE = (f"The trends beyond the study follow the same rule with no smallest effect of interest (d = 0): "
              f"{SUPPORTED} when the 95 % interval across runs lies above 0 and so does every run's own interval, "
              f"{MIXED} when only the former, {NOT_SUPPORTED} otherwise; one run's verdicts read {RUN_VERDICTS[0]} "
              f"or {RUN_VERDICTS[2]}. A verdict across seeds needs a study: {STUDY_COMMAND}.")

# What each effect is (findings.json's "statistic"), by what the claim is against.
STATISTIC = {
    "time": "change of the mean per-sample {quantity} from the first snapshot to the last",
    "confidence": "Spearman correlation of per-sample {quantity} with confidence ({measure}{sign}) across probe "
                  "samples, partial given the class, at the last snapshot",
}
UNCERTAINTY_SIGN = ", sign reversed: higher means less confident"

# The trends beyond the study: what each effect is (findings.json's "statistic").
TRENDS = {
    "dormant_share_grows": "change of the share of tau-dormant units (tau = {tau:g}) from the first snapshot to "
                           "the last",
    "nc1_falls": "log of NC1 at the first snapshot over NC1 at the last (positive: within-class variability "
                 "collapses)",
    "ece_rises_after_loss_minimum": "change of the expected calibration error ({measure}, held-out probe set) from "
                                    "the snapshot of the lowest held-out loss to the last snapshot",
}

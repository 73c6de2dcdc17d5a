"""Findings: the study's four claims per layer, each with an effect, an interval, a verdict, its rule and its course.

Claims (per layer; definitions of the per-sample quantities in :mod:`.evidence` and ``docs/analysis.md``):

* ``stronger_with_time``: mean per-sample activity strength at the last snapshot minus at the first;
* ``more_distinct_with_time``: the same for per-sample class distinctness;
* ``stronger_with_confidence``: Spearman correlation across probe samples between per-sample strength and a
  confidence measure, partial given the class, at the last snapshot (one finding per measure);
* ``more_distinct_with_confidence``: the same for per-sample distinctness.

Each run (seed) gives an effect with a bootstrap interval over its probe samples. Across runs the effect is
the mean of the runs' effects with a 95 % t-interval (n - 1 degrees of freedom; for correlations on Fisher's
z scale, transformed back); with one run, the run's bootstrap interval. The verdict follows :func:`rule_text`
(default :data:`RULE`): an equivalence-style rule around a smallest effect of interest (:data:`MIN_CHANGE` of
the first snapshot's mean for the time claims, a correlation of :data:`MIN_R` for the confidence claims), with
the time course (:func:`course`) named and taken into account. One run's verdicts are worded as one run's
(:data:`RUN_VERDICTS`); a study's as a study's (:data:`STUDY_VERDICTS`). The verdict and direction words and the
texts written into ``findings.json`` (the rule, what each effect is) are those of :mod:`.vocabulary`.

No p-value over snapshots is computed anywhere: the snapshots of a run are a time series, not samples. Only
numbers, verdicts and the rule are made here; the report layer (``topotrace.report_templates.words``) turns them into
sentences and colours. Verdicts are made at read time from the cached numbers, so no threshold is cached.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sps

from ..instrument.confidence import UNCERTAINTY_MEASURES
from .evidence import LEVEL, SampleEvidence
from .results import AnalysisResults
from .vocabulary import (
    FALLS,
    FLAT,
    IN_THIS_RUN,
    MIXED,
    NEGLIGIBLE,
    NOT_SUPPORTED,
    PEAK,
    RISES,
    STATISTIC,
    SUPPORTED,
    TREND_RULE,
    TRENDS,
    TROUGH,
    UNCERTAINTY_SIGN,
)
from .vocabulary import rule_text as _rule_text

CLAIMS = {
    "stronger_with_time": ("strength", "time"),
    "more_distinct_with_time": ("distinctness", "time"),
    "stronger_with_confidence": ("strength", "confidence"),
    "more_distinct_with_confidence": ("distinctness", "confidence"),
}
MIN_CHANGE = 0.1  # time claims: a change below 10 % of the first snapshot's mean is negligible
MIN_R = 0.1  # confidence claims: a partial correlation below 0.1 in size is negligible


def check_thresholds(min_change: float, min_r: float, names: tuple[str, str] = ("min_change", "min_r")) -> None:
    """Refuse smallest effects of interest that are not numbers in range, in one line each.

    Args:
        min_change: relative change (a fraction of the first snapshot's mean), finite and >= 0.
        min_r: correlation, 0 <= min_r < 1.
        names: how the caller calls the two (``("--min-change", "--min-r")`` on the command line).

    Raises:
        ValueError: naming the value, what is allowed and an example.
    """
    for name, value, top in ((names[0], min_change, None), (names[1], min_r, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"The {name!r} smallest effect of interest must be a number. Got {value!r}.")
        if not (np.isfinite(value) and value >= 0 and (top is None or value < top)):
            allowed = "a number >= 0" if top is None else "a number >= 0 and < 1"
            raise ValueError(f"The {name!r} smallest effect of interest must be {allowed} (0 turns it off; e.g. "
                             f"0.1). Got {value!r}.")


def rule_text(min_change: float = MIN_CHANGE, min_r: float = MIN_R) -> str:
    """The verdict rule in words, with its smallest effects of interest (written to ``findings.json`` as "rule").

    The sentence is :func:`.vocabulary.rule_text`'s; this only fills in the default thresholds.
    """
    return _rule_text(min_change, min_r)


RULE = rule_text()


@dataclass
class RunEffect:
    """One run's effect for a claim, with its bootstrap interval over probe samples."""

    run: str
    effect: float
    ci_low: float
    ci_high: float


@dataclass
class Finding:
    """One claim for one layer (and one measure for the confidence claims), over one or more runs.

    Attributes:
        layer: layer name.
        claim: a key of :data:`CLAIMS` (or of :data:`TRENDS`: :func:`trend_findings`).
        measure: the confidence measure (``""`` for the claims with training time).
        effect: mean of the runs' effects (for correlations: tanh of the mean Fisher z).
        ci_low: lower end of the 95 % interval (across runs; the bootstrap interval for one run).
        ci_high: upper end.
        n_runs: runs behind the finding.
        verdict: one of :data:`STUDY_VERDICTS` (two or more runs) or :data:`RUN_VERDICTS` (one run), by
            ``rule``.
        statistic: what the effect is, in words.
        runs: every run's own effect and interval.
        steps: array of shape (S,): the snapshots' steps (of the first run).
        curve: array of shape (S,): the per-snapshot statistic (mean over runs): the mean quantity for time
            claims, the partial Spearman correlation for confidence claims.
        band: array of shape (S, 2): its interval (across runs; bootstrap for one run).
        run_curves: array of shape (n_runs, S): every run's own curve.
        peak_step: time claims whose course is "rises then falls back": the step of the peak (``extreme_step``;
            -1 otherwise).
        onset_step: first step from which the band's lower end stays above 0 to the end (confidence claims;
            -1 if it never does).
        course: time claims: the shape of ``curve``, one of :data:`COURSES` (:func:`course`); ``""`` for the
            confidence claims and the trends.
        extreme_step: the step of the peak ("rises then falls back") or the trough ("dips then recovers"); -1
            for the other courses.
        extreme_value: ``curve`` at ``extreme_step`` (NaN when there is none).
        min_effect: the smallest effect of interest d in the effect's units: for time claims ``min_change``
            times ``|curve[0]|`` (the first snapshot's mean), for confidence claims ``min_r``; 0 for trends.
        relative: time claims: ``effect / |curve[0]|``, the change as a fraction of the first snapshot's mean
            (NaN otherwise).
        rule: the verdict rule in words, with the thresholds used (:func:`rule_text`).
    """

    layer: str
    claim: str
    measure: str
    effect: float
    ci_low: float
    ci_high: float
    n_runs: int
    verdict: str
    statistic: str
    runs: list[RunEffect]
    steps: np.ndarray = field(repr=False)
    curve: np.ndarray = field(repr=False)
    band: np.ndarray = field(repr=False)
    run_curves: np.ndarray = field(repr=False)
    peak_step: int = -1
    onset_step: int = -1
    course: str = ""
    extreme_step: int = -1
    extreme_value: float = float("nan")
    min_effect: float = 0.0
    relative: float = float("nan")
    rule: str = field(default=RULE, repr=False)

    @property
    def quantity(self) -> str:
        return CLAIMS[self.claim][0] if self.claim in CLAIMS else self.claim

    @property
    def versus(self) -> str:
        return CLAIMS[self.claim][1] if self.claim in CLAIMS else "time"

    def to_json(self) -> dict[str, object]:
        """The machine-readable form written to ``findings.json`` (``docs/analysis.md``)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("steps", "curve", "band", "run_curves")}
        return _finite(out)


def _finite(obj: object) -> object:
    """NaN and infinities become None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def interval_across_runs(values: np.ndarray, correlation: bool = False) -> tuple[float, float, float]:
    """Mean of per-run values with a 95 % t-interval (n - 1 degrees of freedom); NaN runs are left out.

    Args:
        values: array of shape (n_runs,).
        correlation: the values are correlations: mean and interval are computed on Fisher's z = artanh(r) and
            transformed back, so the interval stays inside (-1, 1).

    Returns:
        ``(mean, low, high)``; the interval is NaN with fewer than two finite values.
    """
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if correlation:
        v = np.arctanh(np.clip(v, -0.999999, 0.999999))
    back = np.tanh if correlation else (lambda x: x)
    mean = float(v.mean())
    if v.size < 2:
        return float(back(mean)), float("nan"), float("nan")
    half = float(sps.t.ppf(0.5 + LEVEL / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return float(back(mean)), float(back(mean - half)), float(back(mean + half))


def verdict(ci_low: float, runs: Sequence[RunEffect], ci_high: float = float("inf"), min_effect: float = 0.0,
            recovery: bool = False) -> str:
    """The verdict of :func:`rule_text` from the interval across runs and the runs' own intervals.

    Args:
        ci_low: lower end of the interval across runs (the run's bootstrap interval for one run).
        runs: every run's own effect and interval; one run gives the one-run words (:data:`RUN_VERDICTS`).
        ci_high: upper end of that interval (default: unbounded, so never negligible).
        min_effect: the smallest effect of interest d (>= 0) in the effect's units.
        recovery: the course dips then recovers and the dip is at least as deep as the final gain: never
            supported.

    Returns:
        One of :data:`STUDY_VERDICTS` for two or more runs, of :data:`RUN_VERDICTS` for one.
    """
    d = float(min_effect)
    if not np.isfinite(d):
        found = NOT_SUPPORTED
    elif np.isfinite(ci_low) and np.isfinite(ci_high) and -d < ci_low and ci_high < d:
        found = NEGLIGIBLE  # the whole interval inside the smallest effect of interest
    elif not np.isfinite(ci_low) or ci_low <= d or recovery:
        found = NOT_SUPPORTED
    else:
        found = SUPPORTED if all(np.isfinite(r.ci_low) and r.ci_low > d for r in runs) else MIXED
    return IN_THIS_RUN.get(found, found) if len(runs) == 1 else found


def course(steps: np.ndarray, curve: np.ndarray, band: np.ndarray, min_effect: float) -> tuple[str, int, float]:
    """The shape of a curve over training time, with its peak or trough (the rule in :func:`rule_text`).

    A peak counts when the highest point strictly inside the curve (not the first or last snapshot) lies above
    both ends by more than ``min_effect`` and both ends lie below that point's interval (``band``); a trough
    likewise below both ends and above its interval. If both count, the larger excursion names the course.
    Without either, the change last minus first against ``min_effect`` gives "rises", "falls" or "flat".

    Args:
        steps: array of shape (S,).
        curve: array of shape (S,): the per-snapshot statistic.
        band: array of shape (S, 2): its 95 % interval (an extreme with a non-finite interval does not count).
        min_effect: the smallest effect of interest d in the curve's units (>= 0).

    Returns:
        ``(course, step, value)``: one of :data:`COURSES` (``""`` when the ends are not finite), and the step
        and curve value of the peak or trough (-1 and NaN for the monotone courses).
    """
    c = np.asarray(curve, np.float64)
    b = np.asarray(band, np.float64)
    d = float(min_effect) if np.isfinite(min_effect) else 0.0
    if c.size < 2 or not np.isfinite(c[[0, -1]]).all():
        return "", -1, float("nan")
    top, bottom = max(c[0], c[-1]), min(c[0], c[-1])
    inner = np.zeros(c.size, bool)
    inner[1:-1] = np.isfinite(c[1:-1])
    best: tuple[str, int, float] | None = None
    if inner.any():
        idx = np.flatnonzero(inner)
        i = int(idx[np.argmax(c[idx])])
        rise = c[i] - top
        if rise > d and b[i, 0] > top:  # NaN bands compare False
            best = (PEAK, i, rise)
        j = int(idx[np.argmin(c[idx])])
        dip = bottom - c[j]
        if dip > d and b[j, 1] < bottom and (best is None or dip > best[2]):
            best = (TROUGH, j, dip)
    if best is not None:
        return best[0], int(np.asarray(steps)[best[1]]), float(c[best[1]])
    change = c[-1] - c[0]
    return (RISES if change > d else FALLS if change < -d else FLAT), -1, float("nan")


def _run_values(ev: SampleEvidence, claim: str, measure: str) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """(effect, low, high, curve (S,), band (S, 2)) of one run."""
    k = ev.quantities.index(CLAIMS[claim][0])
    if CLAIMS[claim][1] == "time":
        return (float(ev.change[k]), float(ev.change_ci[k, 0]), float(ev.change_ci[k, 1]), ev.mean[k],
                ev.mean_ci[k])
    j = ev.measures.index(measure)
    curve, band = ev.rho_partial[k, :, j], ev.rho_partial_ci[k, :, j]
    if measure in UNCERTAINTY_MEASURES:  # e.g. entropy: confidence is its negative
        curve, band = -curve, -band[:, ::-1]
    return float(curve[-1]), float(band[-1, 0]), float(band[-1, 1]), curve, band


def _onset(steps: np.ndarray, low: np.ndarray) -> int:
    above = np.isfinite(low) & (low > 0)
    if not above[-1]:
        return -1
    first = len(above) - int(np.argmin(above[::-1])) if not above.all() else 0
    return int(steps[first])


def findings(runs: Sequence[AnalysisResults], names: Sequence[str] | None = None, min_change: float = MIN_CHANGE,
             min_r: float = MIN_R) -> list[Finding]:
    """The findings of one run or of replicate runs (seeds) of one setup.

    Args:
        runs: the analyses of the runs; they must share layers, measures and snapshot count (a study's seeds).
        names: a display name per run (default ``run 0``, ``run 1``, ...).
        min_change: smallest effect of interest of the time claims, as a fraction of the first snapshot's mean
            (default 0.1: 10 %).
        min_r: smallest effect of interest of the confidence claims, a partial correlation (default 0.1).

    Returns:
        For each layer: the two time claims, then the two confidence claims for every measure (the primary
        measure first).

    Raises:
        ValueError: no runs, or runs that do not share layers, measures and snapshots, or a run analysed
            without per-sample evidence, or a smallest effect of interest out of range.
    """
    check_thresholds(min_change, min_r)
    if not runs:
        raise ValueError("The 'runs' parameter must hold at least one analysis. Got none.")
    names = list(names) if names is not None else [f"run {i}" for i in range(len(runs))]
    first = runs[0]
    for name, r in zip(names, runs):
        if list(r.layers) != list(first.layers) or r.n_snapshots != first.n_snapshots:
            raise ValueError(f"Runs differ in layers or snapshots: {name!r} has {list(r.layers)} and "
                             f"{r.n_snapshots} snapshots, {names[0]!r} has {list(first.layers)} and "
                             f"{first.n_snapshots}. Findings across runs need replicate runs of one setup.")
        if any(lr.evidence is None for lr in r.layers.values()):
            raise ValueError(f"Run {name!r} was analysed without per-sample evidence; analyse it again.")
    measures = list(first.layers[next(iter(first.layers))].evidence.measures) if first.layers else []
    ordered = [first.primary_measure] + [m for m in measures if m != first.primary_measure]
    steps = np.asarray(first.steps)
    out: list[Finding] = []
    for layer in first.layers:
        evs = [r.layers[layer].evidence for r in runs]
        for claim, (_, versus) in CLAIMS.items():
            for measure in ([""] if versus == "time" else ordered):
                out.append(combine(layer, claim, measure, evs, names, steps, min_change, min_r))
    return out


def run_findings(results: AnalysisResults, min_change: float = MIN_CHANGE, min_r: float = MIN_R) -> list[Finding]:
    """The findings of one run (empty when its analysis holds no per-sample evidence); thresholds: :func:`findings`."""
    check_thresholds(min_change, min_r)
    if not results.layers or any(la.evidence is None for la in results.layers.values()):
        return []
    return findings([results], [str(results.meta.get("run_name", "run"))], min_change, min_r)


def write_findings_json(found: Sequence[Finding], path: str | Path) -> Path:
    """Write ``findings.json``: a list of :meth:`Finding.to_json` objects (documented in ``docs/analysis.md``).

    Atomic: written to a hidden temporary file of its own in the same folder (never a name a user's file may
    have), renamed into place, and removed if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps([f.to_json() for f in found], indent=1, ensure_ascii=False))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def combine(layer: str, claim: str, measure: str, evidences: Sequence[SampleEvidence], names: Sequence[str],
            steps: np.ndarray, min_change: float = MIN_CHANGE, min_r: float = MIN_R) -> Finding:
    """One finding from the per-sample evidence of one or more runs (the same layer in each).

    Args:
        layer: layer name (for the record).
        claim: a key of :data:`CLAIMS`.
        measure: a confidence measure of the evidence (``""`` for the time claims).
        evidences: one :class:`SampleEvidence` per run.
        names: one display name per run.
        steps: array of shape (S,): the snapshots' steps.
        min_change: smallest effect of interest of the time claims, a fraction of the first snapshot's mean.
        min_r: smallest effect of interest of the confidence claims, a correlation.

    Raises:
        ValueError: a smallest effect of interest out of range (:func:`check_thresholds`).
    """
    check_thresholds(min_change, min_r)
    quantity, versus = CLAIMS[claim]
    vals = [_run_values(ev, claim, measure) for ev in evidences]
    run_effects = [RunEffect(n, v[0], v[1], v[2]) for n, v in zip(names, vals)]
    curves = np.array([v[3] for v in vals])  # [K, S]
    if len(evidences) == 1:
        effect, lo, hi = vals[0][:3]
        curve, band = vals[0][3], vals[0][4]
    else:
        corr = versus == "confidence"
        effect, lo, hi = interval_across_runs(np.array([v[0] for v in vals]), corr)
        per_s = [interval_across_runs(curves[:, s], corr) for s in range(curves.shape[1])]
        curve = np.array([p[0] for p in per_s])
        band = np.array([p[1:] for p in per_s])
    sign = UNCERTAINTY_SIGN if measure in UNCERTAINTY_MEASURES else ""
    text = STATISTIC[versus].format(quantity=quantity, measure=measure, sign=sign)
    steps = np.asarray(steps)
    shape, at, value, relative = "", -1, float("nan"), float("nan")
    recovery = False
    if versus == "time":
        first = float(curve[0]) if np.isfinite(curve[0]) else float("nan")
        d = min_change * abs(first)
        relative = effect / abs(first) if np.isfinite(first) and first != 0 else float("nan")
        shape, at, value = course(steps, curve, band, d)
        if shape == TROUGH:  # growth since the first snapshot that is no more than a recovery
            recovery = first - value >= float(curve[-1]) - first
    else:
        d = float(min_r)
    onset = _onset(steps, band[:, 0]) if versus == "confidence" else -1
    peak = at if shape == PEAK else -1
    return Finding(layer, claim, measure, effect, lo, hi, len(evidences), verdict(lo, run_effects, hi, d, recovery),
                   text, run_effects, steps, curve, band, curves, peak, onset, shape, at, value, d, relative,
                   rule_text(min_change, min_r))


# ------------------------------------------------------------------------------ beyond the study: trends
def trend_findings(runs: Sequence[AnalysisResults], names: Sequence[str] | None = None) -> list[Finding]:
    """The trends beyond the study's claims (:data:`TRENDS`) of one run or of replicate runs, by :data:`TREND_RULE`.

    Each run's effect and interval are its bootstrap over probe samples (``LayerResult.trends``,
    ``AnalysisResults.ece_trend``); across runs, the mean with a t-interval (:func:`interval_across_runs`).
    Per layer: ``dormant_share_grows`` and ``nc1_falls``; per run (layer ``""``), for each calibrated measure:
    ``ece_rises_after_loss_minimum`` (absent when the held-out loss is lowest at the last snapshot). Results
    analysed before these trends existed give none.

    Returns:
        :class:`Finding` objects with these claim names; ``curve`` is the mean over runs of the per-snapshot
        quantity (dormant share, NC1, held-out ECE), ``band`` NaN (the intervals are for the change only).
    """
    if not runs:
        return []
    names = list(names) if names is not None else [f"run {i}" for i in range(len(runs))]
    first = runs[0]
    steps = np.asarray(first.steps)
    tau = float(first.params.get("dormant_tau", float("nan")))
    out: list[Finding] = []

    def make(layer: str, claim: str, measure: str, effects: list[np.ndarray], curves: list[np.ndarray]) -> None:
        vals = [np.asarray(e, np.float64) for e in effects]
        run_effects = [RunEffect(n, float(v[0]), float(v[1]), float(v[2])) for n, v in zip(names, vals)]
        if len(vals) == 1:
            effect, lo, hi = (float(x) for x in vals[0])
        else:
            effect, lo, hi = interval_across_runs(np.array([v[0] for v in vals]))
        stacked = np.array([np.asarray(c, np.float64)[: len(steps)] for c in curves])
        with np.errstate(invalid="ignore"):
            curve = np.nanmean(stacked, axis=0) if np.isfinite(stacked).any() else stacked[0]
        text = TRENDS[claim].format(tau=tau, measure=measure)
        out.append(Finding(layer, claim, measure, effect, lo, hi, len(vals), verdict(lo, run_effects, hi), text,
                           run_effects, steps, curve, np.full((len(steps), 2), np.nan), stacked, rule=TREND_RULE))

    for layer in first.layers:
        lrs = [r.layers.get(layer) for r in runs]
        if any(lr is None or "dormant_change" not in lr.trends or len(lr.dormant) != len(steps) for lr in lrs):
            continue
        make(layer, "dormant_share_grows", "", [lr.trends["dormant_change"] for lr in lrs], [lr.dormant for lr in lrs])
        nc1 = [-np.asarray(lr.trends["nc1_log_ratio"])[[0, 2, 1]] for lr in lrs]  # falls: log(first / last)
        make(layer, "nc1_falls", "", nc1, [lr.nc1 for lr in lrs])
    for m in first.ece_trend:
        if not all(m in r.ece_trend and r.calibration.get("heldout") is not None for r in runs):
            continue
        curves = [r.calibration["heldout"].ece[r.calibration["heldout"].measures.index(m)] for r in runs]
        make("", "ece_rises_after_loss_minimum", m, [r.ece_trend[m] for r in runs], curves)
    return out

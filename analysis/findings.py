"""Findings: the study's four claims per layer, each with an effect, an interval, a verdict and its rule.

Claims (per layer; definitions of the per-sample quantities in :mod:`.evidence` and ``docs/analysis.md``):

* ``stronger_with_time``: mean per-sample activity strength at the last snapshot minus at the first;
* ``more_distinct_with_time``: the same for per-sample class distinctness;
* ``stronger_with_confidence``: Spearman correlation across probe samples between per-sample strength and a
  confidence measure, partial given the class, at the last snapshot (one finding per measure);
* ``more_distinct_with_confidence``: the same for per-sample distinctness.

Each run (seed) gives an effect with a bootstrap interval over its probe samples. Across runs the effect is
the mean of the runs' effects with a 95 % t-interval (n - 1 degrees of freedom; for correlations on Fisher's
z scale, transformed back); with one run, the run's bootstrap interval. The verdict follows :data:`RULE`.
No p-value over snapshots is computed anywhere: the snapshots of a run are a time series, not samples. Only
numbers and verdicts live here; the report layer (``topotrace.report_templates.words``) turns them into
sentences.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sps

from topotrace.instrument.confidence import UNCERTAINTY_MEASURES

from .evidence import LEVEL, SampleEvidence
from .results import AnalysisResults

CLAIMS = {
    "stronger_with_time": ("strength", "time"),
    "more_distinct_with_time": ("distinctness", "time"),
    "stronger_with_confidence": ("strength", "confidence"),
    "more_distinct_with_confidence": ("distinctness", "confidence"),
}
VERDICTS = ("supported", "mixed", "not supported")
RULE = ("A claim is supported when the 95 % interval of its effect across runs lies above 0 and so does every "
        "run's own bootstrap interval over probe samples; mixed when the interval across runs lies above 0 but "
        "at least one run's own interval does not; not supported when the interval across runs includes 0 or "
        "lies below it. With one run, its bootstrap interval is the interval.")
STATISTIC = {
    "time": "change of the mean per-sample {quantity} from the first snapshot to the last",
    "confidence": "Spearman correlation of per-sample {quantity} with confidence ({measure}{sign}) across probe "
                  "samples, partial given the class, at the last snapshot",
}


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
        verdict: one of :data:`VERDICTS`, by :data:`RULE`.
        statistic: what the effect is, in words.
        runs: every run's own effect and interval.
        steps: array of shape (S,): the snapshots' steps (of the first run).
        curve: array of shape (S,): the per-snapshot statistic (mean over runs): the mean quantity for time
            claims, the partial Spearman correlation for confidence claims.
        band: array of shape (S, 2): its interval (across runs; bootstrap for one run).
        run_curves: array of shape (n_runs, S): every run's own curve.
        peak_step: time claims whose curve ends below the interval of its highest point: the step of that
            peak (-1 otherwise: the quantity rises to the end or plateaus).
        onset_step: first step from which the band's lower end stays above 0 to the end (confidence claims;
            -1 if it never does).
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

    @property
    def quantity(self) -> str:
        return CLAIMS[self.claim][0] if self.claim in CLAIMS else self.claim

    @property
    def versus(self) -> str:
        return CLAIMS[self.claim][1] if self.claim in CLAIMS else "time"

    def to_json(self) -> dict[str, object]:
        """The machine-readable form written to ``findings.json`` (``docs/analysis.md``)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("steps", "curve", "band", "run_curves")}
        out["rule"] = RULE
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


def verdict(ci_low: float, runs: Sequence[RunEffect]) -> str:
    """The verdict of :data:`RULE` from the interval across runs (lower end) and the runs' own intervals."""
    if not np.isfinite(ci_low) or ci_low <= 0:
        return "not supported"
    return "supported" if all(np.isfinite(r.ci_low) and r.ci_low > 0 for r in runs) else "mixed"


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


def findings(runs: Sequence[AnalysisResults], names: Sequence[str] | None = None) -> list[Finding]:
    """The findings of one run or of replicate runs (seeds) of one setup.

    Args:
        runs: the analyses of the runs; they must share layers, measures and snapshot count (a study's seeds).
        names: a display name per run (default ``run 0``, ``run 1``, ...).

    Returns:
        For each layer: the two time claims, then the two confidence claims for every measure (the primary
        measure first).

    Raises:
        ValueError: no runs, or runs that do not share layers, measures and snapshots, or a run analysed
            without per-sample evidence.
    """
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
                out.append(combine(layer, claim, measure, evs, names, steps))
    return out


def run_findings(results: AnalysisResults) -> list[Finding]:
    """The findings of one run (empty when its analysis holds no per-sample evidence)."""
    if not results.layers or any(la.evidence is None for la in results.layers.values()):
        return []
    return findings([results], [str(results.meta.get("run_name", "run"))])


def write_findings_json(found: Sequence[Finding], path: str | Path) -> Path:
    """Write ``findings.json``: a list of :meth:`Finding.to_json` objects (documented in ``docs/analysis.md``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps([f.to_json() for f in found], indent=1, ensure_ascii=False), "utf-8")
    os.replace(tmp, path)
    return path


def combine(layer: str, claim: str, measure: str, evidences: Sequence[SampleEvidence], names: Sequence[str],
            steps: np.ndarray) -> Finding:
    """One finding from the per-sample evidence of one or more runs (the same layer in each).

    Args:
        layer: layer name (for the record).
        claim: a key of :data:`CLAIMS`.
        measure: a confidence measure of the evidence (``""`` for the time claims).
        evidences: one :class:`SampleEvidence` per run.
        names: one display name per run.
        steps: array of shape (S,): the snapshots' steps.
    """
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
    sign = ", sign reversed: higher means less confident" if measure in UNCERTAINTY_MEASURES else ""
    text = STATISTIC[versus].format(quantity=quantity, measure=measure, sign=sign)
    steps = np.asarray(steps)
    peak = -1
    if versus == "time" and np.isfinite(curve).any():
        at = int(np.nanargmax(curve))
        if curve[-1] < band[at, 0]:  # the end lies below the peak's interval: it peaked earlier, then fell
            peak = int(steps[at])
    onset = _onset(steps, band[:, 0]) if versus == "confidence" else -1
    return Finding(layer, claim, measure, effect, lo, hi, len(evidences), verdict(lo, run_effects), text,
                   run_effects, steps, curve, band, curves, peak, onset)


# ------------------------------------------------------------------------------ beyond the study: trends
TRENDS = {
    "dormant_share_grows": "change of the share of tau-dormant units (tau = {tau:g}) from the first snapshot to "
                           "the last",
    "nc1_falls": "log of NC1 at the first snapshot over NC1 at the last (positive: within-class variability "
                 "collapses)",
    "ece_rises_after_loss_minimum": "change of the expected calibration error ({measure}, held-out probe set) from "
                                    "the snapshot of the lowest held-out loss to the last snapshot",
}


def trend_findings(runs: Sequence[AnalysisResults], names: Sequence[str] | None = None) -> list[Finding]:
    """The trends beyond the study's claims (:data:`TRENDS`) of one run or of replicate runs, by :data:`RULE`.

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
        out.append(Finding(layer, claim, measure, effect, lo, hi, len(vals), verdict(lo, run_effects), text,
                           run_effects, steps, curve, np.full((len(steps), 2), np.nan), stacked))

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

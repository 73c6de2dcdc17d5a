"""The text of the report's sections beyond the study: calibration, overfitting, dormant units and collapse.

:func:`page_context` gathers the numbers of those sections from an :class:`AnalysisResults` and words them with
:mod:`.words` (plain strings: the template escapes them). The verdicts of the trends tables are the findings'
(:func:`topotrace.analysis.findings.verdict` with no smallest effect of interest, one run's words), as in the
terminal's trends table and the study's table across seeds.
"""

from __future__ import annotations

import math

import numpy as np

from ..analysis.findings import RunEffect, verdict
from ..analysis.results import AnalysisResults
from .beyond_view import HELDOUT, TRAIN, _ece, _finite, _measures, _reliability_probe
from .loss_marker import _loss_min
from .words import TREND_TABLE_NOTE, number, percentage_points
from .words import beyond as say


def calibration_note(results: AnalysisResults) -> str:
    """The calibration chart's caption (:func:`.words.beyond.calibration_note`); empty without calibration data."""
    cal = results.calibration or {}
    if not cal:
        return ""
    measures = _measures(cal)
    probe = _reliability_probe(results)
    last = [(m, _ece(results, probe, m)) for m in measures] if probe is not None else []
    last = [(m, float(e[-1])) for m, e in last if e.size and np.isfinite(e[-1])]
    return say.calibration_note(measures, probe, last, int(np.asarray(results.steps)[-1]) if last else 0)


def trend_verdict(effect: float, low: float, high: float) -> str:
    """One run's verdict of a trend whose change is ``effect`` (``low`` to ``high``): the findings' rule, d = 0.

    "holds in this run" when the interval lies above 0, "does not hold in this run" otherwise (also when it is
    undefined): the words of :func:`topotrace.analysis.findings.trend_findings` for one run.
    """
    return verdict(low, [RunEffect("run", effect, low, high)], high)


def _trend(values: object) -> tuple[float, float, float]:
    v = np.asarray(values, np.float64).ravel()
    return tuple(float(x) for x in v[:3]) if v.size >= 3 else (math.nan,) * 3


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %" if _finite(value) else "n/a"


def _exp(value: float) -> str:
    """A ratio from its log: exp(value) as a number, "n/a" when undefined."""
    return number(math.exp(value)) if _finite(value) else "n/a"


def _span_text(low: str, high: str) -> str:
    return "n/a" if "n/a" in (low, high) else f"{low} to {high}"


def _ends(values: object) -> tuple[float, float]:
    v = np.asarray(values, np.float64).ravel()
    return (float(v[0]), float(v[-1])) if v.size else (math.nan, math.nan)


def _trend_rows(results: AnalysisResults) -> list[dict[str, str]]:
    """Per layer with trends: dormant share first -> last, its change and interval; NC1 first -> last, the ratio."""
    rows = []
    for layer in results.layers.values():
        trends = getattr(layer, "trends", None) or {}
        if not trends:
            continue
        d_first, d_last = _ends(layer.dormant)
        d_eff, d_lo, d_hi = _trend(trends.get("dormant_change", []))
        n_first, n_last = _ends(layer.nc1)
        n_eff, n_lo, n_hi = _trend(trends.get("nc1_log_ratio", []))
        pp = percentage_points
        rows.append({"layer": layer.name, "dormant_first": _pct(d_first), "dormant_last": _pct(d_last),
                     "dormant_change": pp(d_eff), "dormant_interval": _span_text(pp(d_lo), pp(d_hi)),
                     "dormant_verdict": trend_verdict(d_eff, d_lo, d_hi),
                     "nc1_first": number(n_first), "nc1_last": number(n_last),
                     "nc1_ratio": _exp(n_eff) + ("\u00d7" if _finite(n_eff) else ""),
                     "nc1_interval": _span_text(_exp(n_lo), _exp(n_hi)),
                     "nc1_verdict": trend_verdict(-n_eff, -n_hi, -n_lo)})  # the claim: NC1 falls
    return rows


def _ece_rows(results: AnalysisResults) -> list[dict[str, str]]:
    """Per measure: ECE (held-out) at the loss minimum and at the last snapshot, the change, interval, verdict."""
    i = _loss_min(results)
    rows = []
    for m, values in (getattr(results, "ece_trend", None) or {}).items():
        eff, lo, hi = _trend(values)
        ece = _ece(results, HELDOUT, m)
        at_min = number(ece[i]) if i is not None and i < ece.size else "n/a"
        rows.append({"measure": m, "at_min": at_min, "last": number(ece[-1]) if ece.size else "n/a",
                     "change": number(eff), "interval": _span_text(number(lo), number(hi)),
                     "verdict": trend_verdict(eff, lo, hi)})
    return rows


def _loss_sentence(results: AnalysisResults) -> str:
    """Where the held-out loss is lowest, with the train and held-out loss there and at the end; "" without one."""
    i = _loss_min(results)
    curves = results.curves or {}
    if i is None or HELDOUT not in curves:
        return ""
    n = len(np.asarray(results.steps))

    def loss(probe: str, s: int) -> str:
        y = np.asarray(curves.get(probe, {}).get("loss", []), np.float64).ravel()
        return number(y[s]) if s < y.size else "n/a"

    return say.loss_sentence([int(s) for s in results.steps], i,
                             {p: [loss(p, i), loss(p, n - 1)] for p in (HELDOUT, TRAIN)})


def _ece_text(results: AnalysisResults) -> str:
    """What the ECE rows are, or why there are none."""
    return say.ece_text([int(s) for s in results.steps], _loss_min(results),
                        bool(getattr(results, "ece_trend", None)))


def page_context(results: AnalysisResults) -> dict[str, object]:
    """The text of the calibration, overfitting and collapse sections (plain strings; the template escapes them).

    Keys: ``measures`` (calibrated measures, joined), ``n_bins``, ``reliability_probe``, ``temperature`` (bool:
    a T chart is drawn), ``calibration_note`` (the calibration chart's caption, :func:`calibration_note`),
    ``loss_sentence``, ``nap_gap`` (bool: some layer has one), ``tau``, ``n_boot``, ``trend_rows``,
    ``ece_rows``, ``ece_text``, ``trend_note`` (what the trends' verdicts are).
    """
    cal = results.calibration or {}
    params = results.params or {}
    tau = params.get("dormant_tau")
    n_boot = params.get("n_boot_trends")
    return {
        "measures": ", ".join(_measures(cal)),
        "n_bins": str(next(iter(cal.values())).n_bins) if cal else "",
        "reliability_probe": _reliability_probe(results) or "",
        "temperature": bool(np.asarray(getattr(results, "temperature", np.zeros(0))).size) or any(
            np.asarray(getattr(c, "temperature_cv", np.zeros((0, 2)))).size for c in cal.values()),
        "calibration_note": calibration_note(results),
        "loss_sentence": _loss_sentence(results),
        "nap_gap": any(np.asarray(getattr(la, "nap_gap", np.zeros(0))).size for la in results.layers.values()),
        "tau": number(float(tau)) if _finite(tau) else "",
        "n_boot": str(int(n_boot)) if _finite(n_boot) else "",
        "trend_rows": _trend_rows(results),
        "ece_rows": _ece_rows(results),
        "ece_text": _ece_text(results),
        "trend_note": TREND_TABLE_NOTE,
    }

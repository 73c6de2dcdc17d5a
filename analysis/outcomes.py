"""Training outcomes of a store: finite outputs, curves, divergence, calibration and the trend interval.

Everything here is computed from the stored outputs (loss, confidence measures, logits) of every probe set, not
from the activations, except :func:`find_divergence`, which also reads each layer's last snapshots. Non-finite
outputs are data (``docs/analysis.md``, "Non-finite values"): the curves average the finite ones, and a snapshot
is diverged when more than :data:`DIVERGED_SHARE` of them (or of a layer's values) is non-finite.
"""

from __future__ import annotations

import numpy as np

from ..instrument.store import Store
from . import calibration
from .params import AnalysisParams
from .results import Calibration, Divergence

# A snapshot is diverged when more than this share of the probe samples has non-finite outputs (loss or a
# confidence measure) or more than this share of some layer's activation values (samples x neurons) is non-finite
# (a share of values, so one NaN neuron is not a divergence: it is left out and placed nowhere); the run diverged
# at the first snapshot of its tail of diverged snapshots, and the analysis stops before it.
DIVERGED_SHARE = 0.5
TRAIN_PROBE = "train"  # the probe set drawn from the training data (overfitting view)
HELDOUT_PROBE = "heldout"
# Recorded probabilities of the predicted class (argmax of the logits); the analysis adds temp_prob_cv.
CALIBRATED_MEASURES = ("max_prob", "temp_prob")
N_BOOT_TRENDS = AnalysisParams.n_boot_trends


def finite_outcomes(store: Store, probe: str) -> np.ndarray:
    """Samples whose outputs are finite: array of shape (S, n), bool: the loss and every confidence measure.

    They are computed from the logits, so a NaN or +inf logit makes them non-finite (a -inf logit of a wrong
    class only means probability 0); reading them costs S x n values per measure instead of S x n x C logits.
    """
    ok = np.isfinite(store.loss(probe))
    for m in store.measures:
        ok &= np.isfinite(store.conf(probe, m))
    return ok


def _finite_mean(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Mean of each row of ``x`` (S, n) over the entries where ``ok`` (S, n) holds: array of shape (S,)."""
    if ok.all():
        return x.mean(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, x, 0).sum(axis=1, dtype=np.float64) / ok.sum(axis=1)


def training_curves(store: Store, n_s: int) -> dict[str, dict[str, np.ndarray]]:
    """Accuracy, loss and confidence of every probe set at the first ``n_s`` snapshots, over finite outputs."""
    curves = {}
    for p in store.probes:
        ok = finite_outcomes(store, p)[:n_s]
        c = {"accuracy": _finite_mean(store.correct(p)[:n_s], ok), "loss": _finite_mean(store.loss(p)[:n_s], ok)}
        for m in store.measures:
            c[f"conf_{m}"] = _finite_mean(store.conf(p, m)[:n_s], ok)
        curves[p] = c
    return curves


def _nonfinite_share(acts: np.ndarray) -> float:
    """Share of the non-finite values of ``acts`` (any shape)."""
    return 1.0 - np.count_nonzero(np.isfinite(acts)) / acts.size if acts.size else 0.0


def find_divergence(store: Store, probe: str, outcome_ok: np.ndarray) -> Divergence | None:
    """The diverged tail of a run (:data:`DIVERGED_SHARE`), or ``None`` when its last snapshot is not diverged.

    Walks back from the last snapshot, one layer's activations of one snapshot at a time, to the first snapshot
    that is not diverged: a run that did not diverge costs one read of its last snapshot.

    Args:
        store: the open store.
        probe: the analysed probe set.
        outcome_ok: array of shape (S, n), bool, from :func:`finite_outcomes`.
    """
    n_s = store.n_snapshots
    out_bad = (~outcome_ok).mean(axis=1) > DIVERGED_SHARE  # [S]
    first: tuple[int, list[str], bool] | None = None  # the earliest diverged snapshot seen so far
    for s in range(n_s - 1, -1, -1):
        bad = [name for name in store.layers
               if _nonfinite_share(store.acts(probe, name, s, dtype=None)) > DIVERGED_SHARE]
        if not bad and not out_bad[s]:
            break
        first = (s, bad, bool(out_bad[s]))
    if first is None:
        return None
    k, layers, outputs = first
    steps = store.steps
    return Divergence(k, int(steps[k]), int(steps[k - 1]) if k else -1, layers, outputs, n_s)


def _calibrated_conf(store: Store, probe: str, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The calibrated measures of ``probe`` at the snapshots ``rows`` (int array of shape (R,)).

    Returns:
        ``(conf, temperature_cv)``: measure -> array of shape (R, n), float64, NaN where the outputs are
        non-finite: the recorded ``max_prob`` and ``temp_prob`` (where the store has them) and ``temp_prob_cv``,
        computed here from the stored logits (:func:`.calibration.cross_fitted_temperature`); and the
        cross-fitted temperatures, shape (R, 2).
    """
    ok = finite_outcomes(store, probe)[rows]  # [R, n]
    out = {m: np.where(ok, store.conf(probe, m)[rows].astype(np.float64), np.nan)
           for m in CALIBRATED_MEASURES if m in store.measures}
    cv, temps = calibration.cross_fitted_temperature(store.logits(probe)[rows], store.labels(probe))
    out[calibration.TEMP_PROB_CV] = np.where(ok, cv, np.nan)
    return out, temps


def calibrations(store: Store, n_s: int, ece_bins: int, start: int = 0,
                 prev: dict[str, Calibration] | None = None) -> dict[str, Calibration]:
    """Calibration of every probe set over the first ``n_s`` snapshots (:class:`.results.Calibration`).

    Every snapshot's calibration depends on that snapshot alone: with ``start`` > 0, snapshots 0 .. start - 1
    are taken from ``prev`` (the cached calibration of at least ``start`` snapshots) and the others computed.
    """
    out = {}
    for p in store.probes:
        if start and start == n_s:
            out[p] = prev[p]
            continue
        correct = store.correct(p)[start:n_s].astype(bool)  # [S, n]
        confs, temps = _calibrated_conf(store, p, np.arange(start, n_s))
        ece, counts, conf, acc = [], [], [], []
        for c in confs.values():
            k, mc, a = calibration.reliability(c, correct, ece_bins)
            counts.append(k), conf.append(mc), acc.append(a)
            ece.append(calibration.ece(c, correct, ece_bins))
        arrays = [np.array(ece), np.array(counts), np.array(conf), np.array(acc)]
        if start:
            old = prev[p]
            if old.measures != list(confs):
                raise ValueError(f"the cached calibration of {p!r} has measures {old.measures}, not {list(confs)}")
            arrays = [np.concatenate([o[:, :start], x], axis=1)
                      for o, x in zip((old.ece, old.counts, old.conf, old.accuracy), arrays)]
            temps = np.concatenate([old.temperature_cv[:start], temps])
        out[p] = Calibration(list(confs), *arrays, ece_bins, temps)
    return out


def loss_minimum(results_curves: dict[str, dict[str, np.ndarray]], probe: str) -> int:
    """Snapshot index of the lowest mean loss of ``probe`` (the first of equal minima), or -1 without one."""
    loss = np.asarray(results_curves.get(probe, {}).get("loss", []), np.float64)
    if loss.size == 0 or not np.isfinite(loss).any():
        return -1
    return int(np.nanargmin(loss))


def ece_trend(store: Store, probe: str, n_s: int, s_min: int, params: AnalysisParams) -> dict[str, np.ndarray]:
    """Change of ECE from the held-out loss minimum (snapshot ``s_min``) to the last snapshot, per measure.

    ``[effect, low, high]`` per calibrated measure: bootstrap over the probe samples of ``probe`` (the same
    resample at both snapshots), ``params.n_boot_trends`` resamples, percentile interval.
    """
    out = {}
    if s_min < 0 or s_min >= n_s - 1:
        return out
    ends = np.array([s_min, n_s - 1])
    correct = store.correct(probe)[ends].astype(bool)  # [2, n]
    rng = np.random.default_rng(params.random_state)
    idx = rng.integers(0, correct.shape[1], (params.n_boot_trends, correct.shape[1]))  # [R, n]
    for m, c in _calibrated_conf(store, probe, ends)[0].items():  # c: [2, n]
        point = calibration.ece(c, correct, params.ece_bins)
        reps = np.array([np.diff(calibration.ece(c[:, i], correct[:, i], params.ece_bins))[0] for i in idx])
        out[m] = trend_interval(float(point[1] - point[0]), reps, params.n_boot_trends)
    return out


def trend_interval(effect: float, reps: np.ndarray, n_boot: int = N_BOOT_TRENDS) -> np.ndarray:
    """``[effect, low, high]``: the effect with the 95 % percentile interval of its bootstrap replicates.

    ``reps`` has shape (R,); non-finite replicates are left out; the bounds are NaN when fewer than half of the
    ``n_boot`` resamples gave a finite one.
    """
    reps = reps[np.isfinite(reps)]
    if not np.isfinite(effect) or len(reps) < n_boot // 2:
        return np.array([effect, np.nan, np.nan])
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return np.array([effect, lo, hi])

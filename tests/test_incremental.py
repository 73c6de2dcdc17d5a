"""Incremental analysis (issue 21 item 2): a cached analysis extended by the new snapshots of a growing store.

The rule (docs/analysis.md, "Incremental analysis"): only the new snapshots' per-snapshot quantities are computed,
the reference snapshot (layouts, CKA) moves to the new last snapshot, and everything spanning snapshots is redone;
the result equals a fresh analysis of the same store in every dataset and attribute (but timings), except for a
provisional reference snapshot kept while a writer records into the store. A damaged, older or mismatched cache,
or a store whose earlier snapshots changed, is analysed from scratch.
"""

import json
import time

import h5py
import numpy as np
import pytest

from topotrace.analysis import incremental, stream
from topotrace.analysis import params as analysis_params
from topotrace.analysis.pipeline import analyze
from topotrace.analysis.results import load_results, save_results
from topotrace.instrument.confidence import DEFAULT_MEASURES, outcomes
from topotrace.instrument.store import LayerSpec, ProbeRecord, ProbeSpec, Snapshot, StoreSpec, StoreWriter

from .reference import hdf5_contents

C, PER = 3, 8  # classes, probe samples per class
FAST = ["pca"]  # the quickest layout; the live test also fits force, one test every default method
LAYERS = (("fc1", 12), ("fc2", 5))
LIVE = ["force", "pca"]  # what `topotrace watch` fits while a run records
VOLATILE_ROOT = {"params", "fingerprint"}  # params: wall-clock seconds (compared without); fingerprint: store mtime


def _spec():
    n = C * PER
    probes = tuple(ProbeSpec(p, np.arange(n) + 100 * k, np.repeat(np.arange(C), PER))
                   for k, p in enumerate(("heldout", "train")))
    layers = tuple(LayerSpec(name, d, "flatten", (d,)) for name, d in LAYERS)
    return StoreSpec(layers, probes, tuple(f"c{c}" for c in range(C)), DEFAULT_MEASURES, "float16")


def _snapshot(spec, s, seed=0):
    """Snapshot s: class signal growing with s; a NaN activation at s = 2 and a NaN logit row at s = 3."""
    rng = np.random.default_rng([seed, s])
    recs = {}
    for p in spec.probes:
        y = p.label
        n = len(y)
        t = (s + 1) / 20
        logits = rng.normal(size=(n, C)).astype(np.float32) + 3 * t * np.eye(C, dtype=np.float32)[y]
        if s == 3:
            logits[5] = np.nan  # non-finite outputs: out of the correlations and per-sample statistics
        pred, correct, loss, conf = outcomes(logits, y, DEFAULT_MEASURES)
        acts = {}
        for la in spec.layers:
            a = rng.normal(size=(n, la.n_neurons)).astype(np.float32) + t * y[:, None]
            if s == 2 and la.name == "fc1":
                a[4, 3] = np.nan  # a non-finite activation: its sample leaves this snapshot's CKA
            acts[la.name] = a
        recs[p.name] = ProbeRecord(acts, logits, pred, correct, loss, conf)
    return Snapshot(step=10 * (s + 1), epoch=s, time=time.time(), probes=recs)


def _grow(path, start, stop, seed=0):
    """Append snapshots start .. stop - 1 (creating the store at 0) and close the writer."""
    spec = _spec()
    writer = StoreWriter.create(path, spec, {"run_name": "grow"}) if start == 0 else StoreWriter.resume(path, spec)
    with writer:
        for s in range(start, stop):
            writer.append(_snapshot(spec, s, seed))


def assert_identical(a, b, skip=()):
    """Two analysis files hold the same datasets bit for bit (dtype, shape, bytes) and the same attributes, but
    timings; names containing any of ``skip`` are left out of both."""
    da, aa = hdf5_contents(a)
    db, ab = hdf5_contents(b)
    keep = lambda name: not any(s in name for s in skip)  # noqa: E731
    assert sorted(filter(keep, da)) == sorted(filter(keep, db))
    for name in filter(keep, da):
        x, y = da[name], db[name]
        assert (x.dtype, x.shape) == (y.dtype, y.shape), name
        assert x.tobytes() == y.tobytes(), name
    assert sorted(k for k in aa if keep(k[0]) and keep(k[1])) == sorted(k for k in ab if keep(k[0]) and keep(k[1]))
    for key in aa:
        if not (keep(key[0]) and keep(key[1])) or key[1] == "seconds" or (key[0] == "/" and key[1] in VOLATILE_ROOT):
            continue
        x, y = aa[key], ab[key]
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), key
        else:
            assert x == y or (x != x and y != y), key  # NaN scores (a map without adjacent pixels) are equal
    if ("/", "params") in aa:  # (a sidecar has none)
        pa, pb = json.loads(aa[("/", "params")]), json.loads(ab[("/", "params")])
        pa.pop("seconds"), pb.pop("seconds")
        assert pa == pb


@pytest.fixture()
def counted(monkeypatch):
    """Counts of the per-snapshot computations: full snapshots and CKA-only re-scorings, per (layer, snapshot)."""
    calls = {"full": [], "cka": []}
    real_full, real_cka = stream.process_snapshot, stream.cka_row

    def full(ctx, s, *a, **k):
        calls["full"].append((ctx.name, s))
        return real_full(ctx, s, *a, **k)

    def cka(ctx, s, *a, **k):
        calls["cka"].append((ctx.name, s))
        return real_cka(ctx, s, *a, **k)

    monkeypatch.setattr(stream, "process_snapshot", full)
    monkeypatch.setattr(stream, "cka_row", cka)
    return calls


def _reset(calls):
    for v in calls.values():
        v.clear()


def _all(n_s, start=0):
    return sorted((name, s) for name, _ in LAYERS for s in range(start, n_s))


@pytest.mark.slow
def test_increments_equal_fresh_after_1_5_and_20(tmp_path, counted):
    """Grown in 20 increments of 1 or 2 snapshots (the writer closed after each): after 1, 5 and 20 increments the
    cache equals a fresh analysis bit for bit (its sidecar too), and every increment computed only the new snapshots
    (the old ones' CKA re-scored against the new last snapshot)."""
    store, cache = tmp_path / "run" / "store.h5", tmp_path / "run" / "analysis.h5"
    store.parent.mkdir()
    _grow(store, 0, 2)
    analyze(store, cache, layout_methods=FAST)
    assert sorted(counted["full"]) == _all(2) and counted["cka"] == []
    n_s = 2
    for i in range(1, 21):
        k = 2 if i % 4 == 0 else 1
        _grow(store, n_s, n_s + k)
        _reset(counted)
        res = analyze(store, cache, layout_methods=FAST)
        assert sorted(counted["full"]) == _all(n_s + k, n_s), i  # the new snapshots only
        assert sorted(counted["cka"]) == _all(n_s), i  # every old snapshot's CKA, nothing else
        n_s += k
        assert res.n_snapshots == n_s and res.reference_snapshot == -1
        if i in (1, 5, 20):
            fresh = tmp_path / f"fresh{i}.h5"
            analyze(store, fresh, layout_methods=FAST, refresh=True)
            assert_identical(cache, fresh)
            assert_identical(incremental.state_path(cache), incremental.state_path(fresh),
                             skip=("cache_sha256",))
    assert n_s == 27
    # the planted non-finite values are in the compared results
    lr = load_results(cache)
    assert lr.layers["fc1"].excluded_values[2] == 1 and lr.nonfinite_outputs[3] == 1
    _reset(counted)
    analyze(store, cache, layout_methods=FAST)  # unchanged store: the cache as it is
    assert counted == {"full": [], "cka": []}


@pytest.mark.slow
def test_default_layouts_and_results_objects_equal(tmp_path, counted):
    """With the default layout methods (t-SNE, MDS, SOM too) one increment equals a fresh analysis, field by field
    of the results objects as well."""
    store = tmp_path / "store.h5"
    _grow(store, 0, 4)
    analyze(store, tmp_path / "inc.h5")
    _grow(store, 4, 5)
    _reset(counted)
    inc = analyze(store, tmp_path / "inc.h5")
    assert sorted(counted["full"]) == _all(5, 4)
    fresh = analyze(store, tmp_path / "fresh.h5", refresh=True)
    assert_identical(tmp_path / "inc.h5", tmp_path / "fresh.h5")
    for name, lr in inc.layers.items():
        fr = fresh.layers[name]
        np.testing.assert_array_equal(lr.cka, fr.cka)
        np.testing.assert_array_equal(lr.evidence.mean_ci, fr.evidence.mean_ci)
        assert lr.trends.keys() == fr.trends.keys()
        for k in lr.trends:
            np.testing.assert_array_equal(lr.trends[k], fr.trends[k])
        assert sorted(lr.layouts) == sorted(fr.layouts) and lr.default_layout == fr.default_layout
        for m in lr.layouts:
            np.testing.assert_array_equal(lr.layouts[m].xy, fr.layouts[m].xy)
    for p, cal in inc.calibration.items():
        np.testing.assert_array_equal(cal.ece, fresh.calibration[p].ece)
        np.testing.assert_array_equal(cal.temperature_cv, fresh.calibration[p].temperature_cv)


@pytest.mark.slow
def test_cka_is_scored_against_the_new_last_snapshot(tmp_path):
    """The CKA of an old snapshot changes when a snapshot is appended (its reference is the last one) and equals
    linear CKA from its definition against the new reference."""
    store = tmp_path / "store.h5"
    _grow(store, 0, 3)
    before = analyze(store, tmp_path / "a.h5", layout_methods=FAST).layers["fc2"].cka
    _grow(store, 3, 5)
    after = analyze(store, tmp_path / "a.h5", layout_methods=FAST).layers["fc2"].cka
    assert after[-1] == pytest.approx(1.0) and before[-1] == pytest.approx(1.0)
    assert abs(after[2] - before[2]) > 1e-3
    spec = _spec()
    x = np.asarray(_snapshot(spec, 0).probes["heldout"].acts["fc2"], np.float16).astype(np.float64)
    y = np.asarray(_snapshot(spec, 4).probes["heldout"].acts["fc2"], np.float16).astype(np.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    ref = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert after[0] == pytest.approx(ref, abs=1e-5)


def _analysed(tmp_path, n=4, grow_to=6):
    store, cache = tmp_path / "store.h5", tmp_path / "analysis.h5"
    _grow(store, 0, n)
    analyze(store, cache, layout_methods=FAST)
    _grow(store, n, grow_to)
    return store, cache


def _check_from_scratch(store, cache, calls, n_s, **kw):
    _reset(calls)
    analyze(store, cache, layout_methods=FAST, **kw)
    assert sorted(calls["full"]) == _all(n_s) and calls["cka"] == []
    analyze(store, cache.with_name("fresh.h5"), layout_methods=FAST, refresh=True, **kw)
    assert_identical(cache, cache.with_name("fresh.h5"))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_cache_is_recomputed(tmp_path, counted, damage):
    """A cache with flipped bytes (in its data, where HDF5 has no checksum) or cut short is not extended."""
    store, cache = _analysed(tmp_path)
    raw = bytearray(cache.read_bytes())
    if damage == "flip":
        with h5py.File(cache, "r") as f:  # the bytes of one cached per-snapshot array
            offset = f["layers/fc1/strength"].id.get_offset()
        raw[offset: offset + 8] = bytes(b ^ 0xFF for b in raw[offset: offset + 8])
    else:
        del raw[len(raw) // 2:]
    cache.write_bytes(bytes(raw))
    _check_from_scratch(store, cache, counted, 6)


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"my notes\n", "cut"])
def test_unreadable_sidecar_is_ignored_and_left_alone(tmp_path, counted, content):
    """A file at the sidecar's name that is no readable sidecar (another file, or one cut short) is ignored (from
    scratch) and never replaced: topotrace cannot tell that it wrote it; a warning says so and what to do."""
    store, cache = _analysed(tmp_path)
    side = incremental.state_path(cache)
    assert side.name == "analysis.incremental.h5"
    content = side.read_bytes()[:200] if content == "cut" else content
    side.write_bytes(content)
    with pytest.warns(UserWarning, match="is not an analysis state that topotrace can read .* Remove it"):
        _check_from_scratch(store, cache, counted, 6)
    assert side.read_bytes() == content
    side.unlink()
    _grow(store, 6, 7)
    _reset(counted)
    analyze(store, cache, layout_methods=FAST)
    assert sorted(counted["full"]) == _all(7)  # the last analysis wrote no sidecar: from scratch once more
    _grow(store, 7, 8)
    _reset(counted)
    analyze(store, cache, layout_methods=FAST)
    assert sorted(counted["full"]) == _all(8, 7)


@pytest.mark.slow
def test_older_version_or_other_parameters_are_recomputed(tmp_path, counted, monkeypatch):
    """Another analysis version, other parameters, or a sidecar of another version: from scratch."""
    store, cache = _analysed(tmp_path)
    _check_from_scratch(store, cache, counted, 6, n_bins=3)  # the cache was made with n_bins=5
    _grow(store, 6, 7)
    monkeypatch.setattr(analysis_params, "ANALYSIS_VERSION", analysis_params.ANALYSIS_VERSION + 1)
    _check_from_scratch(store, cache, counted, 7, n_bins=3)
    _grow(store, 7, 8)
    monkeypatch.setattr(incremental, "STATE_VERSION", incremental.STATE_VERSION + 1)
    _check_from_scratch(store, cache, counted, 8, n_bins=3)
    _grow(store, 8, 9)
    _reset(counted)
    analyze(store, cache, layout_methods=FAST, n_bins=3)  # all agree again: incremental
    assert sorted(counted["full"]) == _all(9, 8)


@pytest.mark.slow
def test_store_whose_earlier_snapshots_changed_is_recomputed(tmp_path, counted):
    """A store cut by a resume (from_step) and recorded again (other values at the same steps) is not extended,
    nor is a store replaced by another recording with the same steps."""
    store, cache = _analysed(tmp_path, 4, 4)
    spec = _spec()
    with StoreWriter.resume(store, spec, from_step=20) as w:  # keeps snapshots 0 and 1 (steps 10, 20)
        for s in range(2, 6):
            w.append(_snapshot(spec, s, seed=1))
    _check_from_scratch(store, cache, counted, 6)
    store.unlink()
    _grow(store, 0, 7, seed=2)  # another recording, same steps
    _check_from_scratch(store, cache, counted, 7)


@pytest.mark.slow
def test_cut_store_is_recomputed(tmp_path, counted):
    """A store with fewer snapshots than its cached analysis (cut, not yet recorded again): from scratch."""
    store, cache = _analysed(tmp_path, 5, 5)
    spec = _spec()
    StoreWriter.resume(store, spec, from_step=30).close()  # 3 snapshots left
    _check_from_scratch(store, cache, counted, 3)


@pytest.mark.slow
def test_pooled_bins_are_recomputed(tmp_path, counted):
    """Pooled confidence bins take their edges from every snapshot: no incremental path."""
    store, cache = tmp_path / "store.h5", tmp_path / "analysis.h5"
    _grow(store, 0, 3)
    analyze(store, cache, layout_methods=FAST, bins="pooled")
    _grow(store, 3, 4)
    _check_from_scratch(store, cache, counted, 4, bins="pooled")


def _linear_cka(x, y):
    """Linear CKA of two activation matrices (n, N) from its definition, float64."""
    x, y = (np.asarray(v, np.float16).astype(np.float64) for v in (x, y))
    xc, yc = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))


@pytest.mark.slow
def test_live_store_keeps_a_provisional_reference_then_final_equals_fresh(tmp_path, counted):
    """While the writer records, the cache's reference snapshot is kept (its layouts, and the new snapshots' CKA
    scored against it, without reading the old snapshots) until the count reaches 1.5x the count at the reference,
    and it is named in the results; everything else equals a fresh analysis. Once the writer closes, the next
    analysis moves the reference to the last snapshot and equals a fresh analysis everywhere."""
    store, cache = tmp_path / "store.h5", tmp_path / "analysis.h5"
    spec = _spec()
    w = StoreWriter.create(store, spec, {"run_name": "live"})
    try:
        for s in range(4):
            w.append(_snapshot(spec, s))
        first = analyze(store, cache, layout_methods=LIVE)  # from scratch: the reference is the last snapshot
        assert first.reference_snapshot == -1
        w.append(_snapshot(spec, 4))
        _reset(counted)
        live = analyze(store, cache, layout_methods=LIVE)  # 5 < 1.5 x 4: kept
        assert sorted(counted["full"]) == _all(5, 4) and counted["cka"] == []
        assert live.reference_snapshot == 3 and load_results(cache).reference_snapshot == 3
        for name, lr in live.layers.items():
            np.testing.assert_array_equal(lr.cka[:4], first.layers[name].cka)
            for m, lay in lr.layouts.items():
                np.testing.assert_array_equal(lay.xy, first.layers[name].layouts[m].xy)
        new = _snapshot(spec, 4).probes["heldout"].acts["fc2"]
        ref = _snapshot(spec, 3).probes["heldout"].acts["fc2"]
        assert live.layers["fc2"].cka[4] == pytest.approx(_linear_cka(new, ref), abs=1e-5)
        analyze(store, tmp_path / "fresh.h5", layout_methods=LIVE, refresh=True)
        assert_identical(cache, tmp_path / "fresh.h5",
                         skip=("layouts", "default_layout", "reference_snapshot", "cka"))
        w.append(_snapshot(spec, 5))
        assert analyze(store, cache, layout_methods=LIVE).reference_snapshot == -1  # 6 >= 1.5 x 4: the last
        w.append(_snapshot(spec, 6))
        assert analyze(store, cache, layout_methods=LIVE).reference_snapshot == 5  # 7 < 1.5 x 6: kept
        assert analyze(store, cache, layout_methods=LIVE, provisional_layouts=False).reference_snapshot == -1
        _reset(counted)
        assert analyze(store, cache, layout_methods=LIVE).reference_snapshot == -1  # a cache hit
        assert counted == {"full": [], "cka": []}
        w.append(_snapshot(spec, 7))
        assert analyze(store, cache, layout_methods=LIVE).reference_snapshot == 6
    finally:
        w.close()
    _reset(counted)
    final = analyze(store, cache, layout_methods=LIVE)
    # closing added no snapshot: the reference moves to the last one (CKA scored again, layouts fitted again)
    assert final.reference_snapshot == -1 and counted["full"] == [] and sorted(counted["cka"]) == _all(8)
    analyze(store, tmp_path / "fresh.h5", layout_methods=LIVE, refresh=True)
    assert_identical(cache, tmp_path / "fresh.h5")


@pytest.mark.slow
def test_provisional_cache_hit_refits_when_not_allowed(tmp_path, counted):
    """A cache with a provisional reference is no cache hit for an analysis that does not allow one: the reference
    moves to the last snapshot (layouts fitted, CKA scored again; no other per-snapshot work)."""
    store, cache = tmp_path / "store.h5", tmp_path / "analysis.h5"
    _grow(store, 0, 4)
    analyze(store, cache, layout_methods=FAST)
    _grow(store, 4, 5)
    assert analyze(store, cache, layout_methods=FAST, provisional_layouts=True).reference_snapshot == 3
    _reset(counted)
    assert analyze(store, cache, layout_methods=FAST).reference_snapshot == -1
    assert counted["full"] == [] and sorted(counted["cka"]) == _all(5)  # every CKA against the last snapshot
    analyze(store, tmp_path / "fresh.h5", layout_methods=FAST, refresh=True)
    assert_identical(cache, tmp_path / "fresh.h5")
    with pytest.raises(TypeError, match="'provisional_layouts' parameter must be None, True or False"):
        analyze(store, cache, provisional_layouts="yes")


def test_reference_snapshot_round_trip_and_absent_when_final(tmp_path):
    """``reference_snapshot`` is written only when provisional, so a final cache has no such attribute."""
    store = tmp_path / "store.h5"
    _grow(store, 0, 3)
    res = analyze(store, tmp_path / "a.h5", layout_methods=["pca"])
    with h5py.File(tmp_path / "a.h5") as f:
        assert "reference_snapshot" not in f.attrs
    res.reference_snapshot = 1
    save_results(res, tmp_path / "b.h5")
    assert load_results(tmp_path / "b.h5").reference_snapshot == 1

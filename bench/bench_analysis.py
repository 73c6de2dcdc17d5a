"""Analysis benchmarks: layout time and quality, whole-store analysis time, peak memory on a >2 GB store.

1. Layouts of NAPs from a trained digits MLP (hidden layer widened to 128, 1024 and 4096 units): time
   (including declutter) and trustworthiness per method, against a straightforward numpy re-implementation of
   the reference study's force refinement (all pairs per step, 1000 steps; for 4096 neurons a few steps are
   timed and extrapolated).
2. Whole-store analysis time as a ratio to one plain read of the same activations (Store.iter_acts with its
   default float32 conversion; the target is <= 3x), and for reference to a raw read in the stored dtype; and
   the cost of the per-sample evidence (distinctness of every sample, the 1000-resample bootstrap) as the ratio
   of the analysis to the same analysis without it (target <= 1.3x).
3. Peak memory (VmHWM of a fresh process) analysing a synthetic float16 store larger than 2 GB, written to a
   temporary folder and deleted afterwards; on the same store, the time of an incremental analysis of one new
   snapshot against the full analysis.
4. Incremental analysis (``docs/analysis.md``, "Incremental analysis"): one new snapshot of a 60-snapshot store
   shaped like the default run, analysed with the default parameters, as a ratio to the full analysis of the same
   store measured in the same run (target <= 1/10): with the reference snapshot kept (layouts, CKA: provisional,
   as while the run records) and moved to the new snapshot (layouts fitted, every CKA scored again: the final
   analysis once the writer closed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def digits_naps(hidden: int, seed: int = 0) -> np.ndarray:
    """Class NAPs (hidden, 10) of a one-hidden-layer ReLU MLP trained on scikit-learn's digits (held-out 30 %)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a short training is enough for realistic NAPs
        mlp = MLPClassifier((hidden,), max_iter=30, random_state=seed).fit(xtr, ytr)
    acts = np.maximum(xte @ mlp.coefs_[0] + mlp.intercepts_[0], 0.0)  # [n, hidden]
    return np.stack([acts[yte == c].mean(axis=0) for c in range(10)], axis=1), mlp.score(xte, yte)


def paper_force_refinement(xy: np.ndarray, steps: int = 1000) -> np.ndarray:
    """Baseline: every step computes forces between all pairs (O(N^2)), repelling pairs closer than the target
    spacing and pulling each neuron back to its start (what the reference study's refinement does)."""
    y = np.array(xy, np.float64)
    orig = y.copy()
    n = len(y)
    r0 = 0.8 / np.sqrt(n)
    for _ in range(steps):
        diff = y[:, None, :] - y[None, :, :]  # [N, N, 2]
        d = np.sqrt((diff * diff).sum(-1)) + np.eye(n) + 1e-9
        push = np.where(d < r0, (r0 - d) / d, 0.0)
        np.fill_diagonal(push, 0.0)
        y += 0.25 * (push[:, :, None] * diff).sum(1) + 0.02 * (orig - y)
    return y


def bench_layouts() -> None:
    from topotrace.analysis.layouts import NeuronLayout, trustworthiness_score

    print("Layouts of digits-MLP NAPs (cosine features; time includes declutter; k = 7)")
    print(f"{'neurons':>7} {'method':<18} {'seconds':>8} {'trust':>6} {'vs baseline':>12}")
    for hidden in (128, 1024, 4096):
        naps, acc = digits_naps(hidden)
        methods = ["force", "pca", "som"] + (["tsne"] if hidden <= 1024 else []) + (["mds"] if hidden <= 128 else [])
        start = NeuronLayout(method="pca", declutter=False).fit(naps).embedding_
        t0 = time.perf_counter()
        if hidden <= 1024:
            base = paper_force_refinement(start, 1000)
            t_base = time.perf_counter() - t0
            trust_base = f"{trustworthiness_score(naps, base):.3f}"
            note = "1000 steps"
        else:
            paper_force_refinement(start, 5)
            t_base = (time.perf_counter() - t0) * 200
            trust_base = "n/a"
            note = "5 steps timed x 200"
        print(f"{hidden:>7} {'baseline (paper)':<18} {t_base:>8.2f} {trust_base:>6} {'1.0x':>12}  ({note}; "
              f"MLP held-out accuracy {acc:.3f})")
        for m in methods:
            t0 = time.perf_counter()
            est = NeuronLayout(method=m).fit(naps)
            sec = time.perf_counter() - t0
            tw = trustworthiness_score(naps, est.embedding_)
            print(f"{hidden:>7} {est.name:<18} {sec:>8.2f} {tw:>6.3f} {t_base / sec:>11.1f}x")
        sys.stdout.flush()


def _plain_read(path: Path, probe: str, dtype: object = np.float32) -> float:
    from topotrace.instrument.store import Store

    t0 = time.perf_counter()
    with Store(path) as st:
        for layer in st.layers:
            for _, a in st.iter_acts(probe, layer, dtype=dtype):
                pass
    return time.perf_counter() - t0


def _analysis_time(path: Path, cache: Path, with_evidence: bool = True) -> float:
    """Seconds of one analysis; without evidence, per-sample distinctness and the bootstrap are replaced by no-ops
    (the baseline for their cost; per-sample strength comes free with the layer's strength sums)."""
    from topotrace.analysis import evidence
    from topotrace.analysis.pipeline import analyze

    real = evidence.class_distinctness, evidence.Bootstrap.correlations, evidence.Bootstrap.evidence
    if not with_evidence:
        evidence.class_distinctness = lambda acts, labels, n_classes, bins=None, n_bins=0: (
            np.zeros(len(acts)), float("nan"), np.full(n_bins, np.nan))
        evidence.Bootstrap.correlations = lambda self, x, conf: {}
        evidence.Bootstrap.evidence = lambda self, *args: None
    try:
        t0 = time.perf_counter()
        analyze(path, cache, layout_methods=["force"], refresh=True)
        return time.perf_counter() - t0
    finally:
        evidence.class_distinctness, evidence.Bootstrap.correlations, evidence.Bootstrap.evidence = real


def bench_whole_store() -> None:
    from topotrace.analysis.pipeline import analyze
    from topotrace.instrument.synthetic import write_synthetic_store

    print("\nWhole-store analysis vs one plain read of the activations (warm page cache, same run)")
    with tempfile.TemporaryDirectory() as tmp:
        for sizes, per_class, n_s in (((64,), 36, 100), ((256, 128), 50, 60), ((1024,), 100, 30)):
            path = write_synthetic_store(Path(tmp) / f"s{sizes[0]}.h5", n_snapshots=n_s, layer_sizes=sizes,
                                         per_class=per_class, with_train_probe=False)
            _plain_read(path, "heldout")  # warm the page cache for both
            t_read = min(_plain_read(path, "heldout") for _ in range(3))
            t_raw = min(_plain_read(path, "heldout", None) for _ in range(3))
            stages: dict[str, list[float]] = {}

            def progress(stage: str, done: int, total: int) -> None:
                now = time.perf_counter()
                stages.setdefault(stage, [now, now])[1] = now

            t0 = time.perf_counter()
            analyze(path, Path(tmp) / "cache.h5", layout_methods=["force"], refresh=True, progress=progress)
            t_all = time.perf_counter() - t0
            # alternating, best of two each, so neither side gets the warm-up
            t_base = min(_analysis_time(path, Path(tmp) / "b.h5", False) for _ in range(2))
            t_full = min(_analysis_time(path, Path(tmp) / "f.h5", True) for _ in range(2))
            t_stream = sum(b - a for k, (a, b) in stages.items() if k.endswith("snapshots"))
            layout_t = sum(b - a for k, (a, b) in stages.items() if k.endswith("layouts"))
            mb = path.stat().st_size / 1e6
            print(f"  layers {sizes}, {10 * per_class} samples, {n_s} snapshots ({mb:.0f} MB): read {t_read:.3f} s "
                  f"(raw float16 {t_raw:.3f} s), analysis {t_all:.2f} s = {t_all / t_read:.1f}x read "
                  f"({t_all / t_raw:.0f}x raw; streaming pass {t_stream:.2f} s = {t_stream / t_read:.1f}x read; "
                  f"layouts {layout_t:.2f} s)")
            print(f"    per-sample evidence and bootstrap: analysis {t_full:.2f} s vs {t_base:.2f} s without them = "
                  f"{t_full / t_base:.2f}x (target <= 1.30x)")
            sys.stdout.flush()


_CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[3])


def peak_kb():
    # VmHWM belongs to this process image; ru_maxrss would inherit the forking parent's peak across exec.
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


from topotrace.analysis import evidence
from topotrace.analysis.pipeline import analyze
from topotrace.instrument.store import Store
path = Path(sys.argv[1])
incremental = sys.argv[4:5] == ["incremental"]  # the cache holds all but the last snapshot: extend it
if sys.argv[4:] == ["no-evidence"]:  # the baseline for the evidence's cost
    evidence.class_distinctness = lambda acts, labels, n_classes, bins=None, n_bins=0: (
        np.zeros(len(acts)), float("nan"), np.full(n_bins, np.nan))
    evidence.Bootstrap.correlations = lambda self, x, conf: {}
    evidence.Bootstrap.evidence = lambda self, *args: None


def read(dtype):
    t0 = time.perf_counter()
    with Store(path) as st:
        for _, a in st.iter_acts("heldout", "layer0", dtype=dtype):
            pass
    return time.perf_counter() - t0


t_read = read(np.float32)
t_raw = read(None)
rss_read = peak_kb()
stages = {}


def progress(stage, done, total):
    now = time.perf_counter()
    stages.setdefault(stage, [now, now])[1] = now


c0 = sum(os.times()[:2])
t0 = time.perf_counter()
res = analyze(path, Path(sys.argv[2]), layout_methods=["force"], refresh=not incremental, progress=progress,
              **({"provisional_layouts": sys.argv[5] == "provisional"} if incremental else {}))
t_an = time.perf_counter() - t0
assert not incremental or (res.reference_snapshot >= 0) == (sys.argv[5] == "provisional")
cpu_an = sum(os.times()[:2]) - c0
t_stream = sum(b - a for k, (a, b) in stages.items() if k.endswith("snapshots"))
t_lay = sum(b - a for k, (a, b) in stages.items() if k.endswith("layouts"))
print(json.dumps({"read_s": t_read, "raw_s": t_raw, "analysis_s": t_an, "analysis_cpu_s": cpu_an,
                  "stream_s": t_stream, "layouts_s": t_lay, "load": os.getloadavg()[0],
                  "rss_after_read_kb": rss_read, "peak_rss_kb": peak_kb()}))
"""

_WRITE = r"""
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from topotrace.instrument.store import LayerSpec, ProbeRecord, ProbeSpec, Snapshot, StoreSpec, StoreWriter
from topotrace.instrument.confidence import DEFAULT_MEASURES as MEASURES, outcomes
n_s, n_neurons, n_classes, per_class = 260, 2048, 10, 200
n = n_classes * per_class
rng = np.random.default_rng(0)
y = np.repeat(np.arange(n_classes), per_class)
spec = StoreSpec((LayerSpec("layer0", n_neurons, "flatten", (n_neurons,)),), (ProbeSpec("heldout", np.arange(n), y),),
                 tuple(str(c) for c in range(n_classes)), MEASURES, "float16")
tuning = rng.normal(0, 1, (n_classes, n_neurons)).astype(np.float32)[y]
pool = rng.normal(0, 1, (n + 97, n_neurons)).astype(np.float32)  # rolled windows: cheap fresh-looking noise
noise = rng.normal(0, 1, (n, n_classes)).astype(np.float32)
with StoreWriter.create(sys.argv[1], spec, {"run_name": "bench-big", "seed": 0}) as w:
    for s in range(n_s):
        t = (s + 1) / n_s
        logits = noise * (1 - 0.5 * t) + 6 * t * np.eye(n_classes, dtype=np.float32)[y]
        pred, correct, loss, conf = outcomes(logits, y, MEASURES)
        k = s % 97
        a = np.maximum(t * tuning + 0.5 * pool[k:k + n], 0) * (0.5 + conf["max_prob"][:, None])
        rec = ProbeRecord({"layer0": a.astype(np.float16)}, logits, pred, correct, loss, conf)
        w.append(Snapshot(step=10 * (s + 1), epoch=s // 26, time=time.time(), probes={"heldout": rec}))
"""


def append_copy(path: Path, s_from: int) -> None:
    """Append one snapshot to the store at ``path``: the arrays of its snapshot ``s_from`` at the next step."""
    from topotrace.instrument.store import ProbeRecord, Snapshot, Store, StoreWriter

    with Store(path) as st:
        spec = st.spec
        recs = {p: ProbeRecord({la: st.acts(p, la, s_from, dtype=None) for la in st.layers}, st.logits(p)[s_from],
                               st.pred(p)[s_from], st.correct(p)[s_from], st.loss(p)[s_from],
                               {m: st.conf(p, m)[s_from] for m in st.measures}) for p in st.probes}
        temperature = None if st.temperature is None else float(st.temperature[s_from])
        step, epoch = int(st.steps[-1]) + 1, int(st.epochs[-1])
    with StoreWriter.resume(path, spec) as w:
        w.append(Snapshot(step, epoch, time.time(), recs, temperature))


def bench_incremental(n_snapshots: int = 60, layer_sizes: tuple[int, ...] = (128, 64), per_class: int = 40) -> None:
    """One new snapshot of an ``n_snapshots`` store (default: shaped like the default run) vs the full analysis."""
    import shutil

    from topotrace.analysis.incremental import state_path
    from topotrace.analysis.pipeline import analyze
    from topotrace.instrument.synthetic import write_synthetic_store

    print(f"\nIncremental analysis: one new snapshot of a {n_snapshots}-snapshot store (layers {layer_sizes}, "
          f"{10 * per_class} held-out + {10 * per_class} train samples, float16) vs the full analysis, default "
          "parameters (every default layout), same run")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic_store(Path(tmp) / "run" / "store.h5", n_snapshots=n_snapshots, layer_sizes=layer_sizes,
                                     per_class=per_class)
        cache = path.parent / "analysis.h5"
        t0 = time.perf_counter()
        analyze(path, cache)  # the cached analysis of n_snapshots
        t_first = time.perf_counter() - t0
        saved = Path(tmp) / "saved"
        saved.mkdir()
        for f in (cache, state_path(cache)):
            shutil.copy2(f, saved / f.name)
        append_copy(path, n_snapshots - 1)  # snapshot n_snapshots + 1
        modes = {"reference kept (provisional, while recording)": True,
                 "reference moved (layouts fitted, every CKA scored again: final)": False}
        best: dict[str, tuple[float, float, float]] = {}

        def incremental(label: str) -> None:
            for f in (cache, state_path(cache)):  # the cache of n_snapshots again
                shutil.copy2(saved / f.name, f)
            stages: dict[str, list[float]] = {}

            def progress(stage: str, done: int, total: int) -> None:
                now = time.perf_counter()
                stages.setdefault(stage, [now, now])[1] = now

            t0 = time.perf_counter()
            res = analyze(path, cache, provisional_layouts=modes[label], progress=progress)
            t = time.perf_counter() - t0
            assert res.n_snapshots == n_snapshots + 1 and (res.reference_snapshot >= 0) == modes[label]
            t_snap = sum(b - a for k, (a, b) in stages.items() if k.endswith("snapshots"))
            t_lay = sum(b - a for k, (a, b) in stages.items() if k.endswith("layouts"))
            if label not in best or t < best[label][0]:
                best[label] = (t, t_snap, t_lay)

        t_full = float("inf")
        for _ in range(2):  # alternating, best of two each: the machine is shared
            t0 = time.perf_counter()
            analyze(path, Path(tmp) / "full.h5", refresh=True)
            t_full = min(t_full, time.perf_counter() - t0)
            for label in modes:
                incremental(label)
        print(f"  full analysis of {n_snapshots + 1} snapshots {t_full:.2f} s (best of 2; the first analysis, of "
              f"{n_snapshots}, took {t_first:.2f} s)")
        for label, (t, t_snap, t_lay) in best.items():
            print(f"  one new snapshot, {label}: {t:.2f} s = 1/{t_full / t:.1f} of the full analysis "
                  f"(new snapshot + CKA of every snapshot {t_snap:.2f} s, layouts {t_lay:.2f} s; target <= 1/10 "
                  "while recording)")
        sys.stdout.flush()


def bench_big_store() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    print("\nPeak memory on a synthetic store > 2 GB (1 layer x 2048 neurons x 2000 samples x 260 snapshots, float16)")
    with tempfile.TemporaryDirectory(dir=os.environ.get("TOPOTRACE_BENCH_TMP")) as tmp:
        path = Path(tmp) / "big.h5"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _WRITE, str(path), root], check=True)
        size = path.stat().st_size
        print(f"  wrote {size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s")
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(Path(tmp) / "cache.h5"), root],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        peak = r["peak_rss_kb"] * 1024
        print(f"  plain read {r['read_s']:.1f} s (raw float16 {r['raw_s']:.1f} s), analysis {r['analysis_s']:.1f} s "
              f"= {r['analysis_s'] / r['read_s']:.2f}x read ({r['analysis_s'] / r['raw_s']:.0f}x raw; streaming pass "
              f"{r['stream_s']:.1f} s = {r['stream_s'] / r['read_s']:.2f}x read, layouts {r['layouts_s']:.1f} s, "
              f"{os.cpu_count()} CPUs)")
        print(f"  analysis CPU time {r['analysis_cpu_s']:.1f} s = {r['analysis_cpu_s'] / r['read_s']:.2f}x the read "
              f"(wall = CPU / {r['analysis_cpu_s'] / r['analysis_s']:.2f} cores; load average at the end "
              f"{r['load']:.1f}: other processes share the cores)")
        print(f"  peak RSS {peak / 1e6:.0f} MB (after the plain read {r['rss_after_read_kb'] * 1024 / 1e6:.0f} MB) = "
              f"{peak / size:.2f} x store size")
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(Path(tmp) / "base.h5"), root,
                              "no-evidence"], check=True, capture_output=True, text=True).stdout
        base = json.loads(out.strip().splitlines()[-1])
        print(f"  per-sample evidence and bootstrap: analysis {r['analysis_s']:.1f} s vs {base['analysis_s']:.1f} s "
              f"without them = {r['analysis_s'] / base['analysis_s']:.2f}x (target <= 1.30x)")
        bench_big_incremental(path, Path(tmp) / "cache.h5", r["analysis_s"], root)
    print("  (temporary store deleted)")


def bench_big_incremental(path: Path, cache: Path, t_full: float, root: str) -> None:
    """On the large store analysed into ``cache`` (in ``t_full`` s): one more snapshot, analysed incrementally."""
    import shutil

    from topotrace.analysis.incremental import state_path

    saved = cache.with_name("saved")
    saved.mkdir()
    for f in (cache, state_path(cache)):
        shutil.copy2(f, saved / f.name)
    append_copy(path, 0)  # snapshot 261 (the arrays of the first one)
    for mode in ("provisional", "final"):
        for f in (cache, state_path(cache)):
            shutil.copy2(saved / f.name, f)
        out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(cache), root, "incremental", mode],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"  incremental, one new snapshot ({'reference kept' if mode == 'provisional' else 'reference moved'})"
              f": {r['analysis_s']:.1f} s = 1/{t_full / r['analysis_s']:.1f} of the full analysis ({t_full:.1f} s; "
              f"new snapshot + CKA of every snapshot {r['stream_s']:.1f} s, layouts {r['layouts_s']:.1f} s; peak RSS "
              f"{r['peak_rss_kb'] * 1024 / 1e6:.0f} MB)")


def main() -> None:
    bench_layouts()
    bench_whole_store()
    bench_big_store()
    bench_incremental()


if __name__ == "__main__":
    main()

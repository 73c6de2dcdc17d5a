"""Figures for docs/scale.md: Dask analysis vs in process, memory per worker, write rate, a 10^4-neuron layer.

1. The large synthetic store of :mod:`bench.bench_analysis` (1 layer x 2048 neurons x 2000 samples x 260
   snapshots, float16, > 2 GB; written by its builder to a temporary folder and deleted afterwards) analysed in
   process and on a 2-worker ``LocalCluster`` (one thread each), each in a fresh process, in the same run. The
   ratio dask / in-process is reported for the whole analysis and for the streaming pass (the part the workers
   do; layouts, evidence and writing the cache stay in the calling process). On 2 cores the cluster cannot win:
   the point is that the per-snapshot work moves to workers, whose memory does not grow with the store.
2. Peak RSS (VmHWM) of each worker process, of the calling process with a cluster and of the in-process
   analysis; and the workers' peak against the layer's width (1024 and 4096 neurons, small synthetic stores).
3. Write rate of one rank's store: ``StoreWriter`` appends of a 10^4-neuron float16 layer (1000 probe samples,
   20 MB per snapshot), bytes per snapshot on disk against the activation bytes (the figures behind
   ``docs/scale.md``).
4. For one layer of 10^4 neurons: the default layouts' time (computed by the calling process, one layer after
   another) and the page bytes of one snapshot's 8-bit map values in a report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_analysis import _WRITE

WORKERS = 2

_CHILD = r"""
import json, os, sys, time
from pathlib import Path


def peak_kb(field="VmHWM:"):
    # VmHWM belongs to this process image (a fresh process: the peak of this analysis alone)
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])


def cpu_s():
    return sum(os.times()[:2])  # user + system seconds of this process


from topotrace.analysis.pipeline import analyze
path, cache, mode, workers = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
stages = {}
cpu_marks = {}


def progress(stage, done, total):
    now = time.perf_counter()
    stages.setdefault(stage, [now, now])[1] = now
    if stage.endswith("snapshots"):  # this process's CPU time over the streaming pass
        cpu_marks.setdefault(stage, [cpu_s(), 0.0])[1] = cpu_s()


out = {"load_start": os.getloadavg()[0]}
if mode == "dask":
    from topotrace.analysis.distributed import dask_cluster
    t0 = time.perf_counter()
    with dask_cluster(workers=workers) as c:
        c.client.wait_for_workers(workers, timeout=120)
        out["start_s"] = time.perf_counter() - t0
        out["worker_idle_kb"] = sorted(c.client.run(peak_kb, "VmRSS:").values())
        w0, c0 = sum(c.client.run(cpu_s).values()), cpu_s()
        t0 = time.perf_counter()
        analyze(path, cache, layout_methods=["force"], refresh=True, progress=progress, cluster=c)
        out["analysis_s"] = time.perf_counter() - t0
        out["caller_cpu_s"] = cpu_s() - c0
        out["worker_cpu_s"] = sum(c.client.run(cpu_s).values()) - w0
        out["worker_peak_kb"] = sorted(c.client.run(peak_kb).values())
else:
    c0 = cpu_s()
    t0 = time.perf_counter()
    analyze(path, cache, layout_methods=["force"], refresh=True, progress=progress)
    out["analysis_s"] = time.perf_counter() - t0
    out["caller_cpu_s"] = cpu_s() - c0
    out["worker_cpu_s"] = 0.0
out["stream_s"] = sum(b - a for k, (a, b) in stages.items() if k.endswith("snapshots"))
out["stream_caller_cpu_s"] = sum(b - a for a, b in cpu_marks.values())
out["peak_kb"] = peak_kb()
out["load"] = os.getloadavg()[0]
print(json.dumps(out))
"""


def _analysis(path: Path, cache: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(cache), mode, str(WORKERS)], check=True,
                         capture_output=True, text=True, timeout=900).stdout
    return json.loads(out.strip().splitlines()[-1])


def _row(what: str, value: str, ratio: str = "") -> None:
    print(f"{what:<72} {value:>26} {ratio:>8}")


def bench_cluster() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    print(f"Analysis of a synthetic store > 2 GB (1 layer x 2048 neurons x 2000 samples x 260 snapshots, float16): "
          f"{WORKERS}-worker LocalCluster vs in process, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=os.environ.get("TOPOTRACE_BENCH_TMP")) as tmp:
        path = Path(tmp) / "big.h5"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _WRITE, str(path), root], check=True, timeout=900)
        t_write = time.perf_counter() - t0
        size = path.stat().st_size
        _row("store written by bench_analysis's builder (incl. making the data)",
             f"{size / 1e9:.2f} GB in {t_write:.0f} s", "")
        local = _analysis(path, Path(tmp) / "local.h5", "local")
        dask = _analysis(path, Path(tmp) / "dask.h5", "dask")
        cache = (Path(tmp) / "dask.h5").stat().st_size
        _row("whole analysis: dask / in process", f"{dask['analysis_s']:.1f} s / {local['analysis_s']:.1f} s",
             f"{dask['analysis_s'] / local['analysis_s']:.2f}")
        _row("streaming pass (the workers' part): dask / in process",
             f"{dask['stream_s']:.1f} s / {local['stream_s']:.1f} s", f"{dask['stream_s'] / local['stream_s']:.2f}")
        _row("rest in the calling process (layouts, evidence, cache): dask / in process",
             f"{dask['analysis_s'] - dask['stream_s']:.1f} s / {local['analysis_s'] - local['stream_s']:.1f} s", "")
        cpu_d, cpu_l = dask["caller_cpu_s"] + dask["worker_cpu_s"], local["caller_cpu_s"]
        _row("CPU time (workers + calling process): dask / in process",
             f"{dask['worker_cpu_s']:.0f} + {dask['caller_cpu_s']:.0f} s / {cpu_l:.0f} s", f"{cpu_d / cpu_l:.2f}")
        _row("per snapshot (streaming pass / 260): dask / in process",
             f"{1e3 * dask['stream_s'] / 260:.0f} ms / {1e3 * local['stream_s'] / 260:.0f} ms", "")
        _row(f"cluster start ({WORKERS} workers, not in the analysis time)", f"{dask['start_s']:.1f} s", "")
        _row("analysis.h5 size / store size (bytes per neuron and snapshot)",
             f"{cache / 1e6:.0f} MB ({cache / (2048 * 260):.0f} B)", f"{cache / size:.3f}")
        for i, kb in enumerate(dask["worker_peak_kb"]):
            _row(f"peak RSS, worker {i} (VmHWM)", f"{kb / 1e3:.0f} MB", f"{kb * 1e3 / size:.3f}")
        _row("peak RSS, calling process with the cluster", f"{dask['peak_kb'] / 1e3:.0f} MB",
             f"{dask['peak_kb'] * 1e3 / size:.3f}")
        _row("peak RSS, in-process analysis", f"{local['peak_kb'] / 1e3:.0f} MB",
             f"{local['peak_kb'] * 1e3 / size:.3f}")
        print(f"  (ratios of peak RSS are to the store size; load average at the start and end: in process "
              f"{local['load_start']:.1f} -> {local['load']:.1f}, dask {dask['load_start']:.1f} -> {dask['load']:.1f}; "
              f"other processes share the {os.cpu_count()} cores)")
    print("  (temporary store deleted)")
    sys.stdout.flush()


def bench_write(n_neurons: int = 10_000, n: int = 1000, n_s: int = 20) -> None:
    """StoreWriter appends of one float16 layer of ``n_neurons`` x ``n`` probe samples, ``n_s`` snapshots."""
    from topotrace.instrument.confidence import DEFAULT_MEASURES as MEASURES
    from topotrace.instrument.confidence import outcomes
    from topotrace.instrument.store import LayerSpec, ProbeRecord, ProbeSpec, Snapshot, StoreSpec, StoreWriter

    n_classes = 10
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), n // n_classes)
    spec = StoreSpec((LayerSpec("layer0", n_neurons, "flatten", (n_neurons,)),),
                     (ProbeSpec("heldout", np.arange(n), y),), tuple(str(c) for c in range(n_classes)), MEASURES,
                     "float16")
    acts = [np.maximum(rng.normal(0, 1, (n, n_neurons)), 0).astype(np.float16) for _ in range(2)]
    logits = rng.normal(0, 1, (n, n_classes)).astype(np.float32)
    pred, correct, loss, conf = outcomes(logits, y, MEASURES)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TOPOTRACE_BENCH_TMP")) as tmp:
        path = Path(tmp) / "w.h5"
        times = []
        with StoreWriter.create(path, spec, {"run_name": "bench-write", "seed": 0}) as w:
            for s in range(n_s):
                rec = ProbeRecord({"layer0": acts[s % 2]}, logits, pred, correct, loss, conf)
                t0 = time.perf_counter()
                w.append(Snapshot(step=s + 1, epoch=0, time=time.time(), probes={"heldout": rec}))
                times.append(time.perf_counter() - t0)
        size = path.stat().st_size
        act_bytes = n * n_neurons * 2
        med = float(np.median(times))
        print(f"\nOne rank's store: StoreWriter appends of 1 layer x {n_neurons} neurons x {n} samples (float16), "
              f"{n_s} snapshots")
        _row("activation bytes per snapshot (neurons x samples x 2)", f"{act_bytes / 1e6:.1f} MB", "")
        _row("file bytes per snapshot (size / snapshots) / activation bytes", f"{size / n_s / 1e6:.2f} MB",
             f"{size / n_s / act_bytes:.3f}")
        _row("append (write + flush + commit), median per snapshot", f"{1e3 * med:.0f} ms", "")
        _row("write rate (activation bytes / median append)", f"{act_bytes / med / 1e6:.0f} MB/s", "")
    sys.stdout.flush()


def bench_worker_memory(sizes: tuple[int, ...] = (1024, 4096), n_s: int = 12) -> None:
    """Peak RSS per worker against the layer's width (2000 samples, ``n_s`` snapshots, synthetic store)."""
    from topotrace.instrument.synthetic import write_synthetic_store

    print(f"\nPeak RSS per worker against the layer's width ({WORKERS} workers, 2000 samples, {n_s} snapshots)")
    with tempfile.TemporaryDirectory(dir=os.environ.get("TOPOTRACE_BENCH_TMP")) as tmp:
        for n_neurons in sizes:
            path = write_synthetic_store(Path(tmp) / f"w{n_neurons}.h5", n_snapshots=n_s, layer_sizes=(n_neurons,),
                                         n_classes=10, per_class=200, with_train_probe=False)
            r = _analysis(path, Path(tmp) / f"a{n_neurons}.h5", "dask")
            act_mb = 2000 * n_neurons * 4 / 1e6  # one snapshot as float32
            idle = max(r["worker_idle_kb"]) / 1e3
            peak = max(r["worker_peak_kb"]) / 1e3
            _row(f"{n_neurons} neurons: worker RSS idle -> peak (one snapshot as float32: {act_mb:.0f} MB)",
                 f"{idle:.0f} -> {peak:.0f} MB", f"{(peak - idle) / act_mb:.1f}")
            _row(f"{n_neurons} neurons: calling process's CPU / wall time of the streaming pass",
                 f"{r['stream_caller_cpu_s']:.2f} s / {r['stream_s']:.1f} s",
                 f"{r['stream_caller_cpu_s'] / r['stream_s']:.3f}")
    print("  (the ratios: peak minus idle RSS over one snapshot's activations as float32; the share of a core the "
          "calling process, with the local cluster's scheduler, uses while the workers run)")
    sys.stdout.flush()


def bench_wide_layer(n_neurons: int = 10_000) -> None:
    """What the calling process and the report do per layer of ``n_neurons`` neurons: the default layouts' time
    (class NAPs of 10 classes, declutter included) and the page bytes of one snapshot's 8-bit map values."""
    from topotrace.analysis.layouts import NeuronLayout
    from topotrace.analysis.pipeline import default_layout_methods
    from topotrace.report_templates.pages import embedded_bytes
    from topotrace.report_templates.quantize import delta_encode, quantize

    print(f"\nOne layer of {n_neurons} neurons: layouts in the calling process, map values in a report page")
    rng = np.random.default_rng(0)
    naps = np.maximum(rng.normal(0, 1, (n_neurons, 10)) + rng.normal(0, 1, (n_neurons, 1)), 0)  # [N, classes]
    for m in default_layout_methods(n_neurons):
        t0 = time.perf_counter()
        NeuronLayout(method=m).fit(naps)
        _row(f"layout {m} (declutter included)", f"{time.perf_counter() - t0:.1f} s", "")
    # a page ships per snapshot 27 values per neuron: 10 class maps, 2 correct/wrong, 5 confidence bins and
    # 5 measures x 2 correlation maps, as 8-bit codes stored as differences between snapshots (report.md)
    n_s = 50
    for label, drift in (("slow drift, 0.5 % of the range per snapshot", 0.005), ("fast drift, 3 %", 0.03)):
        total = 0
        for g in (10, 2, 5, 2, 2, 2, 2, 2):
            walk = np.clip(rng.uniform(0.2, 0.8, (1, g, n_neurons))
                           + np.cumsum(rng.normal(0, drift, (n_s, g, n_neurons)), axis=0), 0, 1)
            total += embedded_bytes(delta_encode(quantize(walk, 0.0, 1.0).codes))
        _row(f"page bytes of one snapshot's map values ({label})", f"{total / n_s / 1e3:.0f} kB",
             f"{total / n_s / (27 * n_neurons):.2f}")
    print("  (the ratio: page bytes over the 27 one-byte codes per neuron)")
    sys.stdout.flush()


def main() -> None:
    bench_cluster()
    bench_write()
    bench_worker_memory()
    bench_wide_layer()


if __name__ == "__main__":
    main()

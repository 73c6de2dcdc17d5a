"""Recording costs, each a ratio against a baseline measured in the same run (median of repeats).

1. Training-thread cost of one snapshot (probe pass + copy to host + queue; CPU time of the training thread)
   / a bare ``torch.no_grad()`` forward pass of the same probe set. Target: <= 1.25. Measured for four
   models: the snapshot has a fixed cost of a few tenths of a millisecond (hooks, mode flags, RNG state,
   hand-over) plus a copy of the recorded outputs, so the ratio is highest for the tiny digits MLP, whose
   whole forward pass takes about as long as copying its outputs. The writer's own work (confidence, HDF5)
   runs on its thread between snapshots and shows up in 3.
2. The same for a naive recorder that writes with h5py synchronously from inside the forward hooks.
3. Wall time of the default-like training run (digits-size MLP, 1290 steps, 60 log-spaced snapshots of two
   400-sample probe sets) with the recorder / without it.
4. Writer throughput (float16 activations appended through ``StoreWriter``) / ``numpy.ndarray.tofile`` of the
   same bytes; and the compression choice: gzip level 1 against no compression, write time and file size.
5. Compiled training: wall time of 400 steps of a ``torch.compile``d (inductor) MNIST-size MLP recorded every
   20 steps (1000 probe samples) / the same compiled training with equivalent eval passes, and the same ratio in
   eager mode (target: <= 1.15 and equal to the eager ratio within noise); the frames Dynamo compiled from the
   recorder's creation to the end of training (target 0: the probe pass runs eagerly, so the training forward
   is never recompiled). GPU figures: ``python -m bench.gpu_check`` on a CUDA machine.
6. Durability: wall time of the default-like training run (as 3) with ``Recorder.sync()`` (flush + ``fsync`` of the
   store) at every per-epoch checkpoint, as ``topotrace train`` does, and at close / the same run with ``fsync`` a
   no-op; both write to ``bench/out/`` (the disk the runs are on, not a tmpfs), alternated within one run.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from topotrace.instrument import confidence
from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import at_steps, every, log_spaced
from topotrace.instrument.store import LayerSpec, ProbeRecord, ProbeSpec, Snapshot, StoreSpec, StoreWriter

CLASSES = [str(c) for c in range(10)]
LAYERS = ["fc1", "relu1", "fc2", "relu2", "out"]
REPEATS = 5


class MLP(nn.Module):
    """The digits-size MLP: 64 -> 128 -> 64 -> 10."""

    def __init__(self):
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(64, 128), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(128, 64), nn.ReLU()
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        return self.out(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


def _median_time(fn, n_calls):
    """Median over REPEATS of the mean CPU seconds of this thread per call of ``fn`` over ``n_calls`` calls."""
    times = []
    for _ in range(REPEATS):
        t0 = time.thread_time()
        for _ in range(n_calls):
            fn()
        times.append((time.thread_time() - t0) / n_calls)
    return statistics.median(times)


def _bare(model, x):
    def run():
        model.eval()
        with torch.no_grad():
            model(x)
    return run


class NaiveRecorder:
    """Writes each hooked layer's output to HDF5 inside the hook, then logits and confidence, synchronously."""

    def __init__(self, model, path, x, y):
        self.model, self.x, self.y = model, x, y
        self.f = h5py.File(path, "w", libver="latest")
        self.i = 0
        n = len(x)
        self.ds = {}
        for name in LAYERS:
            d = model.get_submodule(name).out_features if name.startswith(("fc", "out")) else None
            d = d or {"relu1": 128, "relu2": 64}[name]
            self.ds[name] = self.f.create_dataset(name, (0, n, d), maxshape=(None, n, d), chunks=(1, n, d),
                                                  dtype="float16")
        self.logits = self.f.create_dataset("logits", (0, n, 10), maxshape=(None, n, 10), chunks=(1, n, 10),
                                            dtype="float32")

    def snapshot(self):
        handles = []
        for name in LAYERS:
            ds = self.ds[name]

            def hook(mod, inputs, out, ds=ds):
                ds.resize(self.i + 1, axis=0)
                ds[self.i] = out.numpy().astype(np.float16)

            handles.append(self.model.get_submodule(name).register_forward_hook(hook))
        try:
            self.model.eval()
            with torch.no_grad():
                logits = self.model(self.x).numpy()
            self.logits.resize(self.i + 1, axis=0)
            self.logits[self.i] = logits
            confidence.outcomes(logits, self.y, confidence.DEFAULT_MEASURES)
            self.f.flush()
            self.i += 1
        finally:
            for h in handles:
                h.remove()


class MnistMLP(nn.Module):
    """An MNIST-size MLP: 784 -> 512 -> 256 -> 10."""

    def __init__(self):
        super().__init__()
        self.hidden1 = nn.Sequential(nn.Linear(784, 512), nn.ReLU())
        self.hidden2 = nn.Sequential(nn.Linear(512, 256), nn.ReLU())
        self.out = nn.Linear(256, 10)

    def forward(self, x):
        return self.out(self.hidden2(self.hidden1(x)))


class SmallCNN(nn.Module):
    """A small CNN on 1x28x28 images: two conv blocks (recorded as channel means) and a linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.out = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        return self.out(self.conv2(self.conv1(x)).flatten(1))


SNAPSHOT_CASES = {  # name -> (model factory, input shape of one sample, recorded layers, timed pairs per repeat)
    "digits MLP 64-128-64-10, 5 layers": (MLP, (64,), LAYERS, 40),
    "digits MLP, 2 hidden layers (default run)": (MLP, (64,), ["relu1", "relu2"], 40),
    "MNIST MLP 784-512-256-10, 2 hidden layers": (MnistMLP, (784,), ["hidden1", "hidden2"], 10),
    "CNN 1x28x28, 2 conv blocks (channel means)": (SmallCNN, (1, 28, 28), ["conv1", "conv2"], 2),
}


def bench_snapshot(tmp: Path, make_model, sample_shape, layers, n_pairs, naive=False) -> dict[str, float]:
    """(1) and (2): seconds per call of a bare forward, our snapshot, and (optionally) the naive snapshot."""
    torch.manual_seed(0)
    model = make_model()
    x = torch.randn(1000, *sample_shape)
    y = torch.randint(0, 10, (1000,))
    # CPU time of the training thread (torch runs one thread here, so other processes on a busy machine do not
    # enter the figure). Each snapshot (probe pass, copy to host, hand-over to the writer) is timed next to one
    # bare forward pass, in alternating order, each after the writer has finished (as in training, where
    # snapshots are many steps apart; the writer's own work and its interference with training show up in 3)
    # and after one untimed bare pass, so that both start from the same warm caches. The figure is the median
    # over pairs of the per-pair ratio.
    bare_run = _bare(model, x)
    for old in tmp.glob("ours.h5"):
        old.unlink()
    rec = Recorder(model, tmp / "ours.h5", layers=layers, probes=[ProbeSet("heldout", x, y)],
                   class_names=CLASSES, schedule=at_steps([]), batch_size=1024)
    rec.snapshot(0)
    bare, ours = [], []
    for step in range(1, REPEATS * n_pairs + 1):
        for which in ((0, 1) if step % 2 else (1, 0)):
            while rec.n_snapshots < step and rec.error is None:
                time.sleep(0.0002)
            time.sleep(0.0005)  # the writer frees the snapshot after committing it
            bare_run()  # both timed calls start from the same warm state
            t0 = time.thread_time()
            rec.snapshot(step) if which else bare_run()
            (ours if which else bare).append(time.thread_time() - t0)
    rec.close()
    assert rec.error is None and rec.n_snapshots == REPEATS * n_pairs + 1
    ratios = [o / b for o, b in zip(ours, bare)]
    out = {"bare": statistics.median(bare), "ours": statistics.median(ours), "ratio": statistics.median(ratios)}
    if naive:
        rec_naive = NaiveRecorder(model, tmp / "naive.h5", x, y.numpy())
        rec_naive.snapshot()
        out["naive"] = _median_time(rec_naive.snapshot, 20)
        rec_naive.f.close()
        out["bare_loop"] = _median_time(bare_run, 200)
    return out


def bench_training(tmp: Path) -> dict[str, float]:
    """(3): wall seconds of the default-like run without and with the recorder."""
    g = torch.Generator().manual_seed(0)
    x_train, y_train = torch.randn(1347, 64, generator=g), torch.randint(0, 10, (1347,), generator=g)
    x_test, y_test = torch.randn(800, 64, generator=g), torch.randint(0, 10, (800,), generator=g)
    batch, epochs = 32, 30
    steps_per_epoch = -(-len(x_train) // batch)
    total = steps_per_epoch * epochs

    def run(path: Path | None) -> float:
        torch.manual_seed(0)
        model = MLP()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        rec = None
        if path is not None:
            probes = [ProbeSet("heldout", x_test[:400], y_test[:400]), ProbeSet("train", x_train[:400], y_train[:400])]
            rec = Recorder(model, path, layers=["relu1", "relu2"], probes=probes, class_names=CLASSES,
                           schedule=log_spaced(total, 60))
            rec.step(0)
        step = 0
        for _ in range(epochs):
            order = torch.randperm(len(x_train), generator=gen)
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                model.train()
                opt.zero_grad()
                nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
                opt.step()
                step += 1
                if rec is not None:
                    rec.step(step)
        if rec is not None:
            rec.close()
            assert rec.error is None and rec.n_snapshots >= 60
        return time.perf_counter() - t0

    plain, ours = [], []
    for r in range(3):
        plain.append(run(None))
        ours.append(run(tmp / f"train{r}.h5"))
    return {"plain": statistics.median(plain), "ours": statistics.median(ours), "steps": total}


def _dynamo_frames() -> int:
    """Frames Dynamo has compiled in this process so far (first compilations and recompilations alike)."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def bench_compiled_training(tmp: Path, compiled: bool, repeats: int = 3) -> dict[str, float]:
    """(5): wall seconds of 400 training steps of the MNIST-size MLP, recorded every 20 steps / plain.

    The plain run does what a user without the recorder would do: the same training with an equivalent eval
    pass every 20 steps (the 1000 probe samples in batches of 512, eval mode, ``torch.no_grad()``, through the
    uncompiled module, as the recorder's probe pass). ``compiled`` compiles the model with ``torch.compile``
    (inductor); each run starts from ``torch._dynamo.reset()`` and one untimed training step (the compilation
    of the training graph, the same in both), then times the recorder's creation, 401 probe passes' worth of
    steps and the close. Also returns the frames Dynamo compiled from the recorder's creation to the end.
    """
    g = torch.Generator().manual_seed(0)
    x_train, y_train = torch.randn(2048, 784, generator=g), torch.randint(0, 10, (2048,), generator=g)
    x_probe, y_probe = torch.randn(1000, 784, generator=g), torch.randint(0, 10, (1000,), generator=g)
    steps, every_n, batch, probe_batch = 400, 20, 64, 512

    def run(path: Path | None) -> tuple[float, int]:
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = MnistMLP()
        net = torch.compile(model) if compiled else model
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(0)

        def train_step() -> None:
            idx = torch.randint(0, len(x_train), (batch,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(net(x_train[idx]), y_train[idx]).backward()
            opt.step()

        def eval_pass() -> None:
            model.eval()
            with torch.no_grad():
                for start in range(0, len(x_probe), probe_batch):
                    model(x_probe[start : start + probe_batch])
            model.train()

        net.train()
        train_step()  # compiles the training graph (untimed, the same in both runs)
        frames = _dynamo_frames()
        t0 = time.perf_counter()
        rec = None
        if path is not None:
            rec = Recorder(net, path, layers=["hidden1", "hidden2"], probes=[ProbeSet("heldout", x_probe, y_probe)],
                           class_names=CLASSES, schedule=every(every_n), batch_size=probe_batch)
        for step in range(steps + 1):
            if step:
                train_step()
            if rec is not None:
                rec.step(step)
            elif step % every_n == 0:
                eval_pass()
        if rec is not None:
            rec.close()
            assert rec.error is None and rec.n_snapshots == steps // every_n + 1
        return time.perf_counter() - t0, _dynamo_frames() - frames

    plain, ours, frames = [], [], []
    for r in range(repeats):
        for which in ((0, 1) if r % 2 else (1, 0)):
            t, n = run(tmp / f"{'compiled' if compiled else 'eager'}{r}.h5" if which else None)
            (ours if which else plain).append(t)
            if which:
                frames.append(n)
    ratio = statistics.median(o / p for o, p in zip(ours, plain))
    return {"plain": statistics.median(plain), "ours": statistics.median(ours), "ratio": ratio,
            "frames": max(frames)}


def bench_writer(tmp: Path) -> dict[str, float]:
    """(4): bytes per second appended through StoreWriter vs written by ndarray.tofile."""
    rng = np.random.default_rng(0)
    n, sizes, n_snap = 1000, {"fc1": 128, "relu1": 128, "fc2": 64, "relu2": 64, "out": 10}, 100
    spec = StoreSpec(
        layers=tuple(LayerSpec(k, d, "flatten", (d,)) for k, d in sizes.items()),
        probes=(ProbeSpec("heldout", np.arange(n), rng.integers(0, 10, n)),),
        class_names=tuple(CLASSES),
        measures=confidence.DEFAULT_MEASURES,
    )
    snaps = []
    for s in range(n_snap):
        logits = rng.normal(size=(n, 10)).astype(np.float32)
        pred, correct, loss, conf = confidence.outcomes(logits, spec.probes[0].label, spec.measures)
        acts = {k: rng.normal(size=(n, d)).astype(np.float16) for k, d in sizes.items()}
        snaps.append(Snapshot(s, 0, 0.0, {"heldout": ProbeRecord(acts, logits, pred, correct, loss, conf)}))
    arrays = [a for snap in snaps for rec in snap.probes.values()
              for a in (*rec.acts.values(), rec.logits, rec.pred, rec.correct, rec.loss, *rec.conf.values())]
    nbytes = sum(a.nbytes for a in arrays)
    ours, base = [], []
    for r in range(REPEATS):
        path, raw = tmp / f"w{r}.h5", tmp / f"w{r}.bin"
        t0 = time.perf_counter()
        with StoreWriter.create(path, spec, {}) as w:
            for snap in snaps:
                w.append(snap)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with open(raw, "wb") as fh:
            for a in arrays:
                a.tofile(fh)
        base.append(time.perf_counter() - t0)
        path.unlink()
        raw.unlink()
    # The compression choice: post-ReLU activations (half zeros, as in real hidden layers), none vs gzip level 1.
    relu = [Snapshot(x.step, 0, 0.0, {"heldout": ProbeRecord(
        {k: np.maximum(a, 0) for k, a in x.probes["heldout"].acts.items()}, *(
            getattr(x.probes["heldout"], f) for f in ("logits", "pred", "correct", "loss", "conf")))}) for x in snaps]
    comp = {}
    for kind in (None, "gzip"):
        times, size = [], 0
        for r in range(3):
            path = tmp / f"c{r}.h5"
            t0 = time.perf_counter()
            with StoreWriter.create(path, dataclasses.replace(spec, compression=kind), {}) as w:
                for snap in relu:
                    w.append(snap)
            times.append(time.perf_counter() - t0)
            size = path.stat().st_size
            path.unlink()
        comp[kind] = (statistics.median(times), size)
    return {"bytes": nbytes, "ours": nbytes / statistics.median(ours), "tofile": nbytes / statistics.median(base),
            "gzip_time": comp["gzip"][0] / comp[None][0], "gzip_size": comp["gzip"][1] / comp[None][1]}


@contextmanager
def _fsync_off():
    """``os.fsync`` a no-op inside the block (the baseline of :func:`bench_fsync`), restored after it."""
    real = os.fsync
    calls = []
    os.fsync = lambda fd: calls.append(fd)  # noqa: E731 - counted, not synced
    try:
        yield calls
    finally:
        os.fsync = real


def bench_fsync(folder: Path, epochs: int = 30, repeats: int = 3, n_train: int = 1347) -> dict[str, float]:
    """(6): wall seconds of the default-like run with ``Recorder.sync()`` at every epoch, with and without fsync."""
    g = torch.Generator().manual_seed(0)
    x_train, y_train = torch.randn(n_train, 64, generator=g), torch.randint(0, 10, (n_train,), generator=g)
    x_test, y_test = torch.randn(800, 64, generator=g), torch.randint(0, 10, (800,), generator=g)
    batch = 32
    total = -(-n_train // batch) * epochs

    def run(path: Path) -> float:
        torch.manual_seed(0)
        model = MLP()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        probes = [ProbeSet("heldout", x_test[:400], y_test[:400]), ProbeSet("train", x_train[:400], y_train[:400])]
        rec = Recorder(model, path, layers=["relu1", "relu2"], probes=probes, class_names=CLASSES,
                       schedule=log_spaced(total, 60))
        rec.step(0)
        step = 0
        for _ in range(epochs):
            order = torch.randperm(n_train, generator=gen)
            for start in range(0, n_train, batch):
                idx = order[start : start + batch]
                model.train()
                opt.zero_grad()
                nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
                opt.step()
                step += 1
                rec.step(step)
            assert rec.sync()  # the per-epoch checkpoint's sync
        rec.close()
        assert rec.error is None
        elapsed = time.perf_counter() - t0
        path.unlink()
        return elapsed

    synced, unsynced, n_fsync = [], [], 0
    for r in range(repeats):  # alternated, so drifts of the machine touch both alike
        synced.append(run(folder / f"sync{r}.h5"))
        with _fsync_off() as calls:
            unsynced.append(run(folder / f"nosync{r}.h5"))
        n_fsync = len(calls)
    ours, base = statistics.median(synced), statistics.median(unsynced)
    return {"ours": ours, "plain": base, "ratio": ours / base, "n_fsync": n_fsync,
            "per_fsync": (ours - base) / max(n_fsync, 1), "epochs": epochs}


def main() -> None:
    torch.set_num_threads(1)  # steadier timings on a shared machine; both sides of each ratio run alike
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cases = {name: bench_snapshot(tmp, *case, naive=i == 0)
                 for i, (name, case) in enumerate(SNAPSHOT_CASES.items())}
        s = next(iter(cases.values()))
        t = bench_training(tmp)
        w = bench_writer(tmp)
        compiled = bench_compiled_training(tmp, compiled=True)
        eager = bench_compiled_training(tmp, compiled=False)
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix="fsync-") as d:
        f = bench_fsync(Path(d))
    n_snap = len(log_spaced(t["steps"], 60).steps)
    rows = [
        (f"snapshot, training thread / bare no_grad forward (1000 samples): {name}",
         f"{c['ours'] * 1e3:.2f} ms / {c['bare'] * 1e3:.2f} ms", c["ratio"], "<= 1.25")
        for name, c in cases.items()
    ] + [
        ("naive synchronous h5py-in-hooks snapshot / bare forward (both in a loop)",
         f"{s['naive'] * 1e3:.2f} ms / {s['bare_loop'] * 1e3:.2f} ms", s["naive"] / s["bare_loop"], "> ours"),
        (f"training wall time, recorder log_spaced({t['steps']}, 60) / plain",
         f"{t['ours']:.2f} s / {t['plain']:.2f} s", t["ours"] / t["plain"],
         f"+{(t['ours'] - t['plain']) / n_snap * 1e3:.1f} ms per snapshot"),
        ("writer throughput, StoreWriter float16 / ndarray.tofile",
         f"{w['ours'] / 1e6:.0f} MB/s / {w['tofile'] / 1e6:.0f} MB/s", w["ours"] / w["tofile"], ""),
        ("gzip level 1 / uncompressed store: write time (post-ReLU float16 activations)", "", w["gzip_time"],
         "default: uncompressed"),
        ("gzip level 1 / uncompressed store: file size", "", w["gzip_size"], ""),
        ("compiled MLP 784-512-256-10, 400 steps, every(20): recorder / compiled training + eval passes",
         f"{compiled['ours']:.2f} s / {compiled['plain']:.2f} s", compiled["ratio"], "<= 1.15, = eager"),
        ("the same in eager mode: recorder / training + eval passes",
         f"{eager['ours']:.2f} s / {eager['plain']:.2f} s", eager["ratio"], ""),
        ("compiled MLP: frames Dynamo compiled after the recorder's creation", "", compiled["frames"], "0"),
        (f"durability: training as above with fsync at each of {f['epochs']} per-epoch syncs and at close / "
         "fsync off", f"{f['ours']:.2f} s / {f['plain']:.2f} s", f["ratio"],
         f"+{f['per_fsync'] * 1e3:.1f} ms per fsync ({f['n_fsync']} per run)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'times':>26}  {'ratio':>6}  target")
    for name, detail, ratio, target in rows:
        value = f"{ratio:6d}" if isinstance(ratio, int) else f"{ratio:6.2f}"
        print(f"{name:<{width}}  {detail:>26}  {value}  {target}")


if __name__ == "__main__":
    main()

"""The recorder on a CUDA GPU: cost of the probe pass and of recording during training, as ratios; a few checks.

Run ``python -m bench.gpu_check`` on a machine with a CUDA device (``--compile`` also compiles the models with
``torch.compile``). Without one it says "no CUDA device" and exits with status 0. Not part of ``make bench``
(which runs ``bench/bench_*.py``), because that runs on CPU machines.

For a ResNet-18-sized CNN (3x224x224 random images, 10 classes, float32) and a small transformer encoder
(4 layers, d=256, 128 tokens, trained under bfloat16 autocast and recorded with ``autocast=torch.bfloat16``):

1. Probe pass: one snapshot (the recorder's probe pass, its non-blocking copies to pinned host memory, and the
   hand-over to the writer) / a bare ``torch.no_grad()`` forward pass of the same probe set in the same batches,
   both timed until the GPU has finished (``torch.cuda.synchronize``); also the time the training thread is
   held by the snapshot alone (it does not wait for the copies: the writer waits on one CUDA event per pass).
2. Training wall time: 200 steps recorded every 20 steps / the same training without the recorder, and / the
   same training with equivalent eval passes.

Checks (each prints OK or FAILED; the exit status is 1 if one failed): the last snapshot's logits and one
layer equal a recomputation with the same batches; no synchronising CUDA call during a probe pass (torch's
sync debug mode); with ``--compile``, no frame compiled by Dynamo after the recorder's creation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import at_steps, every
from topotrace.instrument.store import Store

CLASSES = [str(c) for c in range(10)]


class Block(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with batch norm and a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.short(x))


class ResNet18(nn.Module):
    """ResNet-18's layout (11.2 M parameters with 10 classes), written out so that torchvision is not needed."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        widths, cin = (64, 128, 256, 512), 64
        for i, w in enumerate(widths, start=1):
            setattr(self, f"layer{i}", nn.Sequential(Block(cin, w, 1 if i == 1 else 2), Block(w, w, 1)))
            cin = w
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x):
        h = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(h.mean(dim=(2, 3)))


class Encoder(nn.Module):
    """A small transformer classifier: token embedding, 4 encoder layers, mean over tokens, linear head."""

    def __init__(self, vocab: int = 1000, d: int = 256, tokens: int = 128, n_classes: int = 10):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(tokens, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        self.head = nn.Linear(d, n_classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x) + self.pos).mean(dim=1))


def _cases(device: torch.device) -> dict[str, dict]:
    g = torch.Generator().manual_seed(0)
    return {
        "ResNet-18, 3x224x224, float32": dict(
            make=ResNet18, x=torch.randn(1024, 3, 224, 224, generator=g), probe_n=512, batch=64, probe_batch=128,
            layers=["layer1", "layer2", "layer3", "layer4"], reductions=None, autocast=None, check="layer4"),
        "transformer encoder 4x256, 128 tokens, bfloat16 autocast": dict(
            make=Encoder, x=torch.randint(0, 1000, (4096, 128), generator=g), probe_n=1000, batch=64,
            probe_batch=250, layers=["encoder.layers.*"], reductions={"encoder.layers.*": "token_mean"},
            autocast=torch.bfloat16, check="encoder.layers.3"),
    }


def _sync_calls(fn) -> list[str]:
    """Run ``fn`` under torch's CUDA sync debug mode; the warnings of synchronising calls it made."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]


def check_case(name: str, case: dict, device: torch.device, tmp: Path, compile_model: bool) -> tuple[dict, list]:
    """Figures and checks of one model: (name -> value, [(check, passed, detail)])."""
    torch.manual_seed(0)
    model = case["make"]().to(device)
    net = torch.compile(model) if compile_model else model
    x = case["x"].to(device)
    y = torch.randint(0, 10, (len(x),), generator=torch.Generator().manual_seed(1)).to(device)
    px, py = x[: case["probe_n"]], y[: case["probe_n"]]
    bs, pbs, amp = case["batch"], case["probe_batch"], case["autocast"]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator(device=device).manual_seed(0)

    def autocast():
        return torch.autocast("cuda", dtype=amp) if amp is not None else torch.autocast("cuda", enabled=False)

    def train_step():
        idx = torch.randint(0, len(x), (bs,), generator=gen, device=device)
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        opt.step()

    def bare():
        model.eval()
        with torch.no_grad(), autocast():
            for s in range(0, len(px), pbs):
                model(px[s : s + pbs])
        model.train()

    checks = []
    net.train()
    for _ in range(3):  # warm-up: cuDNN's algorithm choice, the compilation with --compile
        train_step()
    bare()
    torch.cuda.synchronize()

    # 1. the probe pass
    frames0 = _frames()
    rec = Recorder(net, tmp / f"{name[:8]}-pass.h5", layers=case["layers"], reductions=case["reductions"],
                   probes=[ProbeSet("probe", px, py)], class_names=CLASSES, schedule=at_steps([]),
                   batch_size=pbs, autocast=amp)
    rec.snapshot(0)
    rec.snapshot(1)  # the pinned buffers exist from here on
    ours_done, ours_thread, plain = [], [], []
    for step in range(2, 22):
        while rec.n_snapshots < step and rec.error is None:
            time.sleep(0.001)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        bare()
        torch.cuda.synchronize()
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rec.snapshot(step)
        ours_thread.append(time.perf_counter() - t0)
        torch.cuda.synchronize()
        ours_done.append(time.perf_counter() - t0)
    while rec.n_snapshots < 22 and rec.error is None:
        time.sleep(0.001)
    syncs = _sync_calls(lambda: rec.snapshot(22))
    checks.append(("no synchronising CUDA call in a probe pass", not syncs, "; ".join(syncs[:3])))
    rec.close()
    checks.append(("the writer committed every snapshot", rec.error is None and rec.n_snapshots == 23,
                   repr(rec.error)))

    # the last snapshot against a recomputation with the same batches
    acts = []

    def keep(module, inputs, output):  # token_mean of [batch, T, D], channel_mean of [batch, C, H, W]
        acts.append(output.float().mean(dim=1) if output.ndim == 3 else output.float().mean(dim=(2, 3)))

    handle = model.get_submodule(case["check"]).register_forward_hook(keep)
    model.eval()
    with torch.no_grad(), autocast():
        logits = torch.cat([model(px[s : s + pbs]).float() for s in range(0, len(px), pbs)]).cpu().numpy()
    model.train()
    handle.remove()
    act = torch.cat(acts).cpu().numpy()
    with Store(tmp / f"{name[:8]}-pass.h5") as st:
        got_logits, got_act = st.logits("probe")[-1], st.acts("probe", case["check"], -1)
    ok = np.allclose(got_logits, logits, rtol=1e-3, atol=1e-3)
    checks.append(("stored logits equal a recomputation", ok, f"max diff {np.abs(got_logits - logits).max():.2e}"))
    ok = np.allclose(got_act, act, rtol=1e-2, atol=1e-2)
    checks.append((f"stored {case['check']} equals a recomputation (float16)", ok,
                   f"max diff {np.abs(got_act - act).max():.2e}"))

    # 2. training wall time
    steps, n_every = 200, 20

    def train(path: Path | None, evals: bool) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = None
        if path is not None:
            r = Recorder(net, path, layers=case["layers"], reductions=case["reductions"],
                         probes=[ProbeSet("probe", px, py)], class_names=CLASSES, schedule=every(n_every),
                         batch_size=pbs, autocast=amp)
        for step in range(steps + 1):
            if step:
                train_step()
            if r is not None:
                r.step(step)
            elif evals and step % n_every == 0:
                bare()
        if r is not None:
            r.close()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    walls: dict[str, list[float]] = {"plain": [], "evals": [], "ours": []}
    for rep in range(2):
        walls["plain"].append(train(None, False))
        walls["evals"].append(train(None, True))
        walls["ours"].append(train(tmp / f"{name[:8]}-train{rep}.h5", False))
    frames = _frames() - frames0
    if compile_model:
        checks.append(("no frame compiled after the recorder's creation", frames == 0, f"{frames} frames"))
    med = {k: statistics.median(v) for k, v in walls.items()}
    figures = {
        "probe pass until the GPU finished / bare no_grad forward":
            (statistics.median(ours_done) / statistics.median(plain),
             f"{statistics.median(ours_done) * 1e3:.2f} ms / {statistics.median(plain) * 1e3:.2f} ms"),
        "training thread held by a snapshot / bare no_grad forward":
            (statistics.median(ours_thread) / statistics.median(plain),
             f"{statistics.median(ours_thread) * 1e3:.2f} ms / {statistics.median(plain) * 1e3:.2f} ms"),
        f"training {steps} steps, recorded every({n_every}) / plain":
            (med["ours"] / med["plain"], f"{med['ours']:.2f} s / {med['plain']:.2f} s"),
        f"training {steps} steps, recorded every({n_every}) / with equivalent eval passes":
            (med["ours"] / med["evals"], f"{med['ours']:.2f} s / {med['evals']:.2f} s"),
    }
    return figures, checks


def _frames() -> int:
    if "torch._dynamo" not in sys.modules:
        return 0
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="torch.compile the models (inductor)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU check measures the recorder on a CUDA GPU; nothing to do here.")
        return 0
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, compile={args.compile}")
    failed = False
    with tempfile.TemporaryDirectory() as d:
        for name, case in _cases(device).items():
            t0 = time.perf_counter()
            if args.compile:
                torch._dynamo.reset()
            figures, checks = check_case(name, case, device, Path(d), args.compile)
            print(f"\n{name} ({time.perf_counter() - t0:.0f} s)")
            width = max(len(k) for k in figures)
            for what, (ratio, detail) in figures.items():
                print(f"  {what:<{width}}  {detail:>24}  {ratio:6.2f}")
            for what, passed, detail in checks:
                failed |= not passed
                print(f"  {'OK    ' if passed else 'FAILED'} {what}" + (f" ({detail})" if detail else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

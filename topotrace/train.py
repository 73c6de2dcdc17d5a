"""The embedded default run: an MLP trained on a small image data set while a :class:`Recorder` records it.

This is also a worked example of instrumenting a plain PyTorch loop: build the model, pick probe sets, create
the recorder, call ``rec.step(step, epoch)`` after each optimiser step, close the recorder.
"""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every, log_spaced, per_epoch
from topotrace.instrument.store import STORE_FILE

from .config import to_toml
from .data import load_dataset, stratified_indices


class MLP(nn.Module):
    """A plain multi-layer perceptron; hidden layer ``i`` is the module ``hidden{i+1}`` (Linear, [BN], ReLU, [Dropout]).

    Recording ``hidden*`` gives each hidden layer's activity after the non-linearity.
    """

    def __init__(self, n_in: int, hidden: list[int], n_out: int, dropout: float = 0.0, batchnorm: bool = False):
        super().__init__()
        width = n_in
        for i, h in enumerate(hidden):
            parts: list[nn.Module] = [nn.Linear(width, h)]
            if batchnorm:
                parts.append(nn.BatchNorm1d(h))
            parts.append(nn.ReLU())
            if dropout > 0:
                parts.append(nn.Dropout(dropout))
            self.add_module(f"hidden{i + 1}", nn.Sequential(*parts))
            width = h
        self.out = nn.Linear(width, n_out)
        self.n_hidden = len(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, n_in] -> [batch, n_out]
        for i in range(self.n_hidden):
            x = getattr(self, f"hidden{i + 1}")(x)
        return self.out(x)


@dataclass
class RunSummary:
    run_dir: Path
    store_path: Path
    n_snapshots: int
    steps: int
    seconds: float
    error: BaseException | None


def make_schedule(cfg: dict, total_steps: int, steps_per_epoch: int) -> Callable[[int], bool]:
    """The snapshot schedule a config asks for."""
    rec = cfg["record"]
    if rec["schedule"] == "log":
        return log_spaced(total_steps, rec["snapshots"])
    if rec["schedule"] == "every":
        return every(rec["every"])
    return per_epoch(steps_per_epoch)


def train_run(cfg: dict, overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> RunSummary:
    """Train the configured MLP and record it into ``<out_dir>/<name>/store.h5``.

    Args:
        cfg: a config from :func:`topotrace.config.load_config`.
        overwrite: replace an existing run folder of the same name.
        progress: called as ``progress(step, total_steps)`` after each step.
    """
    run_dir = Path(cfg["run"]["out_dir"]) / cfg["run"]["name"]
    store_path = run_dir / STORE_FILE
    if run_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{run_dir} exists already. Choose another run.name or pass --overwrite "
                                  "(make train OVERWRITE=1).")
        if not (run_dir / STORE_FILE).exists() and not (run_dir / "config.toml").exists():
            raise FileExistsError(f"{run_dir} exists and is not a topotrace run (no store.h5 or config.toml); "
                                  "--overwrite only replaces runs. Choose another run.name.")
        shutil.rmtree(run_dir)
    seed = int(cfg["run"]["seed"])
    torch.manual_seed(seed)
    d = cfg["data"]
    data = load_dataset(d["source"], d["path"], d["test_fraction"], seed)
    m = cfg["model"]
    model = MLP(data.x_train.shape[1], list(m["hidden"]), len(data.class_names), m["dropout"], m["batchnorm"])

    probes = []
    held = stratified_indices(data.y_test, d["heldout_per_class"], seed)
    probes.append(ProbeSet("heldout", torch.from_numpy(data.x_test[held]), torch.from_numpy(data.y_test[held]), held))
    if d["train_probe_per_class"] > 0:
        tr = stratified_indices(data.y_train, d["train_probe_per_class"], seed + 1)
        probes.append(ProbeSet("train", torch.from_numpy(data.x_train[tr]), torch.from_numpy(data.y_train[tr]), tr))

    t = cfg["train"]
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    steps_per_epoch = -(-len(x_train) // t["batch_size"])
    total_steps = steps_per_epoch * t["epochs"]
    r = cfg["record"]
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(to_toml(cfg))
    meta = {
        "run_name": cfg["run"]["name"],
        "seed": seed,
        "config": cfg,
        "data": data.description,
        "host": platform.node(),
        "total_steps": total_steps,
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=t["lr"], momentum=t["momentum"],
                                weight_decay=t["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    recorder = Recorder(
        model, store_path, layers=r["layers"], probes=probes, class_names=data.class_names,
        schedule=make_schedule(cfg, total_steps, steps_per_epoch), meta=meta, act_dtype=r["act_dtype"],
        compression=None if r["compression"] == "none" else r["compression"], batch_size=r["batch_size"],
    )
    with recorder:
        step = 0
        recorder.step(step, epoch=0)  # the untrained model
        for epoch in range(t["epochs"]):
            order = torch.randperm(len(x_train), generator=generator)
            for start in range(0, len(order), t["batch_size"]):
                batch = order[start : start + t["batch_size"]]
                model.train()
                optimizer.zero_grad()
                loss = loss_fn(model(x_train[batch]), y_train[batch])
                loss.backward()
                optimizer.step()
                step += 1
                recorder.step(step, epoch=epoch)
                if progress is not None:
                    progress(step, total_steps)
    return RunSummary(run_dir, store_path, recorder.n_snapshots, step, time.perf_counter() - t0, recorder.error)


def final_metrics(store_path: Path) -> dict[str, dict[str, float]]:
    """Accuracy, loss and mean confidence (max_prob where recorded) at the last snapshot, per probe set."""
    from topotrace.instrument.store import Store

    out = {}
    with Store(store_path) as st:
        measure = "max_prob" if "max_prob" in st.measures else st.measures[0]
        for name in st.probes:
            out[name] = {
                "accuracy": float(np.mean(st.correct(name)[-1])),
                "loss": float(np.mean(st.loss(name)[-1])),
                "confidence": float(np.mean(st.conf(name, measure)[-1])),
                "n": len(st.labels(name)),
            }
    return out

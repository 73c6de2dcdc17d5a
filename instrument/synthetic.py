"""Synthetic stores with planted structure, for tests and benchmarks (numpy only, no torch).

A synthetic run imitates a classifier that learns over ``n_snapshots`` snapshots: class-tuned neurons grow
stronger and more selective with training time, the logits sharpen, and a few neurons carry planted signals
whose statistics are known exactly:

* neuron 0 of every layer equals the sample's ``max_prob`` confidence (r = 1 overall and within class);
* neuron 1 of every layer encodes only the class (class mean, no within-class variation): r = 0 within class;
* the other neurons fall into ``n_clusters`` clusters that share a preferred class (planted layout clusters).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .confidence import DEFAULT_MEASURES, outcomes
from .store import LayerSpec, ProbeRecord, ProbeSpec, Snapshot, StoreSpec, StoreWriter


def write_synthetic_store(
    path: str | Path,
    n_snapshots: int = 20,
    layer_sizes: Sequence[int] = (64,),
    n_classes: int = 10,
    per_class: int = 20,
    n_clusters: int = 4,
    seed: int = 0,
    act_dtype: str = "float16",
    with_train_probe: bool = True,
    meta: Mapping[str, object] | None = None,
) -> Path:
    """Write a synthetic store and return its path.

    Args:
        path: file to create (must not exist).
        n_snapshots: S.
        layer_sizes: neurons per layer; layers are named ``layer0``, ``layer1``, ...
        n_classes: C.
        per_class: probe samples per class (held-out set; the train set has the same size).
        n_clusters: planted neuron clusters per layer.
        seed: RNG seed; the same seed gives the same file contents (up to timestamps).
        act_dtype: ``"float16"`` or ``"float32"``.
        with_train_probe: also write a ``"train"`` probe set.
        meta: run metadata to add to (or replace in) the synthetic run's (``run_name``, ``data``, ...).
    """
    rng = np.random.default_rng(seed)
    n = n_classes * per_class
    names = ["heldout", "train"] if with_train_probe else ["heldout"]
    labels = {p: np.repeat(np.arange(n_classes), per_class) for p in names}
    probes = tuple(ProbeSpec(p, np.arange(n) + 10_000 * k, labels[p]) for k, p in enumerate(names))
    layers = tuple(LayerSpec(f"layer{i}", int(d), "flatten", (int(d),)) for i, d in enumerate(layer_sizes))
    spec = StoreSpec(layers, probes, tuple(f"class {c}" for c in range(n_classes)), DEFAULT_MEASURES, act_dtype)
    # Per layer: each neuron (from 2 on) prefers the class of its cluster; clusters cycle through classes.
    tuning = []
    for d in layer_sizes:
        cluster = np.arange(d) % max(n_clusters, 1)
        pref = cluster % n_classes
        tuning.append((pref, rng.normal(0, 1, (n_classes, d)).astype(np.float32)))
    noise = {p: rng.normal(0, 1, (n, n_classes)).astype(np.float32) for p in names}
    run_meta = {"run_name": "synthetic", "seed": seed, "data": "synthetic", "config": {"synthetic": True}}
    writer = StoreWriter.create(path, spec, {**run_meta, **(meta or {})})
    try:
        for s in range(n_snapshots):
            t = (s + 1) / n_snapshots  # training progress in (0, 1]
            recs = {}
            for p in names:
                y = labels[p]
                logits = noise[p] * (1.0 - 0.5 * t) + 6.0 * t * np.eye(n_classes, dtype=np.float32)[y]
                pred, correct, loss, conf = outcomes(logits, y, DEFAULT_MEASURES)
                acts = {}
                for layer, (pref, base) in zip(layers, tuning):
                    d = layer.n_neurons
                    a = 0.3 * rng.normal(0, 1, (n, d)).astype(np.float32) + 0.2 * base[y]
                    a += 2.0 * t * (pref[None, :] == y[:, None])  # class tuning grows with training
                    a *= 0.5 + conf["max_prob"][:, None]  # activity rises with confidence
                    a[:, 0] = conf["max_prob"]
                    if d > 1:
                        a[:, 1] = y.astype(np.float32) / n_classes * (1 + t)
                    acts[layer.name] = a
                recs[p] = ProbeRecord(acts, logits, pred, correct, loss, conf)
            writer.append(Snapshot(step=int(10 * 1.07**s) + s, epoch=s // 5, time=time.time(), probes=recs))
    finally:
        writer.close()
    return Path(path)

"""What lets :func:`.pipeline.analyze` extend a cached analysis by new snapshots only (``docs/analysis.md``).

The cache (``analysis.h5``) holds every per-snapshot result the report shows; extending it also needs a few
per-snapshot arrays the report never reads: each probe sample's strength and distinctness at every snapshot,
their correlations with the confidence measures, and the bootstrap replicates of the first snapshot behind the
trends. They are kept in a sidecar file next to the cache, :func:`state_path` (``analysis.incremental.h5`` for
``analysis.h5``), so that ``analysis.h5`` itself is the same file whether or not it can be extended.

The sidecar says which cache it belongs to (the cache's store fingerprint, its parameters and the SHA-256 of the
cache file as written) and which snapshots it describes (:func:`prefix_digest` of the store's first S snapshots).
A sidecar that does not match, or cannot be read, is ignored: the analysis is then computed from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..instrument.store import Store

STATE_FORMAT = "topotrace-analysis-state"
STATE_VERSION = 1


def state_path(cache: str | os.PathLike) -> Path:
    """The sidecar of a cache file: ``analysis.h5`` -> ``analysis.incremental.h5`` (same folder)."""
    cache = Path(cache)
    return cache.with_name(f"{cache.stem}.incremental{cache.suffix}")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _update(h: hashlib._Hash, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())


def prefix_digest(store: Store, n: int) -> str:
    """SHA-256 identifying the first ``n`` snapshots of a store and what it records.

    Covers the store's layers (names, sizes, reductions), classes, measures, activation dtype and probe sets
    (names and labels), and of each of the first ``n`` snapshots its step, epoch and recording time, temperature,
    and every probe set's logits and losses. A snapshot re-recorded after a resume differs in its recording time
    (and, as training is not bit-reproducible in general, in its logits), so a store cut and re-recorded is
    recognised without reading its activations.
    """
    h = hashlib.sha256()
    layout = {"layers": [[la.name, int(la.n_neurons), la.reduction] for la in store.layers.values()],
              "classes": list(store.class_names), "measures": list(store.measures),
              "dtype": str(store.spec.act_dtype), "probes": sorted(store.probes), "n": int(n)}
    h.update(json.dumps(layout, sort_keys=True).encode())
    for arr in (store.steps[:n], store.epochs[:n], store.times[:n]):
        _update(h, arr)
    if store.temperature is not None:
        _update(h, store.temperature[:n])
    for p in sorted(store.probes):
        _update(h, store.labels(p))
        _update(h, store.logits(p)[:n])
        _update(h, store.loss(p)[:n])
    return h.hexdigest()


@dataclass
class LayerState:
    """The per-snapshot arrays of one layer that the cache lacks (shapes: S snapshots, n probe samples).

    Attributes:
        per_sample: array of shape (2, S, n), float64: each probe sample's strength and distinctness (NaN where
            left out).
        boot_ends: array of shape (2, 2, R), float32: the first and the last snapshot's bootstrap replicates of
            the dormant share and NC1 (the trends' paired resamples).
        sample_corr: S dicts (one per snapshot) of the per-sample quantities' correlations with the measures
            (:meth:`.evidence.Bootstrap.correlations`).
    """

    per_sample: np.ndarray
    boot_ends: np.ndarray
    sample_corr: list[dict[str, np.ndarray]]


@dataclass
class State:
    """The sidecar of one cache.

    Attributes:
        fingerprint: the store fingerprint of the cache it belongs to (JSON text, as in the cache).
        params_key: that cache's parameters (JSON text, as in the cache).
        n_snapshots: S, the snapshots the cache holds.
        prefix: :func:`prefix_digest` of the store's first S snapshots when they were analysed.
        cache_sha256: SHA-256 of the cache file as written.
        layers: layer name -> :class:`LayerState`.
    """

    fingerprint: str
    params_key: str
    n_snapshots: int
    prefix: str
    cache_sha256: str
    layers: dict[str, LayerState]


def is_state_file(path: Path) -> bool:
    """True when ``path`` is a sidecar this module wrote (so it may be replaced)."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == STATE_FORMAT
    except (OSError, ValueError, KeyError):
        return False


def save_state(path: str | os.PathLike, state: State) -> bool:
    """Write ``state`` to ``path`` atomically (a temporary file renamed into place).

    A file at ``path`` that is not a readable sidecar is left alone, with a warning (nothing is written; the cache
    then cannot be extended and the next analysis of a grown store starts from scratch).

    Returns:
        Whether the sidecar was written.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and (path.is_symlink() or not path.is_file() or not is_state_file(path)):
        warnings.warn(f"{path} is not an analysis state that topotrace can read (another file, or a damaged one); it "
                      "is left alone, and analyses of this store after it grows start from scratch. Remove it to "
                      "let them extend the cached analysis.", UserWarning, stacklevel=3)
        return False
    tmp = path.with_name(path.name + ".writing")
    try:
        with h5py.File(tmp, "w") as f:
            a = f.attrs
            a["format"] = STATE_FORMAT
            a["version"] = STATE_VERSION
            a["fingerprint"] = state.fingerprint
            a["params_key"] = state.params_key
            a["n_snapshots"] = int(state.n_snapshots)
            a["prefix"] = state.prefix
            a["cache_sha256"] = state.cache_sha256
            a["layer_order"] = json.dumps(list(state.layers))
            for name, ls in state.layers.items():
                g = f.create_group(f"layers/{name}")
                g.create_dataset("per_sample", data=np.asarray(ls.per_sample, np.float64))
                g.create_dataset("boot_ends", data=np.asarray(ls.boot_ends, np.float32))
                keys = list(ls.sample_corr[0]) if ls.sample_corr else []
                g.attrs["sample_corr_keys"] = json.dumps(keys)
                for k in keys:
                    g.create_dataset(f"sample_corr/{k}", data=np.stack([c[k] for c in ls.sample_corr]))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def load_state(path: str | os.PathLike) -> State:
    """Read a sidecar written by :func:`save_state`.

    Raises:
        OSError, KeyError, ValueError: the file is missing, unreadable, of another format or version, or its
            arrays do not have the shapes its snapshot count says.
    """
    with h5py.File(path, "r") as f:
        a = f.attrs
        if _text(a.get("format", "")) != STATE_FORMAT or int(a.get("version", -1)) != STATE_VERSION:
            raise ValueError(f"{path} is not an analysis state of version {STATE_VERSION}.")
        n_s = int(a["n_snapshots"])
        layers = {}
        for name in json.loads(_text(a["layer_order"])):
            g = f[f"layers/{name}"]
            per_sample = g["per_sample"][()]
            boot_ends = g["boot_ends"][()]
            stacked = {k: g[f"sample_corr/{k}"][()] for k in json.loads(_text(g.attrs["sample_corr_keys"]))}
            if per_sample.ndim != 3 or per_sample.shape[:2] != (2, n_s) or boot_ends.shape[:2] != (2, 2) \
                    or any(len(v) != n_s for v in stacked.values()):
                raise ValueError(f"{path}: layer {name!r} does not hold {n_s} snapshots.")
            corr = [{k: v[s] for k, v in stacked.items()} for s in range(n_s)]
            layers[name] = LayerState(per_sample, boot_ends, corr)
        return State(_text(a["fingerprint"]), _text(a["params_key"]), n_s, _text(a["prefix"]),
                     _text(a["cache_sha256"]), layers)

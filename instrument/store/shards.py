"""Sharded stores: one shard file per DDP rank, and the combined store that readers open.

Under ``Recorder(..., shard="ddp")`` every rank records a contiguous share of each probe set into its own shard,
a complete store by itself (:func:`shard_file` names it, :func:`shard_spec` describes it). Rank 0 writes the
combined store at the run's path with :func:`write_combined`: the root attributes of a plain store for the whole
probe sets, the attribute :data:`SHARDS` (which file holds which samples), the probe sets' ``index`` and
``label``, and HDF5 virtual datasets (VDS, HDF5 >= 1.10) that put the shards' per-snapshot datasets side by side
along the sample axis, so h5py and ``h5dump`` see one store with the samples in their original order.

:class:`~.reader.Store` reads a combined store through its shards, each opened and checked as a store, not
through the virtual datasets: it sees the snapshots committed by *every* shard (the smallest committed count),
checks that the shards hold the same steps, and sums the shards' non-finite counts. The virtual datasets are for
other tools; their extent is the longest shard's, and rows a shorter shard has not written read as the fill
value (NaN for floats, -1 for integers, False for bools); ``/committed`` there holds each shard's count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from .format import (
    ATTRS_DIGEST,
    LIBVER,
    ProbeSpec,
    StoreError,
    StoreSpec,
    _attrs_digest,
    _json,
    _write_root_attrs,
    dataset_attrs,
    plan,
)

SHARDS = "shards"  # root attribute of a combined store: JSON [{"file": name, "samples": {probe: [lo, hi]}}, ...]
_FILL = {"f": np.nan, "i": -1, "u": 0, "b": False}


def shard_file(path: str | os.PathLike, rank: int, world: int) -> Path:
    """The shard of ``rank`` of ``world`` next to the store ``path``: ``store.h5`` -> ``store.shard-01-of-04.h5``."""
    p = Path(path)
    width = max(2, len(str(world - 1)))
    return p.with_name(f"{p.stem}.shard-{rank:0{width}d}-of-{world:0{width}d}{p.suffix}")


def shard_spec(spec: StoreSpec, samples: Mapping[str, tuple[int, int]]) -> StoreSpec:
    """The spec of one shard: ``spec`` with each probe set cut to its samples ``lo .. hi - 1``."""
    probes = tuple(ProbeSpec(p.name, p.index[slice(*samples[p.name])], p.label[slice(*samples[p.name])])
                   for p in spec.probes)
    return StoreSpec(layers=spec.layers, probes=probes, class_names=spec.class_names, measures=spec.measures,
                     act_dtype=spec.act_dtype, compression=spec.compression)


def read_shards(f: h5py.File, path: object) -> list[dict[str, object]] | None:
    """The shard table of a combined store (None for a plain store); a malformed table is a StoreError."""
    if SHARDS not in f.attrs:
        return None
    raw = f.attrs[SHARDS]
    try:
        table = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        ok = isinstance(table, list) and table and all(
            isinstance(t, dict) and isinstance(t.get("file"), str) and isinstance(t.get("samples"), dict)
            and "/" not in t["file"] and t["file"] not in ("", ".", "..") for t in table)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise StoreError(f"{path} is damaged: the attribute {SHARDS!r} does not list its shard files. Restore it "
                         "from a copy or record the run again.")
    return table


def _virtual(f: h5py.File, name: str, pieces: Sequence[tuple[str, tuple[int, int] | None]], row: tuple[int, ...],
             dtype: np.dtype) -> None:
    """A VDS ``name`` of shape (0.., *row), unlimited along axis 0.

    ``pieces``: (shard file, (lo, hi)) per shard: the shard's dataset ``name`` of shape (S, hi - lo, *row[1:])
    fills columns lo .. hi - 1 of axis 1; with ``None`` instead of (lo, hi) the one piece is the whole row.
    """
    unlimited = h5py.h5s.UNLIMITED
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    rank = 1 + len(row)
    for file, cols in pieces:
        src_row = row if cols is None else (cols[1] - cols[0], *row[1:])
        v = h5py.h5s.create_simple((0, *row), (unlimited, *row))
        start = (0,) * rank if cols is None else (0, cols[0], *(0,) * (rank - 2))
        v.select_hyperslab(start, (unlimited, *(1,) * (rank - 1)), (1,) * rank, (1, *src_row))
        s = h5py.h5s.create_simple((0, *src_row), (unlimited, *src_row))
        s.select_hyperslab((0,) * rank, (unlimited, *(1,) * (rank - 1)), (1,) * rank, (1, *src_row))
        dcpl.set_virtual(v, file.encode(), name.encode(), s)
    dcpl.set_fill_value(np.array(_FILL[dtype.kind], dtype))
    space = h5py.h5s.create_simple((0, *row), (unlimited, *row))
    h5py.h5d.create(f.id, name.encode(), h5py.h5t.py_create(dtype, logical=True), space, dcpl=dcpl)


def _committed(f: h5py.File, files: Sequence[str]) -> None:
    """``/committed`` of a combined store: a VDS of shape (world,), each shard's committed count."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    for r, file in enumerate(files):
        v = h5py.h5s.create_simple((len(files),))
        v.select_hyperslab((r,), (1,))
        dcpl.set_virtual(v, file.encode(), b"committed", h5py.h5s.create_simple((1,)))
    dcpl.set_fill_value(np.array(-1, np.int64))
    h5py.h5d.create(f.id, b"committed", h5py.h5t.STD_I64LE, h5py.h5s.create_simple((len(files),)), dcpl=dcpl)


def write_combined(path: str | os.PathLike, spec: StoreSpec, meta: Mapping[str, object],
                   shards: Sequence[Mapping[str, tuple[int, int]]], world: int) -> None:
    """Write the combined store at ``path`` over the shards ``shard_file(path, r, world)``, r = 0 .. world - 1.

    Args:
        path: the combined store (it is replaced atomically: readers see the old file or the new one).
        spec: the whole run's spec (full probe sets).
        meta: run metadata, stored as in a plain store.
        shards: per rank, probe name -> (lo, hi), its samples; together they cover each probe set in order.
        world: the number of ranks (shards).
    """
    path = Path(path)
    files = [shard_file(path, r, world).name for r in range(world)]
    for p in spec.probes:
        bounds = [s[p.name] for s in shards]
        if bounds[0][0] != 0 or bounds[-1][1] != len(p.index) or any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"The shards of probe set {p.name!r} must cover its {len(p.index)} samples in order. "
                             f"Got {bounds}.")
    tmp = path.with_name(path.name + ".creating")
    with h5py.File(tmp, "w", libver=LIBVER) as f:
        _write_root_attrs(f, spec, meta)
        f.attrs[SHARDS] = _json([{"file": file, "samples": {k: list(v) for k, v in s.items()}}
                                 for file, s in zip(files, shards)])
        f.attrs[ATTRS_DIGEST] = _attrs_digest(f.attrs)
        pieces = {p.name: [(file, tuple(s[p.name])) for file, s in zip(files, shards)] for p in spec.probes}
        for ds in plan(spec):  # each dataset as its row's `shards` says
            how = ds.row.shards
            if how == "own":  # stays in the shards (the reader combines them)
                continue
            g = f if ds.probe is None else f.require_group(f"probes/{ds.probe.name}")
            if how == "counts":
                _committed(f, files)
            elif how == "whole":
                g.create_dataset(ds.key, data=np.asarray(getattr(ds.probe, ds.row.source), ds.dtype))
            else:  # "first": shard 0's (the same in every shard); "split": the shards side by side along the samples
                if "/" in ds.key:
                    g.require_group(ds.key.rsplit("/", 1)[0])
                _virtual(f, ds.path, [(files[0], None)] if how == "first" else pieces[ds.probe.name], ds.shape,
                         np.dtype(ds.dtype))
            for k, v in dataset_attrs(ds, spec).items():
                g[ds.key].attrs[k] = v
    os.replace(tmp, path)


__all__ = ["SHARDS", "read_shards", "shard_file", "shard_spec", "write_combined"]

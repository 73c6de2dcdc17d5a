"""Writing a store: :class:`StoreWriter` creates or resumes one and appends snapshots (the commit protocol)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

from .format import (
    FORMAT,
    LIBVER,
    SCHEMA_VERSION,
    Snapshot,
    StoreError,
    StoreSpec,
    _check_format,
    _describe_mismatch,
    _json,
    _read_spec,
    _spec_to_attrs,
)
from .repair import clear_writer_flag


class _RowWriter:
    """Writes row ``i`` of one snapshot-first dataset through h5py's low-level API.

    ``Dataset.resize`` and ``Dataset.__setitem__`` rebuild selections and look up shape and dtype in Python on
    every call; a snapshot writes some 10-30 rows, and the writer thread holds the GIL while it does, so that
    overhead is taken from training. Here the row shape, dtype and memory space are computed once.
    """

    __slots__ = ("_id", "_row", "_count", "_mspace", "dtype")

    def __init__(self, ds: h5py.Dataset):
        self._id = ds.id
        self._row = tuple(ds.shape[1:])
        self._count = (1, *self._row)
        self._mspace = h5py.h5s.create_simple(self._count)
        self.dtype = ds.dtype

    def resize(self, n: int) -> None:
        """Set the snapshot count of the dataset to ``n``."""
        self._id.set_extent((n, *self._row))

    def write(self, i: int, value: npt.ArrayLike) -> None:
        """Write ``value`` (shape = the row shape) as row ``i``; the dataset must hold at least ``i + 1`` rows."""
        arr = np.ascontiguousarray(value, dtype=self.dtype).reshape(self._count)
        fspace = self._id.get_space()
        fspace.select_hyperslab((i, *(0 for _ in self._row)), self._count)
        self._id.write(self._mspace, fspace, arr)


class StoreWriter:
    """Appends snapshots to a store. Not thread-safe: one writer thread owns it.

    Use :meth:`create` for a new run or :meth:`resume` to continue one; :func:`open_writer` picks.
    """

    def __init__(self, f: h5py.File, path: Path, spec: StoreSpec):
        self._f = f
        self.path = path
        self.spec = spec
        self._committed = f["committed"]
        self._n = int(self._committed[0])
        self._last_step = int(f["step"][self._n - 1]) if self._n else None
        # Dataset handles, looked up once: "step", "epoch", "time" and (probe, key) for key "logits", "pred",
        # "correct", "loss", "acts/<layer>", "conf/<measure>".
        datasets: dict[object, h5py.Dataset] = {name: f[name] for name in ("step", "epoch", "time")}
        for p in spec.probes:
            g = f[f"probes/{p.name}"]
            keys = ["logits", "pred", "correct", "loss"] + [f"acts/{la.name}" for la in spec.layers]
            datasets |= {(p.name, k): g[k] for k in keys + [f"conf/{m}" for m in spec.measures]}
        # Rows beyond the committed count belong to a snapshot that was never committed: cut them away.
        for d in datasets.values():
            if d.shape[0] != self._n:
                d.resize(self._n, axis=0)
        self._writers = {key: _RowWriter(d) for key, d in datasets.items()}
        f.flush()
        f.swmr_mode = True
        # HDF5 drops its own file lock in SWMR mode; this shared lock tells clear_writer_flag we are alive.
        self._lock = open(path, "rb")  # noqa: SIM115 (closed in close())
        fcntl.flock(self._lock.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)

    @classmethod
    def create(cls, path: str | os.PathLike, spec: StoreSpec, meta: Mapping[str, object]) -> StoreWriter:
        """Create a new store at ``path`` (which must not exist).

        Args:
            path: the file to create; its folder is created if needed.
            spec: what the store holds.
            meta: run metadata stored once: ``run_name``, ``seed``, ``config`` (dict), ``versions`` (dict),
                ``model_summary`` (text), ``data`` (text) and anything else JSON can hold.
        """
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists already; resume it or choose another run name.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".creating")
        f = h5py.File(tmp, "w", libver=LIBVER)
        try:
            f.attrs["format"] = FORMAT
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in _spec_to_attrs(spec).items():
                f.attrs[k] = v
            f.attrs["probe_sets"] = _json([p.name for p in spec.probes])
            for k, v in meta.items():
                f.attrs[f"meta_{k}"] = v if isinstance(v, str) else _json(v)
            comp = {"compression": "gzip", "compression_opts": 1} if spec.compression == "gzip" else {}

            def per_snapshot(g: h5py.Group, name: str, row: tuple[int, ...], dtype: str, **kw) -> None:
                g.create_dataset(name, shape=(0, *row), maxshape=(None, *row), chunks=(1, *row), dtype=dtype, **kw)

            f.create_dataset("committed", data=np.zeros(1, np.int64))
            # Scalars per snapshot: chunks of 256 values (one chunk per value would bloat the file).
            for name, dtype in (("step", "int64"), ("epoch", "int64"), ("time", "float64")):
                f.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(256,), dtype=dtype)
            n_classes = spec.n_classes
            for p in spec.probes:
                g = f.create_group(f"probes/{p.name}")
                n = len(p.index)
                g.create_dataset("index", data=np.asarray(p.index, np.int64))
                g.create_dataset("label", data=np.asarray(p.label, np.int64))
                per_snapshot(g, "logits", (n, n_classes), "float32", **comp)
                per_snapshot(g, "pred", (n,), "int64")
                per_snapshot(g, "correct", (n,), "bool")
                per_snapshot(g, "loss", (n,), "float32")
                for la in spec.layers:
                    per_snapshot(g, f"acts/{la.name}", (n, la.n_neurons), spec.act_dtype, **comp)
                    g[f"acts/{la.name}"].attrs["reduction"] = la.reduction
                    g[f"acts/{la.name}"].attrs["output_shape"] = np.asarray(la.output_shape, np.int64)
                for m in spec.measures:
                    per_snapshot(g, f"conf/{m}", (n,), "float32")
            f.flush()
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        f.close()
        # Reopen for writing and switch to SWMR *before* the store gets its name: a reader that opens the store
        # the moment it appears (``topotrace info`` on a starting run) must not hold it while the writer
        # switches to SWMR, which needs the file unlocked. The handle and the lock survive the rename.
        writer = cls(h5py.File(tmp, "r+", libver=LIBVER), tmp, spec)
        try:
            os.replace(tmp, path)  # the store appears complete or not at all
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        writer.path = path
        return writer

    @classmethod
    def resume(cls, path: str | os.PathLike, spec: StoreSpec, from_step: int | None = None) -> StoreWriter:
        """Open an existing store to append more snapshots; refuse it if it was made for another model.

        Args:
            path: the store.
            spec: what the resumed recording will append; must equal the store's.
            from_step: training resumes from a checkpoint taken at this step: committed snapshots at later
                steps describe weights that no longer exist and are cut (``None`` keeps every snapshot).
        """
        path = Path(path)
        clear_writer_flag(path)
        f = h5py.File(path, "r+", libver=LIBVER)
        try:
            _check_format(f, path)
            old = _read_spec(f)
            if old != spec:
                raise StoreError(f"Cannot resume {path}: it was recorded with a different setup. "
                                 + _describe_mismatch(old, spec))
            if from_step is not None:
                n = int(f["committed"][0])
                keep = int(np.searchsorted(f["step"][:n], from_step, side="right"))
                if keep < n:  # uncommit first: a kill from here on leaves the shorter, consistent store
                    f["committed"][0] = keep
                    f.flush()
            return cls(f, path, spec)
        except BaseException:
            f.close()
            raise

    @property
    def n_snapshots(self) -> int:
        """Committed snapshots."""
        return self._n

    @property
    def last_step(self) -> int | None:
        return self._last_step

    def _check(self, snap: Snapshot) -> None:
        if self._last_step is not None and snap.step <= self._last_step:
            raise StoreError(
                f"Steps must increase strictly: step {snap.step} after step {self._last_step} in {self.path}."
            )
        names = sorted(p.name for p in self.spec.probes)
        if sorted(snap.probes) != names:
            raise StoreError(f"Snapshot at step {snap.step} has probe sets {sorted(snap.probes)}; expected {names}.")
        for p in self.spec.probes:
            rec = snap.probes[p.name]
            n = len(p.index)
            expected = {"logits": (n, self.spec.n_classes), "pred": (n,), "correct": (n,), "loss": (n,)}
            expected |= {f"acts/{la.name}": (n, la.n_neurons) for la in self.spec.layers}
            expected |= {f"conf/{m}": (n,) for m in self.spec.measures}
            given = {"logits": rec.logits, "pred": rec.pred, "correct": rec.correct, "loss": rec.loss}
            given |= {f"acts/{k}": v for k, v in rec.acts.items()}
            given |= {f"conf/{k}": v for k, v in rec.conf.items()}
            if sorted(given) != sorted(expected):
                raise StoreError(f"Probe set {p.name!r}, step {snap.step}: got arrays {sorted(given)}, "
                                 f"expected {sorted(expected)}.")
            for k, shape in expected.items():
                if np.shape(given[k]) != shape:
                    raise StoreError(f"Shapes do not match for {p.name}/{k} at step {snap.step} "
                                     f"(existing {shape} vs new {np.shape(given[k])}).")

    def append(self, snap: Snapshot) -> int:
        """Validate, resize, write, flush, commit. Returns the new number of committed snapshots."""
        self._check(snap)
        i = self._n
        rows = self._writers
        for w in rows.values():
            w.resize(i + 1)
        rows["step"].write(i, snap.step)
        rows["epoch"].write(i, snap.epoch)
        rows["time"].write(i, snap.time)
        for name, rec in snap.probes.items():
            rows[name, "logits"].write(i, rec.logits)
            rows[name, "pred"].write(i, rec.pred)
            rows[name, "correct"].write(i, rec.correct)
            rows[name, "loss"].write(i, rec.loss)
            for layer, a in rec.acts.items():
                rows[name, f"acts/{layer}"].write(i, a)
            for m, v in rec.conf.items():
                rows[name, f"conf/{m}"].write(i, v)
        self._f.flush()  # every row of snapshot i reaches the file before the commit below
        self._committed[0] = i + 1
        self._committed.flush()
        self._n = i + 1
        self._last_step = snap.step
        return self._n

    def close(self) -> None:
        """Close the file; committed snapshots stay. Safe to call twice."""
        if self._f.id.valid:
            self._f.close()
        self._lock.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_writer(path: str | os.PathLike, spec: StoreSpec, meta: Mapping[str, object], resume: bool,
                from_step: int | None = None) -> StoreWriter:
    """Create the store, or with ``resume=True`` append to it if it exists (created if it does not).

    ``from_step`` (with ``resume``) cuts committed snapshots after that step, see :meth:`StoreWriter.resume`.
    """
    if resume and Path(path).exists():
        return StoreWriter.resume(path, spec, from_step)
    return StoreWriter.create(path, spec, meta)

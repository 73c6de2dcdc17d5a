"""Reading a store: :class:`Store` sees committed snapshots only, also while a writer is still appending.

A store is checked, not trusted: opening it runs the checks of :mod:`.integrity` and of :meth:`Store._check`,
and a chunk that fails its checksum when read is reported with its probe set, dataset, snapshot and step. Every
failure is one :class:`StoreError` line that starts with the path (docs/store.md, "Damaged stores").
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

from .format import (
    ATTRS_DIGEST,
    DATASETS,
    NONFINITE,
    ROOT,
    TEMPERATURE,
    LayerSpec,
    ProbeSpec,
    StoreError,
    _attrs_digest,
    _check_format,
    _plain,
    _read_spec,
    attr_value,
    dataset_attrs,
    plan,
    present,
)
from .integrity import ADVICE, HDF5_ERRORS, check_file, first_bad_chunk, hdf5_errors, open_swmr, reason_of
from .shards import SHARDS, read_shards, shard_spec

_BLOCK_BYTES = 1 << 26  # until_good reads a dataset in blocks of about this size


class _Handle:
    """One HDF5 file handle per store file and process, and one id per dataset, shared by the Stores of a file.

    Why: HDF5 (2.0.0, as bundled with h5py 3.16) corrupts a dataset that is open through two ids once one of them is
    refreshed (``H5Drefresh``): both then read zeros and report every chunk at offset 0. Two ``Store`` objects on the
    same file in one process (a study and its run, a test comparing stores, threads of one Dask worker) each
    refreshing their own ids would read wrong values. With one id per dataset there is nothing to corrupt; h5py's
    global lock serialises the calls of several threads on it.
    """

    _open: dict[tuple[int, int, int], _Handle] = {}
    _lock = threading.Lock()

    def __init__(self, key: tuple[int, int, int], f: h5py.File):
        self.key, self.file, self.users = key, f, 1
        self._datasets: dict[str, h5py.Dataset] = {}

    @classmethod
    def acquire(cls, path: Path) -> _Handle:
        st = os.stat(path)
        key = (os.getpid(), st.st_dev, st.st_ino)
        with cls._lock:
            h = cls._open.get(key)
            if h is not None and h.file.id.valid:
                h.users += 1
                return h
            h = cls._open[key] = cls(key, open_swmr(path))
            return h

    def dataset(self, name: str) -> h5py.Dataset:
        """The one id of dataset ``name`` in this process (KeyError and HDF5's errors as ``File[name]``)."""
        with self._lock:
            d = self._datasets.get(name)
            if d is None:
                obj = self.file[name]
                if not isinstance(obj, h5py.Dataset):
                    return obj
                d = self._datasets[name] = obj
            return d

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users > 0:
                return
            if self._open.get(self.key) is self:
                del self._open[self.key]
            self._datasets.clear()
            if self.file.id.valid:
                self.file.close()


class _Lookup(dict):
    """Datasets by path, looked up in the file when first asked for (a quick open checks only the first ones)."""

    def __init__(self, h: _Handle, first: tuple[str, ...]):
        super().__init__((k, h.dataset(k)) for k in first)
        self._h = h

    def __missing__(self, key: str) -> h5py.Dataset:
        d = self[key] = self._h.dataset(key)
        return d


class Store:
    """Read access to a store, safe while a writer is still appending.

    Only committed snapshots are visible; call :meth:`refresh` to see snapshots committed since opening.
    Per-snapshot scalars and per-sample vectors are small and returned whole; activations are read one
    snapshot at a time (:meth:`acts`, :meth:`iter_acts`) so memory stays bounded however long the run.

    Args:
        path: the store file.
        until_good: read every committed chunk once at open (it costs one plain read of the store) and make
            only the snapshots before the first damaged one visible; :attr:`damaged_at` says which one that
            is. Without it, a store with a damaged or missing chunk raises a :class:`StoreError` at open (a
            chunk past the end of the file) or when the chunk is read (a checksum mismatch).
        quick: a glance, for listings (``topotrace site``): the file check, the bounded open, the format and spec,
            the committed count against the steps and times, and the steps' order; no check of every dataset's
            shape and chunk extents at open (each chunk read still verifies its checksum).

    Attributes:
        damaged_at: with ``until_good``, the first damaged snapshot (the visible ones are those before it);
            None when every committed snapshot is intact.
        damage: with ``until_good`` and a damaged snapshot: one line naming its dataset, snapshot, step and what
            is wrong (``probe set 'heldout', dataset acts/fc1: snapshot 4 (step 40) is damaged (checksum
            mismatch)``); None otherwise.
        damage_error: the :class:`StoreError` a read of that snapshot raises without ``until_good``.

    Raises:
        FileNotFoundError: no file at ``path``.
        StoreError: the file is not a store, or it is damaged or truncated (one line starting with the path).

    Example:
        with Store("runs/digits/store.h5") as st:
            for s, a in st.iter_acts("heldout", "fc1"):  # a: (n_samples, n_neurons) float32
                ...
    """

    def __init__(self, path: str | os.PathLike, until_good: bool = False, quick: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"No store at {self.path}.")
        self._until_good = bool(until_good)
        self.damaged_at: int | None = None
        self.damage: str | None = None  # with until_good: which chunk of the first damaged snapshot, and how
        self.damage_error: StoreError | None = None  # the error reading that snapshot would raise
        check_file(self.path)
        with hdf5_errors(self.path):
            self._h = _Handle.acquire(self.path)
            self._f = self._h.file
        try:
            with hdf5_errors(self.path):
                self.version = _check_format(self._f, self.path)
                self.spec = _read_spec(self._f, self.path)
                table = read_shards(self._f, self.path)
            self._n = self._steps_checked = 0
            self._shards: list[Store] = []
            if table is not None:
                self._series = {}
                self._open_shards(table, quick)
            else:
                with hdf5_errors(self.path):
                    self._series = self._check() if not quick else _Lookup(self._h, ("step", "time"))
                if quick:
                    self.refresh()
                else:
                    self._open_checks()
        except BaseException:
            self.close()
            raise

    def _open_shards(self, table: list[dict[str, object]], quick: bool) -> None:
        """Open every shard of a combined store as a store (all its checks), check it against the combined spec."""
        for r, entry in enumerate(table):
            path = self.path.with_name(str(entry["file"]))
            if not path.is_file():
                raise StoreError(f"{self.path} is a store sharded across {len(table)} ranks, but its shard {path.name} "
                                 "is missing. Keep the shard files next to the store (copy the whole run folder).")
            self._shards.append(Store(path, until_good=self._until_good, quick=quick))
            try:
                expected = shard_spec(self.spec, {k: (int(v[0]), int(v[1])) for k, v in entry["samples"].items()})
            except (KeyError, TypeError, ValueError, IndexError):
                expected = None
            if expected is None or self._shards[-1].spec != expected:
                raise self._damaged(f"its shard {path.name} does not hold the layers, classes, measures and probe "
                                    f"samples the attribute {SHARDS!r} gives it (shard {r})")
        bad = [s for s in self._shards if s.damaged_at is not None]
        if bad:
            worst = min(bad, key=lambda s: s.damaged_at)
            self.damaged_at = worst.damaged_at
            self.damage = f"shard {worst.path.name}: {worst.damage}"
            self.damage_error = worst.damage_error
        self.refresh()

    @property
    def shards(self) -> tuple[Path, ...]:
        """The shard files of a store recorded with ``Recorder(shard="ddp")``, in rank order; () for a plain store."""
        return tuple(s.path for s in self._shards)

    # checks
    def _damaged(self, reason: str) -> StoreError:
        return StoreError(f"{self.path} is damaged: {reason}. {ADVICE}")

    def _check(self) -> dict[str, h5py.Dataset]:
        """Check what the attributes say against the datasets; returns every per-snapshot dataset by path."""
        f, spec = self._f, self.spec
        stored = f.attrs.get(ATTRS_DIGEST)
        if stored is not None and _plain(stored) != _attrs_digest(f.attrs):
            raise self._damaged(f"its attributes do not match their checksum (attribute {ATTRS_DIGEST!r})")
        n_classes = spec.n_classes
        for p in spec.probes:
            n = len(p.index)
            where = f"probe set {p.name!r}"
            if p.index.ndim != 1 or p.label.shape != (n,):
                raise self._damaged(f"{where} has {n} indices but labels of shape {p.label.shape}")
            if not (np.issubdtype(p.index.dtype, np.integer) and np.issubdtype(p.label.dtype, np.integer)):
                raise self._damaged(f"{where} has indices or labels that are not integers")
            if n and (p.label.min() < 0 or p.label.max() >= n_classes):
                raise self._damaged(f"{where} has labels {p.label.min()}..{p.label.max()} outside 0..{n_classes - 1} "
                                    f"({n_classes} classes in attribute 'class_names')")
        # every per-snapshot dataset of the layout table; a store of an older schema version may lack the newer rows
        expected = [ds for ds in plan(spec) if ds.row.per_snapshot
                    and (ds.row.required_from <= self.version or ds.path in f)]
        c = self._h.dataset("committed") if "committed" in f else None
        if not isinstance(c, h5py.Dataset) or c.shape != (1,) or not np.issubdtype(c.dtype, np.integer):
            raise self._damaged("dataset committed is missing or not one integer")
        series = {}
        for ds in expected:
            name, row = ds.path, ds.shape
            if name not in f:
                raise self._damaged(f"dataset {name} is missing")
            d = self._h.dataset(name)
            if not isinstance(d, h5py.Dataset) or d.ndim != len(row) + 1 or d.shape[1:] != row:
                shape = d.shape if isinstance(d, h5py.Dataset) else "a group"
                raise self._damaged(f"dataset {name} has shape {shape}, expected "
                                    f"({', '.join(['n_snapshots', *map(str, row)])})")
            for attr, want in dataset_attrs(ds, spec).items():
                got = attr_value(d.attrs[attr]) if attr in d.attrs else None
                want = attr_value(want)
                if got != want:
                    raise self._damaged(f"dataset {name} has attribute {attr!r} = {got!r}, expected {want!r}")
            series[name] = d
        return series

    def _committed(self) -> int:
        """The committed count, checked against the length of every per-snapshot dataset."""
        c = self._h.dataset("committed")
        c.refresh()
        n = int(c[0])
        for name, d in self._series.items():
            d.refresh()
            if not 0 <= n <= d.shape[0]:  # the writer resizes every dataset before it advances the count
                raise StoreError(f"{self.path} is damaged: it says {n} snapshots are committed but holds "
                                 f"{d.shape[0]} (dataset {name}). Only a store written by topotrace can be read; "
                                 "restore it from a copy or record the run again.")
        return n

    def _open_checks(self) -> None:
        """Committed count, chunk extents and (with until_good) a read of every chunk; then :meth:`refresh`."""
        with hdf5_errors(self.path):
            n = self._committed()
            size = os.path.getsize(self.path)  # after the count: the chunks of committed snapshots are written
            first: tuple[int, str, str] | None = None  # (snapshot, dataset, what is wrong)
            for name, d in self._series.items():
                bad = first_bad_chunk(d, n if first is None else first[0], size)
                if bad is not None:
                    first = (bad[0], name, bad[1])
        if first is not None and not self._until_good:
            raise self._bad_snapshot(*first)
        if self._until_good:
            limit = n if first is None else first[0]
            for name, d in self._series.items():
                bad_read = self._first_unreadable(d, 0, limit)
                if bad_read is not None:
                    limit = bad_read[0]
                    first = (bad_read[0], name, bad_read[1])
            if limit < n and first is not None:
                self.damaged_at = limit
                self.damage = self._damage_text(*first)
                self.damage_error = self._bad_snapshot(*first)
        self.refresh()

    def _first_unreadable(self, d: h5py.Dataset, start: int, stop: int) -> tuple[int, str] | None:
        """The first snapshot in ``start .. stop - 1`` whose chunk cannot be read, with the reason; or None."""
        rows = d.chunks[0] if d.chunks else max(stop - start, 1)
        row_bytes = d.dtype.itemsize * int(np.prod(d.shape[1:]))
        block = max(1, _BLOCK_BYTES // max(row_bytes * rows, 1)) * rows
        start -= start % rows
        for lo in range(start, stop, block):
            try:
                d[lo : min(lo + block, stop)]
            except HDF5_ERRORS as err:
                for i in range(lo, min(lo + block, stop), rows):  # find the chunk
                    try:
                        d[i : min(i + rows, stop)]
                    except HDF5_ERRORS as chunk_err:
                        return i, reason_of(chunk_err)
                return lo, reason_of(err)
        return None

    def _bad_snapshot(self, i: int, name: str, what: str) -> StoreError:
        text = self._damage_text(i, name, what)
        intact = (f"the first {i} snapshots are intact: open with until_good=True (topotrace --until-good) to use "
                  "them" if i else "nothing before it is usable (--until-good has no snapshot to read); restore the "
                  "store from a copy or record the run again")
        return StoreError(f"{self.path}: {text}; {intact}.")

    def _damage_text(self, i: int, name: str, what: str) -> str:
        """``<where>: snapshot i (step s) is damaged (<reason>)``: which chunk of which snapshot, and how."""
        try:
            step = f"step {int(self._series['step'][i])}"
        except (*HDF5_ERRORS, IndexError):
            step = "step unknown"
        where = (f"probe set {name.split('/')[1]!r}, dataset {'/'.join(name.split('/')[2:])}"
                 if name.startswith("probes/") else f"dataset {name}")
        if what.startswith("lies past"):
            what = f"is truncated: its data {what}"
        elif what == "has no data":
            what = "is missing: its dataset has no data for it"
        elif what.startswith("cannot be found"):
            what = f"is truncated or damaged: its data {what}"
        else:
            what = f"is damaged ({what})"
        return f"{where}: snapshot {i} ({step}) {what}"

    def _read_failure(self, name: str, start: int, stop: int, err: BaseException) -> StoreError:
        d = self._series[name]
        bad = self._first_unreadable(d, start, stop)
        i, reason = bad if bad is not None else (start, reason_of(err))
        return self._bad_snapshot(i, name, reason)

    def _check_steps(self, n: int) -> None:
        """Steps of the snapshots not checked yet increase strictly."""
        k = self._steps_checked = min(self._steps_checked, n)
        if n <= k:
            return
        lo = max(k - 1, 0)
        try:
            s = self._series["step"][lo:n]
        except HDF5_ERRORS as err:
            raise self._read_failure("step", lo, n, err) from err
        bad = np.flatnonzero(np.diff(s) <= 0)
        if bad.size:
            j = lo + int(bad[0]) + 1
            raise self._damaged(f"its steps do not increase strictly (snapshot {j} has step {s[j - lo]} after step "
                                f"{s[j - lo - 1]})")
        self._steps_checked = n

    def refresh(self) -> int:
        """Re-read the committed count; returns the number of committed snapshots (visible ones, see until_good).

        Checks the count against every per-snapshot dataset and the steps of new snapshots; the chunks of
        snapshots committed after opening are not checked for their extent (they are read with their checksum).
        """
        if self._shards:
            self._n = self._refresh_shards()
            return self._n
        with hdf5_errors(self.path):
            n = self._committed()
            if self.damaged_at is not None:
                n = min(n, self.damaged_at)
            self._check_steps(n)
        self._n = n
        return self._n

    def _refresh_shards(self) -> int:
        """The snapshots every shard has committed (the smallest count), after checking their steps agree."""
        n = min(s.refresh() for s in self._shards)
        if n > self._steps_checked:
            first = self._shards[0].steps[:n]
            for s in self._shards[1:]:
                other = s.steps[:n]
                if not np.array_equal(other, first):
                    j = int(np.flatnonzero(other != first)[0])
                    raise self._damaged(f"its shards hold different steps (snapshot {j}: step {first[j]} in "
                                        f"{self._shards[0].path.name}, step {other[j]} in {s.path.name})")
            self._steps_checked = n
        return n

    # metadata
    @property
    def n_snapshots(self) -> int:
        return self._n

    @property
    def layers(self) -> dict[str, LayerSpec]:
        return {la.name: la for la in self.spec.layers}

    @property
    def probes(self) -> dict[str, ProbeSpec]:
        return {p.name: p for p in self.spec.probes}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def measures(self) -> tuple[str, ...]:
        return self.spec.measures

    @property
    def meta(self) -> dict[str, object]:
        """Run metadata given at creation (JSON values decoded; plain text stays text)."""
        out: dict[str, object] = {}
        for k, v in self._f.attrs.items():
            if not k.startswith("meta_"):
                continue
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            out[k[5:]] = v
        return out

    # per-snapshot data
    def _rows(self, path: str) -> np.ndarray:
        if self._shards:  # per-sample rows side by side; the scalars (step, epoch, ...) are every shard's
            parts = [s._rows(path)[: self._n] for s in self._shards]
            return np.concatenate(parts, axis=1) if path.startswith("probes/") else parts[0]
        d = self._series[path]
        with hdf5_errors(self.path):
            d.refresh()
        try:
            return d[: self._n]
        except HDF5_ERRORS as err:
            raise self._read_failure(path, 0, self._n, err) from err

    @property
    def steps(self) -> np.ndarray:
        """Array of shape (n_snapshots,), int64."""
        return self._rows("step")

    @property
    def epochs(self) -> np.ndarray:
        """Array of shape (n_snapshots,), int64."""
        return self._rows("epoch")

    @property
    def times(self) -> np.ndarray:
        """Array of shape (n_snapshots,), float64 Unix seconds of each probe pass."""
        return self._rows("time")

    @property
    def temperature(self) -> np.ndarray | None:
        """Array of shape (n_snapshots,), float64 temperatures of ``temp_prob``; None for a store without it.

        The temperature fitted at each snapshot on the probe set ``"train"`` (NaN where it could not be fitted).
        """
        return self.series(TEMPERATURE)

    def series(self, name: str) -> np.ndarray | None:
        """A per-snapshot dataset of the store's root (a root row of the layout table), by name.

        Returns:
            Array of shape (n_snapshots, *row shape), in the dataset's dtype; None when the store has no such
            dataset (its row's presence rule leaves it out, or the store is of a schema version before it).

        Raises:
            KeyError: ``name`` is not a per-snapshot root dataset of the layout (the message lists them).
        """
        rows = {r.name: r for r in DATASETS if r.group == ROOT and r.per_snapshot}
        if name not in rows:
            raise KeyError(f"Unknown per-snapshot dataset {name!r}. Available: {list(rows)}")
        row, st = rows[name], self._shards[0] if self._shards else self
        if not present(row, self.spec) or (row.required_from > st.version and name not in st._f):
            return None
        return self._rows(name)

    def _probe(self, probe: str) -> str:
        if probe not in self.probes:
            raise KeyError(f"Unknown probe set {probe!r}. Available: {sorted(self.probes)}")
        return f"probes/{probe}"

    def labels(self, probe: str) -> np.ndarray:
        """Array of shape (n_samples,), int64 true classes of the probe set."""
        self._probe(probe)
        return self.probes[probe].label

    def logits(self, probe: str) -> np.ndarray:
        """Array of shape (n_snapshots, n_samples, n_classes), float32."""
        return self._rows(f"{self._probe(probe)}/logits")

    def pred(self, probe: str) -> np.ndarray:
        """Array of shape (n_snapshots, n_samples), int64 predicted classes."""
        return self._rows(f"{self._probe(probe)}/pred")

    def correct(self, probe: str) -> np.ndarray:
        """Array of shape (n_snapshots, n_samples), bool."""
        return self._rows(f"{self._probe(probe)}/correct")

    def loss(self, probe: str) -> np.ndarray:
        """Array of shape (n_snapshots, n_samples), float32 per-sample cross-entropy."""
        return self._rows(f"{self._probe(probe)}/loss")

    def conf(self, probe: str, measure: str) -> np.ndarray:
        """Array of shape (n_snapshots, n_samples), float32 values of one confidence measure."""
        if measure not in self.measures:
            raise KeyError(f"Unknown confidence measure {measure!r}. Available: {list(self.measures)}")
        return self._rows(f"{self._probe(probe)}/conf/{measure}")

    def nonfinite(self, probe: str) -> dict[str, np.ndarray] | None:
        """Counts of non-finite values (NaN, +-inf) the writer found at each snapshot, as stored.

        Returns:
            layer name (and ``"logits"``) -> array of shape (n_snapshots,), int64: the number of non-finite
            values in that snapshot's activations (n_samples x n_neurons values, in the stored dtype: a float16
            store counts float32 values beyond 65504 as infinite) or logits. None for a store written before the
            counts existed.
        """
        name = f"{self._probe(probe)}/{NONFINITE}"
        if self._shards:  # each shard counted its own samples
            parts = [s.nonfinite(probe) for s in self._shards]
            if any(p is None for p in parts):
                return None
            return {k: sum(p[k][: self._n] for p in parts) for k in parts[0]}
        if name not in self._series:
            return None
        rows = self._rows(name)  # (n_snapshots, n_layers + 1)
        return {c: rows[:, j] for j, c in enumerate([la.name for la in self.spec.layers] + ["logits"])}

    def _acts_dataset(self, probe: str, layer: str) -> tuple[str, h5py.Dataset]:
        if layer not in self.layers:
            raise KeyError(f"Unknown layer {layer!r}. Available: {list(self.layers)}")
        name = f"{self._probe(probe)}/acts/{layer}"
        d = self._series[name]
        with hdf5_errors(self.path):
            d.refresh()
        return name, d

    def acts(self, probe: str, layer: str, snapshot: int, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
        """Activations at one snapshot: array of shape (n_samples, n_neurons), of ``dtype``.

        ``snapshot`` is a position in ``0 .. n_snapshots - 1`` (negative counts from the end), not a step.
        ``dtype=None`` returns the stored dtype (float16 by default) without a conversion.
        """
        i = snapshot + self._n if snapshot < 0 else snapshot
        if not 0 <= i < self._n:
            raise IndexError(f"Snapshot {snapshot} out of range: the store has {self._n} committed snapshots.")
        if self._shards:
            return np.concatenate([s.acts(probe, layer, i, dtype) for s in self._shards], axis=0)
        name, d = self._acts_dataset(probe, layer)
        try:
            a = d[i]
        except HDF5_ERRORS as err:
            raise self._read_failure(name, i, i + 1, err) from err
        return a if dtype is None else a.astype(dtype, copy=False)

    def iter_acts(self, probe: str, layer: str, dtype: npt.DTypeLike = np.float32) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(snapshot, acts)`` for every committed snapshot, one chunk in memory at a time (see :meth:`acts`)."""
        if self._shards:
            self._probe(probe)
            for i in range(self._n):
                yield i, self.acts(probe, layer, i, dtype)
            return
        name, d = self._acts_dataset(probe, layer)
        for i in range(self._n):
            try:
                a = d[i]
            except HDF5_ERRORS as err:
                raise self._read_failure(name, i, i + 1, err) from err
            yield i, a if dtype is None else a.astype(dtype, copy=False)

    def nbytes(self, probes: Sequence[str] | None = None) -> int:
        """Bytes of committed activation data (what one plain read of the store moves)."""
        itemsize = np.dtype(self.spec.act_dtype).itemsize
        return sum(self._n * len(self.probes[p].index) * la.n_neurons * itemsize
                   for p in probes or self.probes for la in self.spec.layers)

    def sha256(self) -> str:
        """SHA-256 of the file's bytes (for provenance; of a sharded store, of ``store.h5``, which names its shards)."""
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def close(self) -> None:
        for s in getattr(self, "_shards", ()):
            s.close()
        h, self._h = getattr(self, "_h", None), None
        if h is not None:
            h.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

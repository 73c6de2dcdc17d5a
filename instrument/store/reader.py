"""Reading a store: :class:`Store` sees committed snapshots only, also while a writer is still appending.

A store is checked, not trusted: opening it runs the checks of :mod:`.integrity` and of :meth:`Store._check`,
and a chunk that fails its checksum when read is reported with its probe set, dataset, snapshot and step. Every
failure is one :class:`StoreError` line that starts with the path (docs/store.md, "Damaged stores").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

from .format import (
    ATTRS_DIGEST,
    NONFINITE,
    TEMPERATURE,
    LayerSpec,
    ProbeSpec,
    StoreError,
    _attrs_digest,
    _check_format,
    _plain,
    _read_spec,
    has_temperature,
)
from .integrity import ADVICE, HDF5_ERRORS, check_file, first_bad_chunk, hdf5_errors, open_swmr, reason_of

_BLOCK_BYTES = 1 << 26  # until_good reads a dataset in blocks of about this size


class _Lookup(dict):
    """Datasets by path, looked up in the file when first asked for (a quick open checks only the first ones)."""

    def __init__(self, f: h5py.File, first: tuple[str, ...]):
        super().__init__((k, f[k]) for k in first)
        self._f = f

    def __missing__(self, key: str) -> h5py.Dataset:
        d = self[key] = self._f[key]
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
        check_file(self.path)
        with hdf5_errors(self.path):
            self._f = open_swmr(self.path)
        try:
            with hdf5_errors(self.path):
                _check_format(self._f, self.path)
                self.spec = _read_spec(self._f, self.path)
                self._series = self._check() if not quick else _Lookup(self._f, ("step", "time"))
            self._n = self._steps_checked = 0
            if quick:
                self.refresh()
            else:
                self._open_checks()
        except BaseException:
            self._f.close()
            raise

    # checks
    def _damaged(self, reason: str) -> StoreError:
        return StoreError(f"{self.path} is damaged: {reason}. {ADVICE}")

    def _check(self) -> dict[str, h5py.Dataset]:
        """Check what the attributes say against the datasets; returns every per-snapshot dataset by path."""
        f, spec = self._f, self.spec
        stored = f.attrs.get(ATTRS_DIGEST)
        if stored is not None and _plain(stored) != _attrs_digest(f.attrs):
            raise self._damaged(f"its attributes do not match their checksum (attribute {ATTRS_DIGEST!r})")
        expected: dict[str, tuple[int, ...]] = {"step": (), "epoch": (), "time": ()}
        if has_temperature(spec):
            expected[TEMPERATURE] = ()
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
            g = f"probes/{p.name}"
            expected |= {f"{g}/logits": (n, n_classes), f"{g}/pred": (n,), f"{g}/correct": (n,), f"{g}/loss": (n,)}
            expected |= {f"{g}/acts/{la.name}": (n, la.n_neurons) for la in spec.layers}
            expected |= {f"{g}/conf/{m}": (n,) for m in spec.measures}
            if f"{g}/{NONFINITE}" in f:
                expected[f"{g}/{NONFINITE}"] = (len(spec.layers) + 1,)
                try:
                    columns = json.loads(_plain(f[f"{g}/{NONFINITE}"].attrs.get("columns", "null")))
                except ValueError:
                    columns = "not valid JSON"
                if columns != [la.name for la in spec.layers] + ["logits"]:
                    raise self._damaged(f"dataset {g}/{NONFINITE} has columns {columns}, expected the layers and "
                                        "'logits'")
        c = f.get("committed")
        if not isinstance(c, h5py.Dataset) or c.shape != (1,) or not np.issubdtype(c.dtype, np.integer):
            raise self._damaged("dataset committed is missing or not one integer")
        series = {}
        for name, row in expected.items():
            if name not in f:
                raise self._damaged(f"dataset {name} is missing")
            d = f[name]
            if not isinstance(d, h5py.Dataset) or d.ndim != len(row) + 1 or d.shape[1:] != row:
                shape = d.shape if isinstance(d, h5py.Dataset) else "a group"
                raise self._damaged(f"dataset {name} has shape {shape}, expected "
                                    f"({', '.join(['n_snapshots', *map(str, row)])})")
            series[name] = d
        return series

    def _committed(self) -> int:
        """The committed count, checked against the length of every per-snapshot dataset."""
        c = self._f["committed"]
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
            if limit < n:
                self.damaged_at = limit
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
        intact = (f"the first {i} snapshots are intact: open with until_good=True (topotrace --until-good) to use "
                  "them" if i else "no snapshot before it is left; restore the store from a copy or record the run "
                  "again")
        return StoreError(f"{self.path}: {where}: snapshot {i} ({step}) {what}; {intact}.")

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
        with hdf5_errors(self.path):
            n = self._committed()
            if self.damaged_at is not None:
                n = min(n, self.damaged_at)
            self._check_steps(n)
        self._n = n
        return self._n

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
        if not has_temperature(self.spec):
            return None
        return self._rows(TEMPERATURE)

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
        name, d = self._acts_dataset(probe, layer)
        try:
            a = d[i]
        except HDF5_ERRORS as err:
            raise self._read_failure(name, i, i + 1, err) from err
        return a if dtype is None else a.astype(dtype, copy=False)

    def iter_acts(self, probe: str, layer: str, dtype: npt.DTypeLike = np.float32) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(snapshot, acts)`` for every committed snapshot, one chunk in memory at a time (see :meth:`acts`)."""
        name, d = self._acts_dataset(probe, layer)
        for i in range(self._n):
            try:
                a = d[i]
            except HDF5_ERRORS as err:
                raise self._read_failure(name, i, i + 1, err) from err
            yield i, a if dtype is None else a.astype(dtype, copy=False)

    def nbytes(self, probes: Sequence[str] | None = None) -> int:
        """Bytes of committed activation data (what one plain read of the store moves)."""
        total = 0
        for p in probes or self.probes:
            for la in self.spec.layers:
                d = self._f[f"probes/{p}/acts/{la.name}"]
                total += self._n * int(np.prod(d.shape[1:])) * d.dtype.itemsize
        return total

    def sha256(self) -> str:
        """SHA-256 of the file's bytes (for provenance)."""
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

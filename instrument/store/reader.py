"""Reading a store: :class:`Store` sees committed snapshots only, also while a writer is still appending."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

from .format import LIBVER, LayerSpec, ProbeSpec, StoreError, _check_format, _read_spec


class Store:
    """Read access to a store, safe while a writer is still appending.

    Only committed snapshots are visible; call :meth:`refresh` to see snapshots committed since opening.
    Per-snapshot scalars and per-sample vectors are small and returned whole; activations are read one
    snapshot at a time (:meth:`acts`, :meth:`iter_acts`) so memory stays bounded however long the run.

    Example:
        with Store("runs/digits/store.h5") as st:
            for s, a in st.iter_acts("heldout", "fc1"):  # a: (n_samples, n_neurons) float32
                ...
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"No store at {self.path}.")
        self._f = h5py.File(self.path, "r", libver=LIBVER, swmr=True)
        try:
            _check_format(self._f, self.path)
            self.spec = _read_spec(self._f)
            self.refresh()
        except BaseException:
            self._f.close()
            raise

    def refresh(self) -> int:
        """Re-read the committed count; returns the number of committed snapshots."""
        c = self._f["committed"]
        c.refresh()
        n = int(c[0])  # datasets are refreshed when read (see _rows, _acts_dataset)
        step = self._f["step"]
        step.refresh()
        if not 0 <= n <= step.shape[0]:  # the writer resizes every dataset before it advances the count
            raise StoreError(f"{self.path} is damaged: it says {n} snapshots are committed but holds "
                             f"{step.shape[0]}. Only a store written by topotrace can be read; restore it from a "
                             "copy or record the run again.")
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
        d = self._f[path]
        d.refresh()
        return d[: self._n]

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

    def _acts_dataset(self, probe: str, layer: str) -> h5py.Dataset:
        if layer not in self.layers:
            raise KeyError(f"Unknown layer {layer!r}. Available: {list(self.layers)}")
        d = self._f[f"{self._probe(probe)}/acts/{layer}"]
        d.refresh()
        return d

    def acts(self, probe: str, layer: str, snapshot: int, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
        """Activations at one snapshot: array of shape (n_samples, n_neurons), of ``dtype``.

        ``snapshot`` is a position in ``0 .. n_snapshots - 1`` (negative counts from the end), not a step.
        ``dtype=None`` returns the stored dtype (float16 by default) without a conversion.
        """
        i = snapshot + self._n if snapshot < 0 else snapshot
        if not 0 <= i < self._n:
            raise IndexError(f"Snapshot {snapshot} out of range: the store has {self._n} committed snapshots.")
        a = self._acts_dataset(probe, layer)[i]
        return a if dtype is None else a.astype(dtype, copy=False)

    def iter_acts(self, probe: str, layer: str, dtype: npt.DTypeLike = np.float32) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(snapshot, acts)`` for every committed snapshot, one chunk in memory at a time (see :meth:`acts`)."""
        d = self._acts_dataset(probe, layer)
        for i in range(self._n):
            a = d[i]
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

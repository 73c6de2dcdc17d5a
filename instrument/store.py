"""The on-disk format of a topotrace run: one HDF5 file, owned by this module alone.

Everything that reads or writes a store goes through :class:`StoreWriter` (append snapshots while a model
trains) or :class:`Store` (read a store, also while it is still being written). The layout is documented in
``docs/store.md``; :data:`SCHEMA_VERSION` changes whenever that layout changes.

Commit protocol. The file is written in HDF5's single-writer/multiple-reader (SWMR) mode, with the file
format bounded to HDF5 1.10. Every per-snapshot dataset has the snapshot axis first and one snapshot per
chunk. Appending a snapshot resizes every dataset, writes and flushes its data, and only then advances the
one-element dataset ``/committed`` and flushes it. Readers trust ``/committed`` alone, so a process killed at
any instant leaves a file that opens and holds every committed snapshot intact; rows past ``/committed`` are
ignored by readers and cut away when the run resumes.

No pickle: metadata is stored as HDF5 attributes holding strings, numbers or JSON text.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

FORMAT = "topotrace-store"
SCHEMA_VERSION = 1
LIBVER = ("v110", "v110")  # readable by HDF5 1.10 tools (Debian's h5dump), required for SWMR
REDUCTIONS = ("flatten", "channel_mean", "token_mean")
ACT_DTYPES = ("float16", "float32")
COMPRESSIONS = (None, "gzip")


STORE_FILE = "store.h5"  # a run folder runs/<name>/ holds its store under this name


def resolve_store_path(path: str | os.PathLike) -> Path:
    """A run folder ``runs/<name>`` means ``runs/<name>/store.h5``; a file path is used as given."""
    p = Path(path)
    return p / STORE_FILE if p.is_dir() else p


class StoreError(ValueError):
    """A store does not match what was asked of it (schema, model, probe sets, steps)."""


@dataclass(frozen=True)
class LayerSpec:
    """One recorded layer.

    Attributes:
        name: the module's dotted name from ``model.named_modules()``, used verbatim everywhere.
        n_neurons: values recorded per sample after reduction.
        reduction: ``"flatten"`` (every output unit is a neuron), ``"channel_mean"`` (conv outputs: the
            spatial mean of each channel is one neuron) or ``"token_mean"`` (sequence outputs [T, D]: the mean
            over tokens of each feature is one neuron).
        output_shape: the layer's output shape for one sample, before reduction.
    """

    name: str
    n_neurons: int
    reduction: str
    output_shape: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class ProbeSpec:
    """A fixed probe set, run through the model at every snapshot.

    Attributes:
        name: ``"heldout"`` or ``"train"`` by convention; any name without ``/``.
        index: array of shape (n_samples,), int64, indices of the samples in their source dataset.
        label: array of shape (n_samples,), int64, the samples' true classes.
    """

    name: str
    index: np.ndarray
    label: np.ndarray

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ProbeSpec)
            and self.name == other.name
            and np.array_equal(self.index, other.index)
            and np.array_equal(self.label, other.label)
        )


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds; fixed when the store is created and checked again on resume.

    Attributes:
        layers: the recorded layers, in recording order.
        probes: the probe sets.
        class_names: one name per class; ``len(class_names)`` is the number of logits.
        measures: names of the per-sample confidence measures, e.g. ``("max_prob", "margin")``.
        act_dtype: ``"float16"`` (default) or ``"float32"`` for activations.
        compression: ``None`` (default; see ``make bench``) or ``"gzip"``.
    """

    layers: tuple[LayerSpec, ...]
    probes: tuple[ProbeSpec, ...]
    class_names: tuple[str, ...]
    measures: tuple[str, ...]
    act_dtype: str = "float16"
    compression: str | None = None

    def __post_init__(self) -> None:
        if self.act_dtype not in ACT_DTYPES:
            raise ValueError(f"The 'act_dtype' parameter must be one of {ACT_DTYPES}. Got {self.act_dtype!r} instead.")
        if self.compression not in COMPRESSIONS:
            raise ValueError(
                f"The 'compression' parameter must be one of {COMPRESSIONS}. Got {self.compression!r} instead."
            )
        if not self.layers:
            raise ValueError("A store needs at least one layer.")
        if not self.probes:
            raise ValueError("A store needs at least one probe set.")
        for kind, names in (("layer", [la.name for la in self.layers]), ("probe set", [p.name for p in self.probes]),
                            ("measure", list(self.measures))):
            for name in names:
                if not name or "/" in name or name in (".", ".."):
                    raise ValueError(f"Invalid {kind} name {name!r}: it must be non-empty and contain no '/'.")
            if len(set(names)) != len(names):
                raise ValueError(f"Duplicate {kind} names: {names}")
        for la in self.layers:
            if la.reduction not in REDUCTIONS:
                raise ValueError(f"Layer {la.name!r}: reduction must be one of {REDUCTIONS}. Got {la.reduction!r}.")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass
class ProbeRecord:
    """One probe set's results at one snapshot (n = samples in the probe set, C = classes).

    Attributes:
        acts: layer name -> array of shape (n, n_neurons).
        logits: array of shape (n, C).
        pred: array of shape (n,), predicted class (argmax of the logits).
        correct: array of shape (n,), bool.
        loss: array of shape (n,), per-sample cross-entropy.
        conf: measure name -> array of shape (n,).
    """

    acts: dict[str, np.ndarray]
    logits: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    loss: np.ndarray
    conf: dict[str, np.ndarray]


@dataclass
class Snapshot:
    """Everything recorded at one training step."""

    step: int
    epoch: int
    time: float  # seconds since the Unix epoch when the probe pass ran
    probes: dict[str, ProbeRecord] = field(default_factory=dict)


def _json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _spec_to_attrs(spec: StoreSpec) -> dict[str, str]:
    return {
        "layers": _json([[la.name, la.n_neurons, la.reduction, list(la.output_shape)] for la in spec.layers]),
        "class_names": _json(list(spec.class_names)),
        "measures": _json(list(spec.measures)),
        "act_dtype": spec.act_dtype,
        "compression": spec.compression or "none",
    }


def _read_spec(f: h5py.File) -> StoreSpec:
    a = f.attrs
    layers = tuple(LayerSpec(n, int(k), r, tuple(s)) for n, k, r, s in json.loads(a["layers"]))
    probes = tuple(
        ProbeSpec(name, f[f"probes/{name}/index"][()], f[f"probes/{name}/label"][()])
        for name in json.loads(a["probe_sets"])
    )
    comp = a["compression"]
    return StoreSpec(
        layers=layers,
        probes=probes,
        class_names=tuple(json.loads(a["class_names"])),
        measures=tuple(json.loads(a["measures"])),
        act_dtype=a["act_dtype"],
        compression=None if comp == "none" else comp,
    )


def _check_format(f: h5py.File, path: Path) -> None:
    if f.attrs.get("format") != FORMAT:
        raise StoreError(f"{path} is not a topotrace store (attribute 'format' is {f.attrs.get('format')!r}).")
    version = int(f.attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path} has store schema version {version}; this topotrace reads version {SCHEMA_VERSION}."
        )


def _describe_mismatch(old: StoreSpec, new: StoreSpec) -> str:
    lines = []
    for name in ("class_names", "measures", "act_dtype", "compression"):
        if getattr(old, name) != getattr(new, name):
            lines.append(f"{name}: existing {getattr(old, name)!r} vs new {getattr(new, name)!r}")
    if old.layers != new.layers:
        fmt = lambda ls: [(la.name, la.n_neurons, la.reduction) for la in ls]  # noqa: E731
        lines.append(f"layers: existing {fmt(old.layers)} vs new {fmt(new.layers)}")
    if old.probes != new.probes:
        fmt = lambda ps: [(p.name, len(p.index)) for p in ps]  # noqa: E731
        lines.append(f"probe sets: existing {fmt(old.probes)} vs new {fmt(new.probes)} (or different samples)")
    return "; ".join(lines)


# --- crash recovery ---------------------------------------------------------------------------------------


def _lookup3(data: bytes) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` with initval 0: the checksum HDF5 puts on its superblock."""
    mask = 0xFFFFFFFF

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & mask

    n = len(data)
    a = b = c = (0xDEADBEEF + n) & mask
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & mask
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & mask
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & mask
        a = (a - c) & mask; a ^= rot(c, 4); c = (c + b) & mask  # noqa: E702
        b = (b - a) & mask; b ^= rot(a, 6); a = (a + c) & mask  # noqa: E702
        c = (c - b) & mask; c ^= rot(b, 8); b = (b + a) & mask  # noqa: E702
        a = (a - c) & mask; a ^= rot(c, 16); c = (c + b) & mask  # noqa: E702
        b = (b - a) & mask; b ^= rot(a, 19); a = (a + c) & mask  # noqa: E702
        c = (c - b) & mask; c ^= rot(b, 4); b = (b + a) & mask  # noqa: E702
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = data[i:] + bytes(12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & mask
    b = (b + int.from_bytes(tail[4:8], "little")) & mask
    c = (c + int.from_bytes(tail[8:12], "little")) & mask
    c ^= b; c = (c - rot(b, 14)) & mask  # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & mask  # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & mask  # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & mask  # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & mask  # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & mask  # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & mask  # noqa: E702
    return c


def clear_writer_flag(path: str | os.PathLike) -> bool:
    """Clear the "open for writing" flag a killed writer leaves in the superblock (what ``h5clear -s`` does).

    HDF5 marks a file open for SWMR writing in its superblock; a writer killed before closing leaves the mark,
    and the file then refuses to open for writing (reading works). This clears it only when no live process
    holds the file's lock, so it never touches a store that is really being written.

    Returns:
        True if a flag was cleared, False if there was none.

    Raises:
        StoreError: another process has the file open for writing.
    """
    with open(path, "r+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise StoreError(f"{path} is open for writing by another process.") from err
        try:
            head = bytearray(fh.read(12))
            if head[:8] != b"\x89HDF\r\n\x1a\n" or head[8] not in (2, 3):
                return False
            size_of_offsets = head[9]
            fh.seek(0)
            n = 12 + 4 * size_of_offsets
            block = bytearray(fh.read(n + 4))
            if block[11] == 0:
                return False
            block[11] = 0
            # The superblock's end-of-file address is only brought up to date when the writer closes the file;
            # data committed since then lies beyond it. Extend it to the real end of the file.
            eoa_at = 12 + 2 * size_of_offsets
            eoa = int.from_bytes(block[eoa_at : eoa_at + size_of_offsets], "little")
            size = os.fstat(fh.fileno()).st_size
            block[eoa_at : eoa_at + size_of_offsets] = max(eoa, size).to_bytes(size_of_offsets, "little")
            block[n : n + 4] = _lookup3(bytes(block[:n])).to_bytes(4, "little")
            fh.seek(0)
            fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
            return True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --- writing ----------------------------------------------------------------------------------------------


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
        os.replace(tmp, path)  # the store appears complete or not at all
        return cls(h5py.File(path, "r+", libver=LIBVER), path, spec)

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


# --- reading ----------------------------------------------------------------------------------------------


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
        except BaseException:
            self._f.close()
            raise
        self.refresh()

    def refresh(self) -> int:
        """Re-read the committed count; returns the number of committed snapshots."""
        c = self._f["committed"]
        c.refresh()
        self._n = int(c[0])  # datasets are refreshed when read (see _rows, _acts_dataset)
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

"""Writing a store: :class:`StoreWriter` creates or resumes one and appends snapshots (the commit protocol)."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

from .format import (
    ATTRS_DIGEST,
    DATASETS,
    FORMAT,
    LIBVER,
    NONFINITE,
    PRESENCE,
    PROBE,
    ROOT,
    Planned,
    Snapshot,
    StoreError,
    StoreSpec,
    _attrs_digest,
    _check_format,
    _describe_mismatch,
    _plain,
    _read_spec,
    _write_root_attrs,
    dataset_attrs,
    plan,
    present,
)
from .reader import Store
from .repair import clear_writer_flag, flock, writer_state

# Bits of the exponent field by item size: a float is NaN or infinite exactly when all of them are set.
_EXPONENT = {2: (np.uint16, 0x7C00), 4: (np.uint32, 0x7F800000), 8: (np.uint64, 0x7FF0000000000000)}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _count_nonfinite(arr: np.ndarray, scratch: np.ndarray) -> int:
    """Non-finite values (NaN, +-inf) in the contiguous float array ``arr``.

    Works on the bit pattern (one ``and`` into ``scratch`` and a max): some 10x faster than ``np.isfinite`` on
    float16, whose arithmetic numpy emulates; the exact count is taken only when there is one.
    """
    bits, exp = _EXPONENT[arr.dtype.itemsize]
    masked = scratch[: arr.nbytes].view(bits)
    np.bitwise_and(arr.reshape(-1).view(bits), exp, out=masked)
    if masked.size == 0 or masked.max() != exp:
        return 0
    return int(np.count_nonzero(masked == exp))


def _write_error(path: Path, i: int, step: int, err: BaseException) -> OSError:
    """One-line OSError for a failed write; HDF5's long message is reduced to its errno and reason."""
    text = " ".join(str(err).split())
    m = re.search(r"errno = (\d+), error message = '([^']*)'", text)
    code = int(m.group(1)) if m else getattr(err, "errno", None)
    reason = f"{m.group(2)} (errno {code})" if m else text
    hint = ("; free disk space (or raise the file size limit) and resume the run" if code in _FULL
            else "; the store keeps its committed snapshots and can be resumed")
    out = OSError(f"Writing snapshot {i} (step {step}) to {path} failed: {reason}{hint}.")
    out.errno = code
    return out


def _fsync_folder(folder: Path) -> None:
    """``fsync`` a folder, so a file just created or renamed in it keeps its name after a power cut (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the file's own fsync still holds its data
    finally:
        os.close(fd)


def _close_file(f: h5py.File) -> None:
    """Close ``f`` once, whatever state a failed write left it in; nothing more reaches the disk if a flush fails.

    After a failed write (disk full) HDF5 still holds data it cannot write, and closing flushes it: the close
    fails half way, leaves the file's handle dangling, and the next use of that handle (a second close, h5py's
    garbage collection, HDF5's own clean-up at exit) crashes the process. So when a flush fails, HDF5's file
    descriptor is pointed at the null device first: the close then succeeds, and the file keeps exactly what
    the last successful flush left, like a writer killed at that moment (committed snapshots intact; the
    "open for writing" flag stays, and resume clears it).
    """
    if not f.id.valid:
        return
    try:
        f.flush()
    except Exception:  # noqa: BLE001 - any failed flush: detach the file before closing
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, f.id.get_vfd_handle())  # the default (sec2) driver's handle is its file descriptor
        finally:
            os.close(null)
        f.flush()  # succeeds now (into the null device), which leaves HDF5's caches clean for the close
    f.close()


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

    def write(self, i: int, value: npt.ArrayLike) -> np.ndarray:
        """Write ``value`` (shape = the row shape) as row ``i``; the dataset must hold at least ``i + 1`` rows.

        Returns the array written: ``value`` in the dataset's dtype, contiguous, of shape (1, *row shape).
        """
        arr = np.ascontiguousarray(value, dtype=self.dtype).reshape(self._count)
        fspace = self._id.get_space()
        fspace.select_hyperslab((i, *(0 for _ in self._row)), self._count)
        self._id.write(self._mspace, fspace, arr)
        return arr


def is_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a topotrace store, never opening anything but a regular file.

    A store is a regular file (not a link, FIFO or folder) that :class:`Store` opens, or, when it is damaged (a
    crashed run), whose ``format`` attribute HDF5 still reads as a store's. A FIFO is never opened, so it never
    blocks.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with Store(path):
            return True
    except (OSError, ValueError, KeyError, RuntimeError, TypeError):  # StoreError is a ValueError
        pass
    try:
        with h5py.File(path, "r", swmr=True, libver=LIBVER) as f:
            return f.attrs.get("format") == FORMAT
    except (OSError, ValueError, KeyError, RuntimeError, TypeError):
        return False


def check_replaceable(path: str | os.PathLike, option: str = "overwrite=True") -> None:
    """What ``option`` may replace: only a topotrace store (:func:`is_store`) that no process records into.

    The rule of ``Recorder(..., overwrite=True)``; ``topotrace train --overwrite`` applies it to a run folder's
    ``store.h5``.

    Raises:
        FileExistsError: ``path`` is a link, a folder, a FIFO or any file that is not a topotrace store.
        BlockingIOError: a live writer records into it (it holds the store's lock).
    """
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        what = "a link" if path.is_symlink() else "a folder" if path.is_dir() else "not a regular file"
        raise FileExistsError(f"{path} exists and is {what}; {option} only replaces a topotrace store. Choose "
                              "another path.")
    if writer_state(path) == "live":
        raise BlockingIOError(f"{path} is being recorded by a running process (the store is locked); {option} never "
                              "replaces it. Wait for it to finish or stop it, then try again.")
    if not is_store(path):
        raise FileExistsError(f"{path} exists and is not a topotrace store; {option} only replaces a store that "
                              "topotrace wrote. Choose another path, or remove the file yourself if you mean to.")


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
        self._first_step = int(f["step"][0]) if self._n else None
        # The per-snapshot datasets of the layout table, looked up once. A store of an older schema version may
        # lack the rows that are newer than it (e.g. NONFINITE in a store written before the counts existed):
        # resumed, it stays without them.
        version = int(_plain(f.attrs["schema_version"]))
        self._planned: list[Planned] = [ds for ds in plan(spec) if ds.row.per_snapshot
                                        and (ds.row.required_from <= version or ds.path in f)]
        # Opened in table order, but each probe set's conf/{measure} rows after its other rows: HDF5 places the
        # chunks of a flush in the order the datasets were opened, and this keeps the order of the writer before
        # the table, so a store is written byte for byte as that writer wrote it.
        probes = [p.name for p in spec.probes]
        opened = sorted(self._planned, key=lambda ds: (-1 if ds.probe is None else probes.index(ds.probe.name),
                                                       ds.row.name == "conf/{measure}"))
        datasets = {ds.path: f[ds.path] for ds in opened}
        # What a snapshot must give (the rows with a source; the checks of _check): root values, and per probe set
        # the arrays by key with their shapes.
        sourced = [row for row in DATASETS if row.per_snapshot and row.source is not None]
        self._root_sourced = [row for row in sourced if row.group == ROOT]
        self._probe_sourced = [row for row in sourced if row.group == PROBE]
        self._expected = {p.name: {ds.key: ds.shape for ds in plan(spec) if ds.probe is not None
                                   and ds.probe.name == p.name and ds.row.per_snapshot and ds.row.source is not None}
                          for p in spec.probes}
        # Rows beyond the committed count belong to a snapshot that was never committed: cut them away.
        for d in datasets.values():
            if d.shape[0] != self._n:
                d.resize(self._n, axis=0)
        self._writers = {path: _RowWriter(d) for path, d in datasets.items()}
        # scratch for counting non-finite values: as many bytes as the largest activation or logits row
        self._scratch = np.empty(max(d.dtype.itemsize * int(np.prod(d.shape[1:])) for d in datasets.values()),
                                 np.uint8)
        self._failed: BaseException | None = None  # the write failure that stopped this writer
        self._closed = False
        f.flush()
        f.swmr_mode = True
        # HDF5 drops its own file lock in SWMR mode; this shared lock tells clear_writer_flag we are alive.
        self._lock = open(path, "rb")  # noqa: SIM115 (closed in close())
        if not flock(self._lock.fileno(), fcntl.LOCK_SH, wait_s=2.0):
            self._lock.close()
            raise StoreError(f"{path} is locked by another process; wait for it to finish or stop it.")

    @classmethod
    def create(cls, path: str | os.PathLike, spec: StoreSpec, meta: Mapping[str, object],
               replace: bool = False) -> StoreWriter:
        """Create a new store at ``path`` (which must not exist unless ``replace``).

        Args:
            path: the file to create; its folder is created if needed.
            spec: what the store holds.
            meta: run metadata stored once: ``run_name``, ``seed``, ``config`` (dict), ``versions`` (dict),
                ``model_summary`` (text), ``data`` (text) and anything else JSON can hold.
            replace: an existing ``path`` is replaced when the new store is complete (one rename), and only
                when it is a topotrace store that no process records (:func:`check_replaceable`, checked before
                and again right before the rename).

        Raises:
            FileExistsError: ``path`` exists and ``replace`` is False, or it is not a topotrace store.
            BlockingIOError: with ``replace``, a running process records into ``path``.
        """
        path = Path(path)
        if os.path.lexists(path):
            if not replace:
                raise FileExistsError(f"{path} exists already. Pass resume=True to continue recording into it, "
                                      "overwrite=True to replace it (only a topotrace store that no process records), "
                                      "or choose another path.")
            check_replaceable(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".creating")
        # The structure is built in memory and written out in one plain write: HDF5 cannot recover from a
        # flush that fails before SWMR mode (a full disk then leaves it unable to close the file), Python can.
        image = io.BytesIO()
        f = h5py.File(image, "w", libver=LIBVER)
        try:
            _write_root_attrs(f, spec, meta)
            comp = {"compression": "gzip", "compression_opts": 1} if spec.compression == "gzip" else {}
            for ds in plan(spec):
                g = f if ds.probe is None else f.require_group(f"probes/{ds.probe.name}")
                row = ds.shape
                if ds.row.per_snapshot:  # one snapshot per chunk, written once; Fletcher-32 checks it on every read
                    g.create_dataset(ds.key, shape=(0, *row), maxshape=(None, *row), chunks=(1, *row), dtype=ds.dtype,
                                     fletcher32=True, **(comp if ds.row.compressed else {}))
                else:
                    data = (np.zeros(row, ds.dtype) if ds.row.source is None
                            else np.asarray(getattr(ds.probe, ds.row.source), ds.dtype))
                    checked = {"chunks": row, "fletcher32": True} if ds.row.checksum and data.size else {}
                    g.create_dataset(ds.key, data=data, **checked)
                for k, v in dataset_attrs(ds, spec).items():
                    g[ds.key].attrs[k] = v
            f.attrs[ATTRS_DIGEST] = _attrs_digest(f.attrs)  # last: every other root attribute is written
        finally:
            f.close()
        try:
            with open(tmp, "wb") as fh:
                fh.write(image.getbuffer())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # Reopen for writing and switch to SWMR *before* the store gets its name: a reader that opens the store
        # the moment it appears (``topotrace info`` on a starting run) must not hold it while the writer
        # switches to SWMR, which needs the file unlocked. The handle and the lock survive the rename.
        f = h5py.File(tmp, "r+", libver=LIBVER)
        try:
            writer = cls(f, tmp, spec)
        except BaseException:
            _close_file(f)
            tmp.unlink(missing_ok=True)
            raise
        try:
            if replace and os.path.lexists(path):
                check_replaceable(path)  # again: a writer may have started on it while this one was built
            os.replace(tmp, path)  # the store appears complete or not at all
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        writer.path = path
        _fsync_folder(path.parent)  # the new name survives a power cut too
        return writer

    @classmethod
    def resume(cls, path: str | os.PathLike, spec: StoreSpec, from_step: int | None = None) -> StoreWriter:
        """Open an existing store to append more snapshots; refuse it if it was made for another model.

        Args:
            path: the store.
            spec: what the resumed recording will append; must equal the store's.
            from_step: training resumes from a checkpoint taken at this step: committed snapshots at later
                steps describe weights that no longer exist and are cut (``None`` keeps every snapshot).

        Raises:
            StoreError: the store is damaged (checked as :class:`Store` checks it, before anything is written),
                or it was recorded with a different setup, or another process is writing it.
        """
        path = Path(path)
        Store(path).close()  # refuse a damaged store (StoreError) before anything is written to it
        clear_writer_flag(path)
        f = h5py.File(path, "r+", libver=LIBVER)
        try:
            _check_format(f, path)
            old = _read_spec(f, path)
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
            _close_file(f)
            raise

    @property
    def n_snapshots(self) -> int:
        """Committed snapshots."""
        return self._n

    @property
    def last_step(self) -> int | None:
        return self._last_step

    @property
    def first_step(self) -> int | None:
        """The step of the first committed snapshot (``None`` while there is none)."""
        return self._first_step

    def _check(self, snap: Snapshot) -> None:
        if self._last_step is not None and snap.step <= self._last_step:
            raise StoreError(
                f"Steps must increase strictly: step {snap.step} after step {self._last_step} in {self.path}."
            )
        for row in self._root_sourced:  # a value is given exactly when the store records it (PRESENCE)
            given, holds = getattr(snap, row.source) is not None, present(row, self.spec)
            if given != holds:
                raise StoreError(f"Snapshot at step {snap.step} {'gives' if given else 'does not give'} a {row.name}, "
                                 f"but {self.path} {'records' if holds else 'does not record'} one "
                                 f"({PRESENCE[row.when][1]}).")
        names = sorted(p.name for p in self.spec.probes)
        if sorted(snap.probes) != names:
            raise StoreError(f"Snapshot at step {snap.step} has probe sets {sorted(snap.probes)}; expected {names}.")
        for p in self.spec.probes:
            rec = snap.probes[p.name]
            expected = self._expected[p.name]
            given: dict[str, object] = {}
            for row in self._probe_sourced:
                value = getattr(rec, row.source)
                if "{" in row.name:  # a dict by layer or measure
                    given |= {row.name.format(layer=k, measure=k): v for k, v in value.items()}
                else:
                    given[row.name] = value
            if sorted(given) != sorted(expected):
                raise StoreError(f"Probe set {p.name!r}, step {snap.step}: got arrays {sorted(given)}, "
                                 f"expected {sorted(expected)}.")
            for k, shape in expected.items():
                if np.shape(given[k]) != shape:
                    raise StoreError(f"Shapes do not match for {p.name}/{k} at step {snap.step} "
                                     f"(existing {shape} vs new {np.shape(given[k])}).")

    def _made(self, ds: Planned, written: Mapping[str, np.ndarray]) -> np.ndarray:
        """The value of a row the writer makes itself (no source), from the arrays just written (path -> row)."""
        if ds.row.name == NONFINITE:  # counted on the stored values (a float16 cast can overflow)
            g = f"probes/{ds.probe.name}"
            counts = [_count_nonfinite(written[f"{g}/acts/{la.name}"], self._scratch) for la in self.spec.layers]
            return np.array([*counts, _count_nonfinite(written[f"{g}/logits"], self._scratch)], np.int64)
        raise KeyError(f"The writer does not make dataset {ds.row.name!r} (give the row of DATASETS a source).")

    def append(self, snap: Snapshot) -> int:
        """Validate, resize, write, flush, commit. Returns the new number of committed snapshots.

        Raises:
            StoreError: the snapshot does not fit the store (nothing is written).
            OSError: writing failed (disk full, file size limit, I/O error): a one-line message with the errno.
                The writer is then stopped; the file keeps its committed snapshots; :meth:`close` it and
                :meth:`resume` once the cause is fixed.
        """
        if self._failed is not None:
            raise OSError(f"The writer of {self.path} stopped after a failed write; resume the run to append.")
        if self._closed:
            raise ValueError(f"The writer of {self.path} is closed.")
        self._check(snap)
        i = self._n
        rows = self._writers
        try:
            for w in rows.values():
                w.resize(i + 1)
            written: dict[str, np.ndarray] = {}  # path -> the row as written
            for ds in self._planned:  # table order: a row the writer makes comes after the rows it is made from
                if ds.row.source is None:
                    value = self._made(ds, written)
                else:
                    value = getattr(snap if ds.probe is None else snap.probes[ds.probe.name], ds.row.source)
                written[ds.path] = rows[ds.path].write(i, value if ds.item is None else value[ds.item])
            self._f.flush()  # every row of snapshot i reaches the file before the commit below
            self._committed[0] = i + 1
            self._committed.flush()
        except (OSError, RuntimeError) as err:  # h5py's errors for failed I/O; the arguments were checked above
            self._failed = err
            raise _write_error(self.path, i, snap.step, err) from err
        self._n = i + 1
        self._last_step = snap.step
        if i == 0:
            self._first_step = snap.step
        return self._n

    def sync(self) -> None:
        """Flush HDF5's buffers and ``fsync`` the file: every committed snapshot survives a power cut from here on.

        A flush puts the data in the operating system's cache, which a kill of the process cannot lose but a power
        cut or a crash of the machine can; ``fsync`` waits until the disk has it. Called by the recorder at every
        per-epoch checkpoint (``Recorder.sync``) and at :meth:`close`.

        Raises:
            OSError: the flush or the fsync failed (e.g. an I/O error); the writer is stopped then, as after a
                failed write.
        """
        if self._failed is not None or self._closed:
            return
        try:
            self._f.flush()
            os.fsync(self._f.id.get_vfd_handle())  # the default (sec2) driver's handle is the file descriptor
        except (OSError, RuntimeError) as err:
            self._failed = err
            raise OSError(f"Syncing {self.path} to disk failed: {' '.join(str(err).split())}; the store keeps its "
                          "committed snapshots up to the last successful sync.") from err

    def close(self) -> None:
        """Sync (flush and ``fsync``) and close the file; committed snapshots stay.

        Safe to call twice, and after a failed write. A file whose last flush failed (disk full) is closed without
        writing anything more to it (see :func:`_close_file`), and without a sync.
        """
        if self._closed:
            return
        try:
            self.sync()
        except OSError:
            pass  # closed below without writing more (the failure is kept in self._failed)
        self._closed = True
        try:
            _close_file(self._f)
        finally:
            self._lock.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_writer(path: str | os.PathLike, spec: StoreSpec, meta: Mapping[str, object], resume: bool,
                from_step: int | None = None, replace: bool = False) -> StoreWriter:
    """Create the store, or with ``resume=True`` append to it if it exists (created if it does not).

    ``from_step`` (with ``resume``) cuts committed snapshots after that step, see :meth:`StoreWriter.resume`.
    ``replace`` (not with ``resume``): a topotrace store at ``path`` that no process records is replaced.
    """
    if resume and Path(path).exists():
        return StoreWriter.resume(path, spec, from_step)
    return StoreWriter.create(path, spec, meta, replace=replace)

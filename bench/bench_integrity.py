"""What the store's integrity costs: Fletcher-32 per chunk, non-finite counts, and the checks at open.

Each figure is a ratio against the same work without the protection, measured in the same run:

1. Training wall time of the recording benchmark's default-like run (``bench_record.bench_training``: digits-size
   MLP, 1290 steps, 60 snapshots of two 400-sample probe sets), recorded into stores with checksums and counts
   / into stores without them.
2. Writer throughput (``bench_record.bench_writer``: float16 activations appended through ``StoreWriter``), with
   / without.
3. Reading every activation of a store (Fletcher-32 verified on every chunk) / the same store written without
   checksums.
4. Opening a store with every check (file check, bounded SWMR open, structure, chunk extents) / a plain h5py
   SWMR open of the same file.

"Without" is the same ``StoreWriter`` with HDF5's Fletcher-32 filter left off its datasets and the non-finite
count skipped (both patched in for the baseline only).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from topotrace.instrument.store import Store
from topotrace.instrument.store import writer as writer_mod
from topotrace.instrument.synthetic import write_synthetic_store

from .bench_record import bench_training, bench_writer

REPEATS = 5


@contextlib.contextmanager
def unchecked():
    """Stores created inside the block carry no Fletcher-32 filter, and the writer counts no non-finite values."""
    real_create, real_count = h5py.Group.create_dataset, writer_mod._count_nonfinite

    def create(self, name, *args, **kw):
        kw.pop("fletcher32", None)
        return real_create(self, name, *args, **kw)

    h5py.Group.create_dataset = create
    writer_mod._count_nonfinite = lambda arr, scratch: 0
    try:
        yield
    finally:
        h5py.Group.create_dataset, writer_mod._count_nonfinite = real_create, real_count


def _median(fn) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _read_all(path: Path) -> None:
    with Store(path) as st:
        for p in st.probes:
            for layer in st.layers:
                for _ in st.iter_acts(p, layer, dtype=None):
                    pass


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        train, train_plain, write, write_plain = [], [], [], []
        for r in range(2):  # alternate, so that drift of the machine falls on both sides
            for k in "abcd":
                (tmp / f"{k}{r}").mkdir()
            train.append(bench_training(tmp / f"a{r}")["ours"])
            write.append(bench_writer(tmp / f"b{r}")["ours"])
            with unchecked():
                train_plain.append(bench_training(tmp / f"c{r}")["ours"])
                write_plain.append(bench_writer(tmp / f"d{r}")["ours"])
        sizes = dict(n_snapshots=40, layer_sizes=(512, 512, 256), per_class=50)
        checked = write_synthetic_store(tmp / "checked.h5", **sizes)
        with unchecked():
            plain = write_synthetic_store(tmp / "plain.h5", **sizes)
        read, read_plain = _median(lambda: _read_all(checked)), _median(lambda: _read_all(plain))

        def open_plain():
            h5py.File(checked, "r", libver=("v110", "v110"), swmr=True).close()

        def open_checked():
            Store(checked).close()

        n_chunks = sum(1 for _ in _chunks(checked))
        opened, opened_plain = _median(open_checked), _median(open_plain)
    t, tp = statistics.median(train), statistics.median(train_plain)
    w, wp = statistics.median(write), statistics.median(write_plain)
    rows = [
        ("training wall time, recorded with checksums and counts / without", f"{t:.2f} s / {tp:.2f} s", t / tp),
        ("writer throughput, with / without", f"{w / 1e6:.0f} MB/s / {wp / 1e6:.0f} MB/s", w / wp),
        ("reading every activation (Fletcher-32 verified) / without checksums",
         f"{read * 1e3:.0f} ms / {read_plain * 1e3:.0f} ms", read / read_plain),
        (f"opening with every check ({n_chunks} chunks) / plain h5py SWMR open",
         f"{opened * 1e3:.1f} ms / {opened_plain * 1e3:.1f} ms", opened / opened_plain),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'times':>24}  ratio")
    for name, detail, ratio in rows:
        print(f"{name:<{width}}  {detail:>24}  {ratio:5.2f}")


def _chunks(path: Path):
    with h5py.File(path, "r") as f:
        found = []
        f.visititems(lambda name, obj: found.append(obj.id.get_num_chunks())
                     if isinstance(obj, h5py.Dataset) and obj.chunks else None)
    yield from range(int(np.sum(found)))


if __name__ == "__main__":
    main()

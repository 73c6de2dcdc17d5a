"""The report site's index over many runs, against opening the same stores' attributes (same run).

1. Building ``index.html`` over 200 synthetic runs (``topotrace.site.write_site``: every store opened with its
   checks, its attributes, steps and last outcomes read, the page rendered) / opening the 200 stores with plain
   h5py and reading their attributes. Target: < 2.
2. The same / plain h5py reading exactly what the index shows (attributes, committed count, steps, times, the
   last snapshot's correct and loss of both probe sets), without topotrace's checks.
3. The page's size against the budget of 1 MB + 5 kB per run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import h5py

from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.site import write_site

N_RUNS = 200
REPEATS = 5


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "runs"
        stores = []
        for k in range(N_RUNS):
            stores.append(write_synthetic_store(root / f"run-{k:03d}" / "store.h5", n_snapshots=20,
                                                layer_sizes=(64, 32), per_class=20, seed=k,
                                                meta={"run_name": f"run-{k:03d}", "model_summary": "MLP(...)\n"
                                                      "parameters: 12345"}))

        def attrs_only():
            for p in stores:
                with h5py.File(p, "r", libver=("v110", "v110"), swmr=True) as f:
                    dict(f.attrs)

        def what_is_shown():
            for p in stores:
                with h5py.File(p, "r", libver=("v110", "v110"), swmr=True) as f:
                    dict(f.attrs)
                    n = int(f["committed"][0])
                    f["step"][:n], f["time"][:n]
                    for probe in ("train", "heldout"):
                        f[f"probes/{probe}/correct"][n - 1], f[f"probes/{probe}/loss"][n - 1]

        def index():
            write_site(root)

        index()  # warm: imports and the file cache, for both sides
        attrs_only()
        base, shown, ours = [], [], []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            attrs_only()
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            what_is_shown()
            shown.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            index()
            ours.append(time.perf_counter() - t0)
        size = (root / "index.html").stat().st_size
    b, o, w = statistics.median(base), statistics.median(ours), statistics.median(shown)
    budget = 1e6 + 5e3 * N_RUNS
    print(f"index over {N_RUNS} runs / opening their attributes: {o:.2f} s / {b:.2f} s = {o / b:.2f} (target < 2)")
    print(f"index over {N_RUNS} runs / plain h5py reading what it shows: {o:.2f} s / {w:.2f} s = {o / w:.2f}")
    print(f"page size: {size / 1e3:.0f} kB = {size / N_RUNS / 1e3:.1f} kB per run; budget 1 MB + 5 kB per run = "
          f"{budget / 1e3:.0f} kB: {size / budget:.2f} of it")


if __name__ == "__main__":
    main()

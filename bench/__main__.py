"""``make bench``: run every ``bench/bench_*.py`` (or the ones named on the command line) in order.

Each module is found by its name (``bench_live``: ``topotrace watch`` beside the default run, a few minutes;
``TOPOTRACE_BENCH_LIVE_EPOCHS=3 python -m bench bench_live`` for a quick check).
"""

import importlib
import pkgutil
import sys
import time

import bench

names = sys.argv[1:] or sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
for name in names:
    t0 = time.perf_counter()
    print(f"\n=== {name} ===", flush=True)
    importlib.import_module(f"bench.{name}").main()
    print(f"({name} took {time.perf_counter() - t0:.0f} s)", flush=True)

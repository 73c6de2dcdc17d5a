"""``make bench``: run every ``bench/bench_*.py`` (or the ones named on the command line) in order."""

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

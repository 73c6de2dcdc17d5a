"""Bit-identity of two analysis files: every group, dataset (dtype, shape, bytes) and attribute equal.

    python -m bench.identity A.h5 B.h5        # exit 0 when identical, else one line per difference

Timings are not compared: an attribute named ``seconds`` and the ``seconds`` key of a JSON attribute. Used before
and after a refactor of the analysis: the same store analysed by the old and the new code must give
the same ``analysis.h5``, to the bit.
"""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np

TIMINGS = "seconds"  # wall-clock durations: an attribute of this name, or this key of a JSON attribute


def _value(v: object) -> bytes:
    if isinstance(v, str) and v.startswith("{"):
        try:
            d = json.loads(v)
        except ValueError:
            return v.encode()
        d.pop(TIMINGS, None)
        return json.dumps(d, sort_keys=True).encode()
    a = np.asarray(v)
    return a.tobytes() + str(a.dtype).encode()


def _attrs(obj: h5py.HLObject) -> dict[str, bytes]:
    return {k: _value(v) for k, v in obj.attrs.items() if k != TIMINGS}


def differences(a_path: str, b_path: str) -> list[str]:
    """Every difference between the two files' trees, as lines (empty when identical)."""
    out: list[str] = []
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        def walk(name: str, ga: h5py.Group, gb: h5py.Group) -> None:
            if _attrs(ga) != _attrs(gb):
                keys = sorted(set(ga.attrs) | set(gb.attrs))
                bad = [k for k in keys if _attrs(ga).get(k) != _attrs(gb).get(k)]
                out.append(f"{name or '/'}: attributes differ: {bad}")
            for key in sorted(set(ga) | set(gb)):
                path = f"{name}/{key}"
                if key not in ga or key not in gb:
                    out.append(f"{path}: only in {'B' if key not in ga else 'A'}")
                    continue
                x, y = ga[key], gb[key]
                if isinstance(x, h5py.Group) != isinstance(y, h5py.Group):
                    out.append(f"{path}: group in one, dataset in the other")
                elif isinstance(x, h5py.Group):
                    walk(path, x, y)
                else:
                    if x.dtype != y.dtype or x.shape != y.shape:
                        out.append(f"{path}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
                    elif np.asarray(x[()]).tobytes() != np.asarray(y[()]).tobytes():
                        out.append(f"{path}: values differ")
                    if _attrs(x) != _attrs(y):
                        out.append(f"{path}: attributes differ")
        walk("", a, b)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.identity A.h5 B.h5", file=sys.stderr)
        return 2
    diff = differences(*argv)
    for line in diff:
        print(line)
    print("identical" if not diff else f"{len(diff)} differences")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Probe passes sharded across DDP ranks (issue 11): rank 0's time in ``Recorder.step`` at a snapshot.

Two torchrun runs of 2 gloo ranks on the CPU (one thread each), the same training and schedule (12 snapshots of a
784-512-512-10 MLP, probe sets of 4096 held-out and 1024 train samples, two layers recorded, batches of 256):
**rank0** records the whole probe sets on rank 0 while rank 1 waits at the next all-reduce; **shard** has every rank
record its share (``Recorder(shard="ddp")``: half the batches each, rank 0's buffers broadcast for the pass, the
train logits gathered for the temperature). Ratio: median shard / median rank0, measured in the same run (target
<= 0.6). Also the store bytes each rank writes per snapshot.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from .launch import torchrun

CHILD = Path(__file__).with_name("_ddp_probe_child.py")


def run(out: Path, mode: str) -> list[list[float]]:
    out.mkdir()
    done = torchrun(CHILD, str(out), mode, timeout=600)
    if done.returncode:
        raise RuntimeError(f"torchrun ({mode}) exited {done.returncode}: {done.stderr[-2000:]}")
    return [json.loads((out / f"times_rank{r}.json").read_text()) for r in (0, 1)]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for rnd in range(2):  # alternate, so that both modes see the same machine load
            for mode in ("rank0", "shard"):
                times = run(Path(tmp) / f"{mode}{rnd}", mode)
                rows.setdefault(mode, []).extend(times[0][1:])  # the first pass warms up
                if rnd == 0:
                    sizes = sorted((p.name, p.stat().st_size) for p in (Path(tmp) / f"{mode}{rnd}").glob("*.h5"))
                    rows[f"{mode}_files"] = sizes
        med = {m: statistics.median(rows[m]) for m in ("rank0", "shard")}
        print(f"{'mode':<8}{'rank 0 ms per snapshot (median)':>34}{'passes':>8}")
        for m in ("rank0", "shard"):
            print(f"{m:<8}{med[m] * 1e3:>34.1f}{len(rows[m]):>8}")
        print(f"ratio shard / rank0 on rank 0: {med['shard'] / med['rank0']:.2f} (target <= 0.6)")
        for m in ("rank0", "shard"):
            print(f"files ({m}): " + ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in rows[f"{m}_files"]))


if __name__ == "__main__":
    main()

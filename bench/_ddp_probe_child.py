"""Probe-pass timing under DDP for bench/bench_ddp.py; started by torchrun with 2 ranks (gloo, CPU).

Usage: torchrun --nproc_per_node=2 bench/_ddp_probe_child.py OUT_DIR MODE
MODE: ``rank0`` (rank 0 records the whole probe sets) or ``shard`` (every rank its share, ``shard="ddp"``). Each
rank writes its wall-clock seconds in ``Recorder.step`` at every recorded step to OUT_DIR/times_rank<r>.json.
"""

import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every

out_dir, mode = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
ddp = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
g = torch.Generator().manual_seed(100 + rank)
pg = torch.Generator().manual_seed(7)  # the same probe sets on every rank
probes = [ProbeSet("heldout", torch.randn(4096, 784, generator=pg), torch.arange(4096) % 10),
          ProbeSet("train", torch.randn(1024, 784, generator=pg), torch.arange(1024) % 10)]
rec = None
if mode == "shard" or rank == 0:
    rec = Recorder(ddp, os.path.join(out_dir, "store.h5"), layers=["1", "3"], probes=probes,
                   class_names=[str(c) for c in range(10)], schedule=every(5), batch_size=256,
                   shard="ddp" if mode == "shard" else None)
times = []
for step in range(1, 61):
    x, y = torch.randn(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(ddp(x), y).backward()
    opt.step()
    t0 = time.perf_counter()
    if rec is not None and rec.step(step):
        times.append(time.perf_counter() - t0)
if rec is not None:
    rec.close()
with open(os.path.join(out_dir, f"times_rank{rank}.json"), "w") as fh:
    json.dump(times, fh)
dist.barrier()
dist.destroy_process_group()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)  # torch's gloo backend now and then aborts during interpreter shutdown; everything is saved

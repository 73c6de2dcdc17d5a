"""Two-process DDP training (gloo, CPU) for tests/test_ddp.py; started by torchrun.

Usage: torchrun --nproc_per_node=2 tests/_ddp_child.py OUT_DIR MODE
MODE: ``plain`` (no recorder), ``shard`` (every rank records its share into OUT_DIR/store.h5,
``Recorder(shard="ddp")``, and rank 0 also records the whole probe sets into OUT_DIR/whole.h5 with a second
recorder, which unwraps DDP to the inner module: the single-process recording of the same steps), ``kill`` (as
``shard`` without whole.h5, and rank 1 kills itself with SIGKILL once its shard holds 3 committed snapshots).
Every rank saves its final parameters to OUT_DIR/params_rank<r>.npz.
"""

import os
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every

out_dir, mode = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
ddp = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
g = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
rec = whole = None
if mode in ("shard", "kill"):
    pg = torch.Generator().manual_seed(7)
    # a probe set named "train" makes the recorder fit a temperature on all of it: under sharding, a gather
    probes = [ProbeSet("heldout", torch.randn(30, 6, generator=pg), torch.arange(30) % 3),
              ProbeSet("train", torch.randn(21, 6, generator=pg), torch.arange(21) % 3)]
    args = dict(layers=["1", "2"], probes=probes, class_names=["a", "b", "c"], schedule=every(2), batch_size=5)
    if mode == "shard" and rank == 0:
        whole = Recorder(ddp, os.path.join(out_dir, "whole.h5"), **args)
        whole.step(0)
    rec = Recorder(ddp, os.path.join(out_dir, "store.h5"), shard="ddp", **args)
    rec.step(0)
for step in range(1, 13):
    ddp.train()
    idx = torch.randint(0, 64, (16,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(ddp(x[idx]), y[idx]).backward()
    opt.step()
    if whole is not None:
        whole.step(step)
    if rec is not None:
        rec.step(step)
        if mode == "kill" and rank == 1 and step == 6:
            deadline = time.monotonic() + 60
            while rec.n_snapshots < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)
for r in (whole, rec):
    if r is not None:
        r.close()
state = {k.replace(".", "_"): v.detach().numpy() for k, v in model.state_dict().items()}
np.savez(os.path.join(out_dir, f"params_rank{rank}.npz"), **state)
dist.barrier()
dist.destroy_process_group()
# torch 2.13's gloo backend now and then aborts during interpreter shutdown, after destroy_process_group has
# returned ("terminate called without an active exception", seen in about 1 run in 5 here): everything this
# script produces is saved by now, so skip the shutdown.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)

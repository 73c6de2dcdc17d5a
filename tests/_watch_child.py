"""A slow training process for tests/test_watch.py: one snapshot per step, a pause after each.

Run as ``python tests/_watch_child.py STORE_PATH STEPS PAUSE_S``: records steps 0..STEPS (``every(1)``, with
``total_steps`` in the metadata, so the schedule asks for STEPS + 1 snapshots), sleeping PAUSE_S after each,
then closes the store.
"""

import sys
import time

import torch
from torch import nn

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every

if __name__ == "__main__":
    path, steps, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(120, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # learnable classes 0..2
    probe = ProbeSet("heldout", x[:60], y[:60])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, path, layers=["0", "2"], probes=[probe], class_names=["a", "b", "c"], schedule=every(1),
                  meta={"run_name": "watched", "total_steps": steps}, queue_size=1) as rec:
        for step in range(steps + 1):
            if step > 0:
                loss = nn.functional.cross_entropy(model(x[60:]), y[60:])
                opt.zero_grad()
                loss.backward()
                opt.step()
            rec.step(step)
            time.sleep(pause)

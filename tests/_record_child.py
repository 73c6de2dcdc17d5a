"""A training process for tests/test_kill.py: records every step until it is killed.

Run as ``python tests/_record_child.py STORE_PATH``. :func:`build` is shared with the parent test, which
resumes the killed store with the same model and probe set.
"""

import sys
import time

import torch
from torch import nn

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every

CLASSES = ["a", "b", "c"]


def build():
    """The seeded model, probe set and training data; identical in the child and the parent."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Linear(24, 16),
                          nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 8, generator=g)
    y = torch.randint(0, 3, (96,), generator=g)
    probe = ProbeSet("heldout", x[:48], y[:48])
    return model, probe, (x[48:], y[48:])


def recorder(model, probe, path, resume=False):
    return Recorder(model, path, layers=["0", "2", "4"], probes=[probe], class_names=CLASSES, schedule=every(1),
                    resume=resume, queue_size=2)


def train(model, rec, data, start, stop):
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(start, stop):
        if step > 0:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        rec.step(step)


if __name__ == "__main__":
    model, probe, data = build()
    rec = recorder(model, probe, sys.argv[1])
    step = 0
    while True:  # until SIGKILL
        train(model, rec, data, step, step + 1)
        step += 1
        time.sleep(0.002)

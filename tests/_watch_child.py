"""A training process for tests/test_watch.py that records one snapshot per step, paced by the test through a gate file.

Run as ``python tests/_watch_child.py STORE_PATH STEPS GATE_PATH``: records steps 0..STEPS (``every(1)``, with
``total_steps`` in the metadata, so the schedule asks for STEPS + 1 snapshots), then closes the store. One layer
is recorded (the second hidden one): what watch does with a run does not depend on its layer count, and each page
watch builds costs about a third less than with two. GATE_PATH
holds a number n that the test raises (written atomically, by renaming): the child records snapshot i (step i,
i = 0..STEPS) only once n > i and closes the store only once n > STEPS + 1, reading the gate every 20 ms. So the
test advances the training exactly when it has seen what it waits for (a live page, say), instead of sleeping.
A gate that does not open for :data:`GATE_TIMEOUT_S` seconds ends the child with exit code 3 (its store closed),
so a test that failed never leaves it waiting.
"""

import sys
import time

import torch
from torch import nn

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every

GATE_POLL_S = 0.02
GATE_TIMEOUT_S = 300.0  # bounds a hang; the tests open the gate within seconds


def _gate(path: str) -> int:
    """The gate's number now (0 while the file is missing or empty)."""
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip() or 0)
    except FileNotFoundError:
        return 0


def wait_for_gate(path: str, above: int) -> None:
    """Wait until the gate's number is greater than ``above``; exit with code 3 after :data:`GATE_TIMEOUT_S` s."""
    t0 = time.monotonic()
    while _gate(path) <= above:
        if time.monotonic() - t0 > GATE_TIMEOUT_S:
            raise SystemExit(3)
        time.sleep(GATE_POLL_S)


if __name__ == "__main__":
    path, steps, gate = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(120, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # learnable classes 0..2
    probe = ProbeSet("heldout", x[:60], y[:60])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, path, layers=["2"], probes=[probe], class_names=["a", "b", "c"], schedule=every(1),
                  meta={"run_name": "watched", "total_steps": steps}, queue_size=1) as rec:
        for step in range(steps + 1):
            wait_for_gate(gate, step)
            if step > 0:
                loss = nn.functional.cross_entropy(model(x[60:]), y[60:])
                opt.zero_grad()
                loss.backward()
                opt.step()
            rec.step(step)
        wait_for_gate(gate, steps + 1)

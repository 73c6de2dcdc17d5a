"""A two-rank Lightning DDP fit (gloo, CPU) recorded with TopotraceCallback(shard="ddp"); started by torchrun.

Usage: torchrun --nproc_per_node=2 tests/_lightning_ddp_child.py OUT_DIR

Lightning finds torchrun's environment (TorchElasticEnvironment) and sets up the process group and a
DistributedSampler itself. Every rank records its share of the 30-sample probe set "heldout" into its shard; rank 0
writes OUT_DIR/store.h5. Every rank saves its final parameters to OUT_DIR/params_rank<r>.npz (no pickle).
"""

import os
import sys

import lightning.pytorch as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topotrace.instrument.recorder import ProbeSet
from topotrace.instrument.schedules import every
from topotrace.integrations.lightning import TopotraceCallback

out_dir = sys.argv[1]
STEPS = 8


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))  # no BatchNorm: no per-rank state

    def forward(self, x):
        return self.net(x)  # [batch, 3] logits

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


torch.manual_seed(0)
model = Net()
g = torch.Generator().manual_seed(100)  # the same training data on every rank; the DistributedSampler splits it
x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)  # Lightning swaps in a DistributedSampler
# the same probe set on every rank; tests/test_lightning_ddp.py rebuilds it with numpy alone
probe_x = np.random.default_rng(7).standard_normal((30, 6)).astype(np.float32)
probe = ProbeSet("heldout", torch.from_numpy(probe_x), torch.arange(30) % 3)
cb = TopotraceCallback(os.path.join(out_dir, "store.h5"), layers=["net.1", "net.2"], probes=[probe],
                       class_names=["a", "b", "c"], schedule=every(2), batch_size=5, shard="ddp")
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    callbacks=[cb])
trainer.fit(model, loader)
assert trainer.global_step == STEPS, trainer.global_step
assert cb.recorder is None  # closed by on_fit_end
rank = trainer.global_rank
state = {k.replace(".", "_"): v.detach().cpu().numpy() for k, v in model.state_dict().items()}
np.savez(os.path.join(out_dir, f"params_rank{rank}.npz"), **state)
trainer.strategy.barrier()
# torch 2.13's gloo backend now and then aborts during interpreter shutdown (see tests/_ddp_child.py): everything
# this script produces is saved by now, so skip the shutdown.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)

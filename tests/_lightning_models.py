"""The Lightning side of tests/test_lightning.py: its data, module, callbacks and training loops.

Imported by that module's ``lit`` fixture when its first test runs, so that collecting the suite (on every
parallel worker) does not import Lightning, about 3 s each time.

Real Lightning on CPU, a seeded MLP (64-32-16-10, SGD with momentum) on scikit-learn's bundled digits: 320
training samples in 10 unshuffled batches of 32 per epoch, 100 held-out probe samples.
"""

import lightning.pytorch as L
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every
from topotrace.integrations.lightning import TopotraceCallback

STEPS = 20  # two epochs of 10 updates
BATCH = 32
CLASSES = [str(c) for c in range(10)]
LAYERS = ["fc1", "act1", "fc2", "out"]


def _digits():
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    return (x[:320], y[:320]), ProbeSet("heldout", x[1500:1600], y[1500:1600], np.arange(1500, 1600))


(X, Y), PROBE = _digits()


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(32, 16)
        self.act2 = nn.ReLU()
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))  # [batch, 10] logits

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def net(seed=0):
    torch.manual_seed(seed)
    return Net()


def loader():
    return DataLoader(TensorDataset(X, Y), batch_size=BATCH, shuffle=False)


def rec_args(schedule):
    return dict(layers=LAYERS, probes=[PROBE], class_names=CLASSES, schedule=schedule, batch_size=64)


def fit(model, steps, callbacks=(), ckpt_path=None, **trainer_kw):
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
                        **trainer_kw)
    trainer.fit(model, loader(), ckpt_path=ckpt_path)
    return model


def fit_recorded(path, steps, schedule, extra=(), **kw):
    cb = TopotraceCallback(path, **rec_args(schedule))
    return fit(net(), steps, [cb, *extra], **kw)


def plain(path, steps, schedule, accumulate=1):
    """The reference: a plain loop over the same batches, rec.step(0) and rec.step(step, epoch) per update.

    Returns the model and its weights after every update (step -> state dict).
    """
    model = net()
    opt = model.configure_optimizers()
    weights = {}
    step = epoch = 0
    with Recorder(model, path, **rec_args(schedule)) as rec:
        rec.step(0)
        while step < steps:
            for i, batch in enumerate(loader()):
                loss = model.training_step(batch, i) / accumulate  # Lightning divides by accumulate_grad_batches
                if i % accumulate == 0:
                    opt.zero_grad()
                loss.backward()
                if (i + 1) % accumulate == 0:
                    opt.step()
                    step += 1
                    weights[step] = {k: v.clone() for k, v in model.state_dict().items()}
                    rec.step(step, epoch)
                    if step == steps:
                        break
            epoch += 1
    return model, weights


class WeightLog(L.Callback):
    """The weights after every update, as the plain loop keeps them (step -> state dict)."""

    def __init__(self):
        self.weights = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step not in self.weights:
            self.weights[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}


class SaveAt(L.Callback):
    """Saves a checkpoint when ``global_step`` reaches ``step`` (as ModelCheckpoint does, after the update)."""

    def __init__(self, step, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and not self.path.exists():
            trainer.save_checkpoint(self.path)


class Failing(Net):
    def training_step(self, batch, batch_idx):
        if batch_idx == 5:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


class Grab(L.Callback):
    def __init__(self, cb):
        self.cb, self.rec = cb, None

    def on_train_start(self, trainer, pl_module):
        self.rec = self.cb.recorder


# --- numbers handed to the trainer's loggers (#21 item 3) -------------------------------------------------------


class ThreadLogger(L.loggers.Logger):
    """A logger that notes the thread of every log_metrics call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    name = "threads"
    version = 0

    def log_metrics(self, metrics, step=None):
        import threading

        self.calls.append((threading.current_thread().name, step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class LoggedNet(Net):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss)  # so the CSV file exists with or without topotrace's numbers
        return loss


def fit_logged(tmp_path, loggers, **cb_kw):
    torch.manual_seed(0)
    cb = TopotraceCallback(tmp_path / "store.h5", **rec_args(every(5)), **cb_kw)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=STEPS, logger=loggers, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb], log_every_n_steps=1)
    trainer.fit(LoggedNet(), loader())

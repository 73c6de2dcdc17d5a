"""The transformers side of tests/test_hf.py: the run's settings, the tiny BERT, its Trainer runs, test callbacks.

Imported by that module's ``hf`` fixture when its first test runs, so that collecting the suite (on every
parallel worker) does not import transformers' Trainer, about 1.6 s each time.
"""

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from topotrace.instrument.schedules import every
from topotrace.integrations.hf import TopotraceCallback

__all__ = ["TopotraceCallback", "TrainerControl", "TrainerState"]  # used by tests/test_hf.py

PAD, CLS = 17, 18  # token ids 0..16 are the pixel values
N_TRAIN, BATCH = 160, 16
STEPS_PER_EPOCH = N_TRAIN // BATCH  # 10: the runs cross an epoch boundary
MAX_STEPS, CHECKPOINT = 12, 6
SCHEDULE = every(3)  # steps 0, 3, 6, 9, 12
LAYERS = ["bert.encoder.layer.*", "bert.pooler"]
REDUCTIONS = {"bert.encoder.layer.*": "token_mean"}
CLASSES = [str(d) for d in range(10)]


class Digits(torch.utils.data.Dataset):
    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def model():
    """A tiny BERT with dropout on (a probe pass that moved the RNG would change every later mask)."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=19, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=65, type_vocab_size=1, pad_token_id=PAD,
                        num_labels=10, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    return BertForSequenceClassification(config)


def train(digits, out, callbacks, *, save=False, resume=None):
    """A seeded Trainer run of MAX_STEPS updates (a checkpoint at step CHECKPOINT with ``save``); the model."""
    ids, y = digits
    args = TrainingArguments(output_dir=str(out), max_steps=MAX_STEPS, per_device_train_batch_size=BATCH,
                             learning_rate=1e-3, report_to=[], save_strategy="steps" if save else "no",
                             save_steps=CHECKPOINT, logging_strategy="no", use_cpu=True, seed=1, disable_tqdm=True,
                             dataloader_num_workers=0)
    net = model()
    Trainer(net, args, train_dataset=Digits(ids[:N_TRAIN], y[:N_TRAIN]), callbacks=callbacks).train(
        resume_from_checkpoint=resume)
    return net


def callback(path, probes):
    return TopotraceCallback(path, layers=LAYERS, probes=probes, class_names=CLASSES, schedule=SCHEDULE,
                             reductions=REDUCTIONS, batch_size=32, meta={"seed": 1})


class CopyWeights(TrainerCallback):
    """Test-only: copies of the model's weights before training and after every scheduled update."""

    def __init__(self):
        self.states = {}

    def _copy(self, state, model):
        if SCHEDULE(state.global_step):
            self.states[state.global_step] = {k: v.clone() for k, v in model.state_dict().items()}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._copy(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._copy(state, model)


class StopAt(TrainerCallback):
    """Test-only: ends training after ``step`` updates, as a crash after a checkpoint would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


# --- numbers handed to the Trainer's log (#21 item 3) -----------------------------------------------------------


class LogSpy(TrainerCallback):
    """Notes every on_log the Trainer's callbacks get (where report_to reporters see logs)."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def train_logged(digits, out, callbacks):
    ids, y = digits
    args = TrainingArguments(output_dir=str(out), max_steps=MAX_STEPS, per_device_train_batch_size=BATCH,
                             learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, seed=1, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model(), args, train_dataset=Digits(ids[:N_TRAIN], y[:N_TRAIN]), callbacks=callbacks)
    trainer.train()
    return trainer

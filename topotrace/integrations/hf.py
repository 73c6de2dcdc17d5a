"""The Hugging Face ``Trainer`` callback: the Trainer's events translated into :class:`topotrace.Recorder` calls.

::

    from .hf import TopotraceCallback

    cb = TopotraceCallback("runs/bert/store.h5", layers=["bert.encoder.layer.*", "bert.pooler"],
                           probes=[tt.ProbeSet("heldout", input_ids, labels)], class_names=classes,
                           schedule=tt.log_spaced(max_steps, 50),
                           reductions={"bert.encoder.layer.*": "token_mean"})
    Trainer(model, args, train_dataset=ds, callbacks=[cb]).train()

What happens, on the main process only (``state.is_world_process_zero``; other processes do nothing):

* ``on_train_begin``: the Recorder is created on the Trainer's model (``kwargs["model"]``, the unwrapped
  model), with ``logits="logits"`` (a Hugging Face model returns a ``ModelOutput``) unless given. A fresh run
  records step 0, the untrained model, if the schedule says so. This event, not ``on_init_end``, because
  ``Trainer._inner_training_loop`` calls it after ``_init_training_state`` (which restores ``state`` and so
  ``global_step`` from the checkpoint's ``trainer_state.json``) and after the weights were loaded
  (``Trainer.train`` before the loop; ``_prepare_for_training`` for DeepSpeed/FSDP). A run resumed from a
  checkpoint therefore appends to the store with ``resume=True`` and ``resume_step=state.global_step``:
  snapshots the store holds after the checkpoint's step are cut; the checkpoint's step is recorded only if
  the schedule asks for it and the store lacks it (a new store, or one that lost that snapshot), never twice.
* ``on_step_end`` (once per optimiser update, after ``state.global_step`` is advanced):
  ``Recorder.step(state.global_step, int(state.epoch))``.
* ``on_train_end``: the Recorder is closed (every queued snapshot written).

With ``log_metrics=True`` (default) each committed snapshot's per-layer numbers
(:mod:`topotrace.integrations._metrics`: ``topotrace/<layer>/strength``, ``.../distinctness``,
``.../strength_partial_rho``, ``.../distinctness_partial_rho``, ``topotrace/<probe>/accuracy``) are computed on
the Recorder's writer thread and handed over on the training thread at the next ``on_step_end`` (and at
``on_train_end``) the way ``Trainer.log`` does it: a record ``{**values, "step": <the snapshot's step>}`` is
appended to ``state.log_history`` (so it is in ``trainer_state.json`` too) and the Trainer's callbacks get
``on_log(args, state, control, values)``, which is how ``report_to`` reporters (TensorBoard, W&B, ...) see
logs; they stamp them with ``state.global_step`` at hand-over, at most a few steps after the snapshot. A
callback is not given the Trainer, so the callback finds the Trainer that calls ``on_train_begin`` on the call
stack (the ``self`` of ``Trainer`` frames holding this callback); without one only ``log_history`` gets them.

A probe pass restores every module's mode and the RNG states, so training goes on exactly as without the
callback, and the store holds the same bytes as a plain loop calling :meth:`topotrace.Recorder.step` with
the same model states. Needs ``pip install topotrace[hf]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    from transformers import Trainer, TrainerCallback
except ModuleNotFoundError as err:
    if err.name is None or err.name.split(".")[0] != "transformers":
        raise
    raise ImportError("topotrace.integrations.hf needs transformers: pip install topotrace[hf]") from None

from ..instrument.layers import LayerSelector
from ..instrument.recorder import ProbeSet, Recorder
from ._metrics import SnapshotMetrics
from ._recorder_args import check_recorder_kwargs


class TopotraceCallback(TrainerCallback):
    """Record activations and confidence on fixed probe sets while a Hugging Face ``Trainer`` trains.

    Args:
        store_path: the store file (``.h5``); it must not exist for a fresh run; a run resumed from a
            checkpoint appends to it.
        layers: which layers to record (names as in ``model.named_modules()``, globs, a list, or a predicate).
        probes: the probe sets; ``x`` is the model's first positional input (``input_ids``), called without an
            attention mask, so probe sequences should hold no padding.
        class_names: one name per logit.
        schedule: ``schedule(step) -> bool``; ``step`` is the Trainer's ``global_step`` (optimiser updates).
        log_metrics: log a few per-layer numbers of each snapshot to ``state.log_history`` and the Trainer's
            reporters (see the module docstring); ``False``: log nothing.
        **recorder_kwargs: passed on to :class:`topotrace.Recorder` (``meta``, ``act_dtype``, ``compression``,
            ``measures``, ``reductions``, ``outputs``, ``logits`` (default ``"logits"``: the ``ModelOutput``'s
            (batch, n_classes) logits), ``batch_size``, ``queue_size``); ``resume`` and ``resume_step`` are set
            from the Trainer's state.

    Raises:
        TypeError: ``recorder_kwargs`` holds a name the Recorder does not take, or one the callback sets itself
            (``model``, ``path``, ``resume``, ``resume_step``).
        ValueError: ``shard="ddp"`` (this callback records on the main process only).
    """

    def __init__(
        self,
        store_path: str | Path,
        layers: LayerSelector,
        probes: Sequence[ProbeSet],
        class_names: Sequence[str],
        schedule: Callable[[int], bool],
        log_metrics: bool = True,
        **recorder_kwargs: Any,
    ):
        check_recorder_kwargs(recorder_kwargs)
        if not isinstance(log_metrics, bool):
            raise TypeError(f"The 'log_metrics' parameter of TopotraceCallback must be a bool. Got "
                            f"{type(log_metrics).__name__} instead.")
        self.log_metrics = log_metrics
        self._metrics: SnapshotMetrics | None = None
        self._trainer: Any = None  # the Trainer running this callback, found at on_train_begin
        if recorder_kwargs.get("shard") is not None:  # the callback records on the main process alone
            raise ValueError("The Hugging Face TopotraceCallback records on the main process only; shard='ddp' is "
                             "for plain loops and the Lightning callback. Leave shard unset.")
        self.store_path = Path(store_path)
        self._kwargs = {"layers": layers, "probes": probes, "class_names": class_names, "schedule": schedule,
                        "logits": "logits", **recorder_kwargs}
        self._recorder: Recorder | None = None

    @property
    def recorder(self) -> Recorder | None:
        """The Recorder while training runs on the main process; ``None`` before, after and elsewhere."""
        return self._recorder

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Create the Recorder (resuming the store if the Trainer resumed) and record the starting model if due."""
        if not state.is_world_process_zero:
            return
        self._close()  # a Recorder left open by a train() call that raised
        step = state.global_step  # the Trainer restores it (and the weights) from the checkpoint before this event
        resume = step > 0
        rec = self._recorder = Recorder(kwargs["model"], self.store_path, resume=resume,
                                        resume_step=step if resume else None, **self._kwargs)
        if self.log_metrics:
            self._metrics = SnapshotMetrics(rec.spec)
            rec.add_commit_hook(self._metrics)
            self._trainer = self._calling_trainer()
        if rec.last_step is None or rec.last_step < step:  # the store lacks the model training starts from
            rec.step(step, int(state.epoch or 0))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Record the model after ``state.global_step`` updates if the schedule says so."""
        if self._recorder is not None:
            self._flush(args, state, control)
            self._recorder.step(state.global_step, int(state.epoch or 0))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write every queued snapshot and close the store."""
        self._close()
        self._flush(args, state, control)
        self._metrics = self._trainer = None

    def _flush(self, args: Any, state: Any, control: Any) -> None:
        """Hand the numbers of the snapshots written since the last call to the log history and the reporters."""
        if self._metrics is None:
            return
        handler = getattr(self._trainer, "callback_handler", None)
        for step, values in self._metrics.drain():
            state.log_history.append({**values, "step": step})  # as Trainer.log does, with the snapshot's step
            if handler is not None:
                handler.on_log(args, state, control, dict(values))

    def _calling_trainer(self) -> Any:
        """The Trainer whose callbacks hold this one and that is calling it now (``None`` if none is)."""
        frame = sys._getframe(1)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, Trainer) and self in getattr(owner.callback_handler, "callbacks", ()):
                return owner
            frame = frame.f_back
        return None

    def _close(self) -> None:
        if self._recorder is not None:
            rec, self._recorder = self._recorder, None
            rec.close()

    def __repr__(self) -> str:
        return f"TopotraceCallback({str(self.store_path)!r}, schedule={self._kwargs['schedule']!r})"


__all__ = ["TopotraceCallback"]

"""PyTorch Lightning: a ``Callback`` that records a LightningModule with :class:`topotrace.Recorder`.

The callback translates Lightning's events into the Recorder's API and nothing more; the plain-loop recipe
(``rec.step(0)`` before training, ``rec.step(step, epoch)`` after every optimiser update, ``rec.close()``)
is what it runs, so Lightning and a plain loop over the same batches record the same snapshots, bit for bit::

    import topotrace as tt
    from .lightning import TopotraceCallback

    cb = TopotraceCallback("runs/mine/store.h5", layers="net.*", probes=[tt.ProbeSet("heldout", x, y)],
                           class_names=classes, schedule=tt.log_spaced(total_steps, 60))
    Trainer(max_steps=total_steps, callbacks=[cb]).fit(module, loader)

Events used (Lightning 2.x):

* ``on_train_start``: creates the Recorder and records the starting model (step 0 of a new run). This hook,
  not ``on_fit_start``, because ``Trainer._run`` calls ``on_fit_start`` *before*
  ``_checkpoint_connector.restore_training_state()``, which restores the loops and with them
  ``trainer.global_step`` (strategies with ``restore_checkpoint_after_setup``, e.g. DeepSpeed, even load the
  weights after ``on_fit_start``). ``on_train_start`` is called by ``FitLoop.on_run_start`` inside
  ``_run_stage``, after every restore and after ``strategy.setup`` moved the model to its device, so there
  ``trainer.global_step`` is the step of the weights the model holds. When fit resumes (``fit(ckpt_path=...)``,
  or a second ``fit`` of the same Trainer with ``global_step > 0``), the existing store is opened with
  ``resume=True, resume_step=global_step``: snapshots after the checkpoint's step are cut, and the resumed step
  is not recorded again when the store holds it.
* ``on_train_batch_end``: records at ``trainer.global_step`` (the number of optimiser updates). It runs after
  the batch's optimiser step; with ``accumulate_grad_batches=k`` it also runs after the k - 1 micro-batches
  that do not step, where ``global_step`` has not moved: a step is handed to the Recorder once, when
  ``global_step`` first reaches it.
* ``on_fit_end`` and ``on_exception``: close the Recorder (queued snapshots are written, the store closed).

With ``log_metrics=True`` (default) and a logger configured, each committed snapshot's per-layer numbers
(:mod:`topotrace.integrations._metrics`: ``topotrace/<layer>/strength``, ``.../distinctness``,
``.../strength_partial_rho``, ``.../distinctness_partial_rho``, ``topotrace/<probe>/accuracy``) are computed on
the Recorder's writer thread and handed to every ``trainer.loggers`` entry with ``log_metrics(values, step)``
at the next ``on_train_batch_end`` (and at the end of the fit, before Lightning finalises its loggers), on the
training thread: the loggers (``CSVLogger``'s list of rows, above all) are not made for other threads.

Only global rank 0 records (``trainer.is_global_zero``); other ranks create no recorder and no file. With
``shard="ddp"`` every rank records its share of the probe sets into its own shard file and rank 0 writes the store
that combines them (see :class:`topotrace.Recorder`), so the probe pass takes 1/N of the time on N ranks. The model is
the LightningModule itself: its ``forward`` must return the logits, shape (batch, n_classes), or pass ``logits=``
(an index, key, attribute name or callable, see :class:`topotrace.Recorder`); an output holding several tensors
without ``logits=`` is refused when training starts. A fit that does no training (resumed at ``max_steps``)
records nothing.

A resume from a checkpoint taken mid-epoch is exact only if the DataLoader is stateful: Lightning restarts a plain
``DataLoader`` at the first batch of the epoch while ``global_step`` continues, so the resumed run trains on other
batches than an uninterrupted one would (the store still describes the weights that were trained).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ModuleNotFoundError as err:
    if err.name is None or err.name.split(".")[0] != "lightning":
        raise  # Lightning is there but something it needs is not: show the real error
    _MISSING = "topotrace.integrations.lightning needs PyTorch Lightning: pip install topotrace[lightning]"
    raise ImportError(_MISSING) from None

from ..instrument.layers import LayerSelector
from ..instrument.recorder import ProbeSet, Recorder
from ._metrics import SnapshotMetrics
from ._recorder_args import check_recorder_kwargs


class TopotraceCallback(Callback):
    """Record the LightningModule's activations on fixed probe sets at scheduled ``trainer.global_step`` values.

    Args:
        store_path: the store file (``.h5``); it must not exist for a new run (a resumed fit appends to it).
        layers: which layers of the LightningModule to record (``named_modules()`` names, globs or a predicate).
        probes: the probe sets.
        class_names: one name per logit.
        schedule: ``schedule(step) -> bool`` over optimiser steps (``trainer.global_step``).
        log_metrics: at each snapshot, hand a few per-layer numbers (strength, distinctness, their partial
            correlation with the default confidence measure, each probe set's accuracy; named
            ``topotrace/<layer>/<quantity>``) to the trainer's loggers (``trainer.loggers``) with the snapshot's
            step. Computed on the Recorder's writer thread, handed over on the training thread at the next batch
            end (and when the fit ends). ``False``: log nothing. Not with ``shard="ddp"`` (rank 0 holds a share).
        **recorder_kwargs: further :class:`topotrace.Recorder` arguments: ``meta``, ``act_dtype``,
            ``compression``, ``measures``, ``reductions``, ``outputs``, ``logits`` (needed when ``forward``
            returns several tensors, e.g. ``logits=1`` for ``(aux, logits)``), ``batch_size``, ``queue_size``,
            ``shard="ddp"`` (every rank records its share of the probe sets).

    Raises:
        TypeError: ``recorder_kwargs`` holds a name the Recorder does not take, or one the callback sets itself
            (``model``, ``path``, ``resume``, ``resume_step``).
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
        self.store_path = Path(store_path)
        self.log_metrics = log_metrics
        self._args = dict(layers=layers, probes=probes, class_names=class_names, schedule=schedule, **recorder_kwargs)
        self._rec: Recorder | None = None
        self._metrics: SnapshotMetrics | None = None  # the writer thread's hook while numbers are logged
        self._step: int | None = None  # the global_step last seen: at train start, or last handed to the Recorder

    @property
    def recorder(self) -> Recorder | None:
        """The Recorder of the running fit on rank 0 (every rank with ``shard="ddp"``); None outside a fit."""
        return self._rec

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero and self._args.get("shard") is None:
            return
        self._close(trainer)  # left over from a fit that ended without on_fit_end or on_exception (the Tuner's exit)
        step = trainer.global_step  # restored from the checkpoint by now
        resume = trainer.ckpt_path is not None or step > 0
        self._rec = Recorder(pl_module, self.store_path, resume=resume, resume_step=step if resume else None,
                             **self._args)
        self._metrics = None
        if self.log_metrics and trainer.loggers and trainer.is_global_zero and self._args.get("shard") is None:
            self._metrics = SnapshotMetrics(self._rec.spec)
            self._rec.add_commit_hook(self._metrics)
        self._step = step
        last = self._rec.last_step
        if last is None or step > last:
            self._rec.step(step, trainer.current_epoch)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self._rec is None or step == self._step:  # other ranks; micro-batches that did not step
            return
        self._step = step
        self._flush(trainer)  # numbers of snapshots the writer has finished since the last call
        self._rec.step(step, trainer.current_epoch)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._close(trainer)

    def _flush(self, trainer: Trainer) -> None:
        """Hand the queued numbers to every logger, on the training thread, each with its snapshot's step."""
        if self._metrics is None:
            return
        for step, values in self._metrics.drain():
            for logger in trainer.loggers:
                logger.log_metrics(values, step)

    def _close(self, trainer: Trainer | None = None) -> None:
        rec, self._rec, self._step = self._rec, None, None
        if rec is not None:
            rec.close()  # every queued snapshot written, and its numbers computed
        if trainer is not None:
            self._flush(trainer)
        self._metrics = None

    def __repr__(self) -> str:
        return f"TopotraceCallback({str(self.store_path)!r}, schedule={self._args['schedule']!r})"


__all__ = ["TopotraceCallback"]

"""The recorder's writer thread: snapshots from the queue to the store (:class:`WriterThreadMixin`).

What the writer thread does: softmax, predictions, correctness, per-sample loss and confidence measures
(:mod:`topotrace.instrument.confidence`; with MC dropout ``mc_prob`` and ``mc_mutual_info`` from the sums;
with a probe set named ``"train"`` the temperature fitted on its logits and ``temp_prob`` for every probe set),
and the append to the store
(:mod:`topotrace.instrument.store.writer`). At most ``queue_size`` snapshots are in the writer's hands (queued or being
written); when all are taken, :meth:`Recorder.step` blocks until the writer has caught up (back-pressure bounds
memory to ``queue_size`` snapshots).

A writer failure (disk full, permission, a closed file, any exception) never raises into the training loop:
it is kept in :attr:`Recorder.error`, logged at once and warned about once on the training thread, recording
stops (later :meth:`Recorder.step` calls return ``False`` at once) and the store keeps every snapshot
committed before the failure. Configuration errors (unknown layer, a layer that does not run, a mismatched
store on resume) are raised from the constructor, before training starts.

"""

from __future__ import annotations

import logging
import threading

import numpy as np

from . import confidence
from .probe_pass import _MC_ENTROPY_SUM, _MC_PROB_SUM
from .store import ProbeRecord, Snapshot

log = logging.getLogger("topotrace.instrument.recorder")  # the recorder's logger, whichever of its modules logs

_STOP = object()


class _Sync:
    """A request to the writer thread: sync the store once every snapshot before it is written."""

    __slots__ = ("event", "ok")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False


class WriterThreadMixin:
    """The writer thread of :class:`~topotrace.instrument.recorder.Recorder` (a mixin of it).

    Uses the recorder's ``_writer``, ``_queue``, ``_slots``, ``_free``, ``_commit_hooks``, ``probes``, ``measures``,
    ``mc_dropout``, ``_registered``, ``_labels``, ``_full_labels`` and ``path``; sets ``_n``, ``_last_step``,
    ``_error`` and ``_active``.
    """

    def _write_loop(self) -> None:
        writer = self._writer
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                if isinstance(item, _Sync):  # takes no slot: nothing to release
                    try:
                        if self._error is None:
                            writer.sync()
                            item.ok = True
                    except BaseException as err:  # noqa: BLE001 - a failed sync stops recording, never training
                        self._fail(err, None)
                    finally:
                        item.event.set()
                    continue
                try:
                    if self._error is None:  # after a failure: drain, so the training thread never blocks
                        item[4].wait()  # the pass's copies to the host have arrived (at once on the CPU)
                        n = writer.append(snap := self._build(item))
                        self._last_step = item[0]
                        self._n = n
                        for hook in list(self._commit_hooks):
                            try:
                                hook(snap)
                            except Exception:  # noqa: BLE001 - a hook never stops recording
                                log.exception("Commit hook %r failed at step %d; it is removed.", hook, item[0])
                                self._commit_hooks.remove(hook)
                except BaseException as err:  # noqa: BLE001 - any failure stops recording, never training
                    self._fail(err, item[0])
                finally:
                    self._free.put(item[3])  # the snapshot is written (or dropped): its arrays can be reused
                    del item
                    self._slots.release()
        finally:
            try:
                writer.close()
            except BaseException as err:  # noqa: BLE001
                if self._error is None:
                    self._fail(err, None)

    def _fail(self, err: BaseException, step: int | None) -> None:
        self._error = err
        self._active = False
        where = f" at step {step}" if step is not None else " while syncing or closing"
        # An I/O failure (disk full, file size limit) is said in one line; a traceback is kept for the failures
        # that are bugs. The writer closes its file once, without writing more to it (StoreWriter.close).
        log.error("Recording to %s failed%s: %s: %s. Recording stopped; training goes on; the store keeps its %d "
                  "committed snapshots.", self.path, where, type(err).__name__, " ".join(str(err).split()).rstrip("."),
                  self._n, exc_info=None if isinstance(err, OSError) else err)
        try:
            self._writer.close()
        except BaseException:  # noqa: BLE001 - the file may be gone already
            pass

    def _build(self, item: tuple) -> Snapshot:
        step, epoch, t, payload, _, train_logits = item
        snap = Snapshot(step=step, epoch=epoch, time=t)
        if confidence.TEMP_PROB in self.measures:  # fitted on the train probe set alone, applied to every set
            tr = confidence.TEMPERATURE_PROBE
            logits = payload[tr][""] if train_logits is None else train_logits()  # sharded: every rank's share
            snap.temperature = confidence.fit_temperature(logits, self._full_labels[tr])
        for p in self.probes:
            arrays = payload[p.name]
            logits = arrays[""]
            pred, correct, loss, conf = confidence.outcomes(logits, self._labels[p.name], self._registered)
            if snap.temperature is not None:
                probs = confidence.temperature_softmax(logits, snap.temperature)  # [n, C]
                conf[confidence.TEMP_PROB] = probs.max(axis=1).astype(np.float32)
            if self.mc_dropout:
                conf |= confidence.mc_dropout_measures(arrays[_MC_PROB_SUM], arrays[_MC_ENTROPY_SUM][:, 0],
                                                       self.mc_dropout)
            acts = {name: arrays[name] for name in self.layers}  # already in the store's dtype
            snap.probes[p.name] = ProbeRecord(acts, logits, pred, correct, loss, conf)
        return snap


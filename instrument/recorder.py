"""The recorder: probe passes at scheduled training steps, written to a store by a background thread.

A plain PyTorch loop needs four lines::

    rec = Recorder(model, "runs/demo/store.h5", layers="fc*", probes=[ProbeSet("heldout", x, y)],
                   class_names=classes, schedule=log_spaced(total_steps, 50))
    rec.step(0)                          # the untrained model
    for step in range(1, total_steps + 1):
        ...                              # one optimiser update
        rec.step(step, epoch)            # a probe pass if the schedule says so
    rec.close()                          # or: with Recorder(...) as rec:

The recorder's jobs, one module each: the probe pass on the training thread (:mod:`.probe_pass`: what it runs
and restores, compiled models, precision, Monte-Carlo dropout), the writer thread that computes the confidence
measures and appends to the store (:mod:`.writer_thread`, with what happens when a write fails), the warnings
(:mod:`.recorder_warnings`) and, here, the arguments, the store it opens (new, resumed or replaced; sharded with
:mod:`.shard`) and the public surface. Configuration errors (unknown layer, a layer that does not run, a
mismatched store on resume) are raised from the constructor, before training starts.
"""

from __future__ import annotations

import atexit
import operator
import os
import platform
import queue
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.parameter import is_lazy

from . import confidence
from .hooks import HostCopies
from .layers import (
    LayerSelector,
    LogitsSelector,
    OutputSelector,
    n_neurons_for,
    resolve_layers,
    resolve_outputs,
    resolve_reductions,
    unwrap,
)
from .probe_pass import _AUTOCAST_DTYPES, MC_SEED_BASE, ProbePassMixin, ProbeSet
from .recorder_warnings import WarningsMixin
from .shard import DDPShard as _DDPShard
from .store import (
    LayerSpec,
    ProbeSpec,
    Snapshot,
    StoreSpec,
    check_replaceable,
    open_writer,
    recorded_measures,
)
from .store.shards import shard_spec
from .writer_thread import _STOP, WriterThreadMixin, _Sync


def _step_int(value: object, name: str) -> int:
    """``value`` as an int (numpy integers too); a float, bool or anything else is refused in one line."""
    if isinstance(value, bool):
        raise TypeError(f"Recorder.step: {name!r} must be an int, the number of optimiser updates so far. Got the "
                        f"bool {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"Recorder.step: {name!r} must be an int (the number of optimiser updates so far; epochs "
                        f"count whole epochs). Got {type(value).__name__} {value!r}; nothing was recorded.") from None



def _default_meta(model: nn.Module, schedule: Callable[[int], bool]) -> dict[str, object]:
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version,
        },
        "model_summary": f"{model}\nparameters: {n_params}",
        "n_parameters": n_params,
        "schedule": repr(schedule),
    }


class Recorder(ProbePassMixin, WriterThreadMixin, WarningsMixin):
    """Record a model's activations and confidence on fixed probe sets at scheduled steps into a store.

    Args:
        model: the model being trained; (Distributed)DataParallel wrappers are unwrapped to ``.module``
            (under DDP, create the recorder on rank 0 only, or on every rank with ``shard="ddp"``).
        path: the store file (``.h5``); it must not exist unless ``resume=True`` or ``overwrite=True``.
        layers: which layers to record: an exact ``named_modules()`` name, a glob (``"fc*"``), a list of
            names/globs, or a predicate ``(name, module) -> bool``. Resolved once here.
        probes: the probe sets (distinct names).
        class_names: one name per logit.
        schedule: ``schedule(step) -> bool``, see :mod:`topotrace.instrument.schedules`.
        meta: run metadata stored with a new store (``run_name``, ``seed``, ``config``, ...); library
            ``versions``, ``model_summary``, ``n_parameters`` and ``schedule`` are added unless given.
        resume: append to ``path`` if it exists (the model, layers, probe sets, classes and measures must
            match; a mismatch raises :class:`topotrace.instrument.store.StoreError`). :attr:`last_step` then tells the
            loop where to continue.
        overwrite: replace an existing store at ``path``, only when it is a topotrace store that no process
            records into (the rule of ``topotrace train --overwrite``); anything else there (a file topotrace did
            not write, a link, a folder) is refused in one line. The old store stays until the new one is
            complete (one rename). Not with ``resume`` or ``shard``.
        resume_step: with ``resume``, the step of the checkpoint that training resumes from: snapshots the
            store holds after it are cut, so the store describes the resumed weights (``None`` keeps them all;
            then :attr:`last_step` tells the loop where to continue).
        act_dtype: ``"float16"`` (default) or ``"float32"`` storage for activations. float16 holds magnitudes
            up to 65504 with 3 significant digits: values beyond it are stored as ±inf, counted with the
            non-finite values and warned about once per layer (pass ``"float32"`` when they occur, e.g. in
            un-normalised layers or under bfloat16 autocast).
        autocast: the dtype the training autocasts to (``torch.bfloat16`` or ``torch.float16``): the probe
            pass then runs under ``torch.autocast(<the model's device type>, dtype=autocast)``, so what is
            recorded is what the model computes in training's precision. ``None`` (default): the pass runs in
            the model's own precision, with autocast off (also when the recorder is called inside an autocast
            block).
        compression: ``None`` (default) or ``"gzip"``.
        measures: confidence measure names (:mod:`topotrace.instrument.confidence`); ``None`` records all defaults.
            Besides them, with a probe set named ``"train"``, ``temp_prob`` is recorded for every probe set:
            the largest probability of ``softmax(logits / T)`` with the temperature T fitted at each snapshot on
            the ``"train"`` probe set's logits alone (:func:`topotrace.instrument.confidence.fit_temperature`),
            and T itself (``Store.temperature``). Without a probe set of that name neither is recorded.
        mc_dropout: K >= 0. With K > 0, at each snapshot every probe set also runs K times with the dropout
            modules in training mode (:mod:`topotrace.instrument.probe_pass` says how; the masks are seeded with
            ``MC_SEED_BASE + step``), and ``mc_prob`` (the largest probability of the mean softmax) and
            ``mc_mutual_info`` (mutual information, nats; higher = less confident) are recorded. Costs K
            forward passes of the probe sets per snapshot. 0 (default): off.
        reductions: layer name or glob -> reduction (``"flatten"``, ``"channel_mean"``, ``"token_mean"``)
            (:mod:`topotrace.instrument.layers`). Automatic only where the shape leaves no doubt: [batch, d] ->
            ``"flatten"``, [batch, C, H, W] and [batch, C, D, H, W] -> ``"channel_mean"``. Any other shape,
            above all [batch, A, B], must be named here, e.g. ``{"encoder.layers.*": "token_mean"}`` for
            transformer blocks with [batch, tokens, features] outputs (``"channel_mean"`` for 1-D conv
            [batch, C, L] outputs).
        outputs: layer name or glob -> which tensor to record of a layer output that holds several (a tuple,
            list, mapping or dataclass, e.g. ``nn.MultiheadAttention``'s ``(out, weights)``, an LSTM's
            ``(out, (h, c))``): an int index, a str key or attribute name, or a callable ``output -> tensor``,
            e.g. ``{"attn": 0}``. Not needed for a tensor, or a structure holding exactly one tensor.
        logits: where the logits, a tensor of shape (batch, n_classes), are in the model's output: ``None``
            (default) when the output is one tensor (or a structure holding exactly one tensor), an int index
            (``1`` for a model returning ``(aux, logits)``), a key or attribute name (``"logits"`` for Hugging
            Face models, whose forward returns a ``ModelOutput``), or a callable ``output -> tensor``. An output
            holding several tensors with ``logits`` unset is refused, listing them with their shapes.
        batch_size: probe samples per forward pass.
        queue_size: snapshots that may be queued or being written at once; beyond that :meth:`step` blocks
            until the writer has finished one (back-pressure).
        shard: ``None`` (default): this process records the whole probe sets. ``"ddp"``: create the recorder on
            every rank of an initialised ``torch.distributed`` job, with the same arguments; each rank runs a
            contiguous share of every probe set (whole probe batches where there are enough) with rank 0's
            buffers, writes it to its own shard file next to ``path`` (``store.shard-RR-of-NN.h5``), and rank 0
            writes ``path`` as the store that combines them (:mod:`topotrace.instrument.shard`, docs/store.md
            "Sharded stores"). With ``resume=True``, ``resume_step`` is required.

    Raises:
        ValueError, TypeError: an invalid argument, e.g. an unknown layer (the message lists the available
            names), a logit count that differs from ``len(class_names)``, or a model with uninitialised lazy
            parameters (``nn.LazyLinear`` before its first forward pass). Found by the dry pass, each in one
            line naming the layer, the shapes and what to pass: a model output holding several tensors without
            ``logits``, logits not of shape (batch, n_classes), a layer output holding several tensors without
            ``outputs``, a layer output without an automatic reduction (e.g. [batch, A, B]) missing from
            ``reductions``. Nothing is written when the constructor raises.
        ValueError: ``mc_dropout > 0`` and the model has no dropout module.
        RuntimeError: a selected layer does not run in the model's forward pass (checked by a dry pass on two
            probe samples, which leaves the model, its modes and the RNG states as they were).
        StoreError: ``resume=True`` and the existing store was recorded with a different setup.
        FileExistsError: ``path`` exists and neither ``resume`` nor ``overwrite`` is set (the message names both),
            or ``overwrite`` is set and ``path`` is not a topotrace store.
        BlockingIOError: ``overwrite`` is set and a running process records into ``path``.

    Warns:
        RuntimeWarning: at :meth:`close` (and on leaving a ``with`` block without an exception), when the store
            has no snapshot at step 0 (the untrained model; only when the schedule includes step 0), or when the
            schedule has a last step (``schedule.last_step``, e.g. :class:`~topotrace.instrument.schedules.log_spaced`)
            and it was never recorded. Not after a recording failure (that has its own warning).
    """

    def __init__(
        self,
        model: nn.Module,
        path: str | Path,
        *,
        layers: LayerSelector,
        probes: Sequence[ProbeSet],
        class_names: Sequence[str],
        schedule: Callable[[int], bool],
        meta: Mapping[str, object] | None = None,
        resume: bool = False,
        overwrite: bool = False,
        resume_step: int | None = None,
        act_dtype: str = "float16",
        compression: str | None = None,
        measures: Sequence[str] | None = None,
        reductions: Mapping[str, str] | None = None,
        outputs: Mapping[str, OutputSelector] | None = None,
        logits: LogitsSelector = None,
        batch_size: int = 512,
        queue_size: int = 4,
        autocast: torch.dtype | None = None,
        mc_dropout: int = 0,
        shard: str | None = None,
    ):
        self._model = unwrap(model)
        self.path = Path(path)
        if shard not in (None, "ddp"):
            raise ValueError(f"The 'shard' parameter must be None (record every probe sample in this process) or "
                             f"'ddp' (every DDP rank records its share). Got {shard!r} instead.")
        if resume and overwrite:
            raise ValueError("Recorder(resume=True, overwrite=True): choose one: resume=True continues recording into "
                             "the existing store, overwrite=True replaces it.")
        if overwrite and shard is not None:
            raise ValueError("Recorder(overwrite=True) cannot replace a sharded store (shard='ddp'); remove its store "
                             "and shard files first, or choose another path.")
        if not resume and os.path.lexists(self.path):  # before the dry pass: one line, nothing run or written
            if not overwrite:
                raise FileExistsError(f"{self.path} exists already. Pass resume=True to continue recording into it "
                                      "(same model, layers and probe sets), overwrite=True to replace it (only a "
                                      "topotrace store that no process records), or choose another path.")
            check_replaceable(self.path)
        self._overwrite = bool(overwrite)
        self._ddp = _DDPShard.join() if shard == "ddp" else None
        if not callable(schedule):
            raise TypeError(f"The 'schedule' parameter must be a callable step -> bool. Got {schedule!r} instead.")
        self.schedule = schedule
        if isinstance(probes, ProbeSet) or not isinstance(probes, Sequence) or not probes:
            raise TypeError(f"The 'probes' parameter must be a non-empty list of ProbeSet. Got {probes!r} instead.")
        for p in probes:
            if not isinstance(p, ProbeSet):
                raise TypeError(f"The 'probes' parameter must hold ProbeSet objects. Got {type(p).__name__}.")
        if len({p.name for p in probes}) != len(probes):
            raise ValueError(f"Probe set names must be distinct. Got {[p.name for p in probes]}.")
        self.probes = tuple(probes)
        if isinstance(class_names, str) or not isinstance(class_names, Sequence) or len(class_names) < 2:
            raise ValueError(f"The 'class_names' parameter must be a sequence of at least 2 names. "
                             f"Got {class_names!r} instead.")
        self.class_names = tuple(str(c) for c in class_names)
        n_classes = len(self.class_names)
        for p in self.probes:
            lo, hi = int(p.y.min()), int(p.y.max())
            if lo < 0 or hi >= n_classes:
                raise ValueError(f"ProbeSet {p.name!r}: labels must lie in 0..{n_classes - 1} "
                                 f"(len(class_names) = {n_classes}). Got labels {lo}..{hi}.")
        self._registered = confidence.check_measures(measures)  # computed from the eval pass's softmax alone
        bad_k = (f"The 'mc_dropout' parameter must be an int >= 0 (stochastic passes per probe set at each "
                 f"snapshot; 0 = off). Got {mc_dropout!r} instead.")
        if isinstance(mc_dropout, bool) or not isinstance(mc_dropout, (int, np.integer)):
            raise TypeError(bad_k)
        if mc_dropout < 0:
            raise ValueError(bad_k)
        self.mc_dropout = int(mc_dropout)
        derived = (confidence.TEMP_PROB,) if any(p.name == confidence.TEMPERATURE_PROBE for p in self.probes) else ()
        derived += confidence.MC_MEASURES if self.mc_dropout else ()
        self.measures = self._registered + derived
        for name, value in (("batch_size", batch_size), ("queue_size", queue_size)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"The {name!r} parameter must be an int >= 1. Got {value!r} instead.")
            if value < 1:
                raise ValueError(f"The {name!r} parameter must be an int >= 1. Got {value} instead.")
        self.batch_size = batch_size
        self._full_labels = {p.name: p.y.detach().cpu().numpy().astype(np.int64) for p in self.probes}
        full_probes = self.probes
        if self._ddp is not None:  # from here on self.probes are this rank's shares
            self._shares = self._ddp.shares(self.probes, batch_size)
            self._rank_sizes = {p.name: self._ddp.sizes(len(p), batch_size) for p in self.probes}  # all ranks'
            self.probes = tuple(ProbeSet(p.name, p.x[lo:hi], p.y[lo:hi], p.index[lo:hi])
                                for p, (lo, hi) in ((p, self._shares[p.name]) for p in self.probes))
        if logits is not None and not (isinstance(logits, (int, str)) and not isinstance(logits, bool)
                                       or callable(logits)):
            raise TypeError(f"The 'logits' parameter must be None, an int index, a key/attribute name or a callable "
                            f"output -> tensor. Got {type(logits).__name__} instead.")
        self._logits = logits
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"The 'meta' parameter must be a mapping or None. Got {type(meta).__name__}.")
        if autocast is not None and not isinstance(autocast, torch.dtype):
            raise TypeError(f"The 'autocast' parameter must be None or a torch.dtype among {list(_AUTOCAST_DTYPES)}. "
                            f"Got {type(autocast).__name__} instead.")
        if autocast is not None and autocast not in _AUTOCAST_DTYPES:
            raise ValueError(f"The 'autocast' parameter must be None or a torch.dtype among {list(_AUTOCAST_DTYPES)}. "
                             f"Got {autocast} instead.")
        self.autocast = autocast
        self._overflowed: set[str] = set()  # layers warned about for values beyond the store's dtype
        self._pending: list[tuple[int, HostCopies]] = []  # (step, copies) whose overflow counts are in flight

        lazy = [n for n, t in self._model.named_parameters() if is_lazy(t)]
        if lazy:  # the dry pass would draw their initial values at another point of the RNG stream than training
            raise ValueError(f"The model has uninitialised lazy parameters {lazy}. Run one forward pass (e.g. on a "
                             "training batch) before creating the Recorder, so that initialising them stays part of "
                             "your training code and recording does not change the initial weights.")
        self.layers = resolve_layers(self._model, layers)
        self._reductions = resolve_reductions(self.layers, reductions)
        self._outputs = resolve_outputs(self.layers, outputs)
        self._modules = list(self._model.modules())  # whose training flags a probe pass saves and restores
        self._dropouts = [m for m in self._modules if isinstance(m, _DropoutNd)]  # on during MC-dropout passes
        if self.mc_dropout and not self._dropouts:
            raise ValueError(f"Recorder(mc_dropout={self.mc_dropout}) needs dropout modules in the model; found none "
                             f"among its {len(self._modules)} modules. Add nn.Dropout layers or set mc_dropout=0.")
        if self.mc_dropout and all(float(getattr(m, "p", 0.0)) == 0.0 for m in self._dropouts):
            warnings.warn(f"Recorder(mc_dropout={self.mc_dropout}): every dropout module of the model has p=0, so "
                          "the MC-dropout passes equal the eval pass (mc_mutual_info = 0).", RuntimeWarning,
                          stacklevel=2)
        self._labels = {p.name: p.y.detach().cpu().numpy().astype(np.int64) for p in self.probes}
        self._x_cache: dict[tuple[str, torch.device], torch.Tensor] = {}

        # Dry pass on two samples of every probe set: output shapes and reductions for the store, and every
        # error that a wrong layer choice, an ambiguous output or a wrong class count would otherwise raise at
        # the first snapshot.
        shapes, planned, n_logits = self._dry_pass()
        if n_logits != n_classes:
            raise ValueError(f"The model returns {n_logits} logits per sample but 'class_names' has {n_classes} "
                             f"names: {list(self.class_names)}")
        layer_specs = []
        for name, shape in shapes.items():
            reduction = planned[name]
            n = n_neurons_for(shape, reduction)
            layer_specs.append(LayerSpec(name, n, reduction, tuple(int(s) for s in shape)))
        if resume and confidence.TEMP_PROB in self.measures and self.path.exists():
            old = recorded_measures(self.path)  # a store recorded before temp_prob was automatic goes on without it
            if old is not None and confidence.TEMP_PROB not in old:
                self.measures = tuple(m for m in self.measures if m != confidence.TEMP_PROB)
        full_spec = StoreSpec(
            layers=tuple(layer_specs),
            probes=tuple(ProbeSpec(p.name, p.index, self._full_labels[p.name]) for p in full_probes),
            class_names=self.class_names,
            measures=self.measures,
            act_dtype=act_dtype,
            compression=compression,
        )
        self.spec = full_spec if self._ddp is None else shard_spec(full_spec, self._shares)
        full_meta = _default_meta(self._model, schedule)
        if self.mc_dropout:
            full_meta["mc_dropout"] = {"passes": self.mc_dropout, "seed": f"{MC_SEED_BASE} + step"}
        user = dict(meta or {})
        if isinstance(user.get("versions"), Mapping):
            user["versions"] = {**full_meta["versions"], **user["versions"]}
        full_meta.update(user)
        if resume_step is not None:
            resume_step = operator.index(resume_step)
        if self._ddp is None:
            writer = open_writer(self.path, self.spec, full_meta, resume, resume_step, replace=self._overwrite)
        else:
            writer = self._ddp.open(self.path, full_spec, self.spec, self._shares, full_meta, resume, resume_step)

        self._writer = writer
        self._n = writer.n_snapshots
        self._last_step = writer.last_step
        self._last_submitted = writer.last_step
        self._first_step = writer.first_step  # of the store (a resumed one has it already)
        self.probe_seconds = 0.0  # time the training thread spent in probe passes (snapshot), for benchmarks
        self._error: BaseException | None = None
        self._warned = False
        self._active = True
        self._closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # FIFO of snapshots; bounded by self._slots
        self._slots = threading.BoundedSemaphore(queue_size)  # released by the writer when a snapshot is done
        self._free: queue.SimpleQueue = queue.SimpleQueue()  # host arrays of written snapshots, for reuse
        self._commit_hooks: list[Callable[[Snapshot], None]] = []  # see add_commit_hook
        self._thread = threading.Thread(target=self._write_loop, name=f"topotrace-writer:{self.path.name}",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a loop that never closes still ends with a drained queue and closed file

    # --- public surface ---------------------------------------------------------------------------------

    def add_commit_hook(self, hook: Callable[[Snapshot], None]) -> None:
        """Call ``hook(snapshot)`` on the writer thread after each later snapshot is committed to the store.

        The snapshot's arrays are valid only during the call (they are reused for the next probe pass). A hook
        that raises is logged and removed; recording goes on.
        """
        self._commit_hooks.append(hook)

    @property
    def last_step(self) -> int | None:
        """The step of the last committed snapshot (``None`` if none); training resumes after it."""
        return self._last_step

    @property
    def n_snapshots(self) -> int:
        """Snapshots committed to the store so far (final after :meth:`close`)."""
        return self._n

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the writer, if any."""
        return self._error

    @property
    def recording(self) -> bool:
        """False once the writer failed or the recorder was closed."""
        return self._active

    def step(self, step: int, epoch: int = 0) -> bool:
        """Run a probe pass if ``schedule(step)`` is true and recording goes on; returns whether it ran.

        Call it after each optimiser update with the number of updates done so far (and at step 0 before
        training). Blocks while the writer queue is full.

        Raises:
            TypeError: ``step`` or ``epoch`` is not an int (e.g. ``1.5``; numpy integers are ints).
        """
        step, epoch = _step_int(step, "step"), _step_int(epoch, "epoch")
        if self._active and not self.schedule(step):
            return False
        return self.snapshot(step, epoch)  # also refuses a closed recorder and reports a stopped one

    def snapshot(self, step: int, epoch: int = 0) -> bool:
        """Run a probe pass now, whatever the schedule says; returns False if recording has stopped.

        The time it takes on the calling thread adds up in ``probe_seconds``.

        Raises:
            TypeError: ``step`` or ``epoch`` is not an int.
            ValueError: ``step`` is not larger than the last recorded step.
            RuntimeError: the recorder is closed, or a selected layer did not run during the pass.
        """
        step, epoch = _step_int(step, "step"), _step_int(epoch, "epoch")
        t0 = time.perf_counter()
        try:
            return self._snapshot(step, epoch)
        finally:
            self.probe_seconds += time.perf_counter() - t0

    def _snapshot(self, step: int, epoch: int) -> bool:
        if self._closed:
            raise RuntimeError(f"The recorder for {self.path} is closed.")
        if not self._active and self._ddp is None:
            self._report()
            return False
        if self._last_submitted is not None and step <= self._last_submitted:
            raise ValueError(f"Steps must increase strictly: step {step} after step {self._last_submitted} "
                             f"(store {self.path}). On resume, continue after rec.last_step.")
        t = time.time()
        train_logits = None
        if self._ddp is None:
            payload, copies = self._probe_pass(step)
        else:  # collectives: a rank whose writer failed still takes part in them, for the other ranks
            with self._ddp.rank0_buffers(self._model):  # every shard describes one model: rank 0's
                payload, copies = self._probe_pass(step)
            if confidence.TEMP_PROB in self.measures:  # the temperature is fitted on every rank's share of "train"
                copies.wait()
                tr = confidence.TEMPERATURE_PROBE
                train_logits = self._ddp.gather_start(payload[tr][""], self._rank_sizes[tr])
        if not self._active:
            self._free.put(payload)
            self._report()
            return False
        self._last_submitted = step
        if self._first_step is None:
            self._first_step = step
        self._pending.append((step, copies))
        self._check_overflow(stacklevel=5)  # this pass's counts on the CPU; on CUDA those of earlier ones that arrived
        self._slots.acquire()  # blocks while the writer holds queue_size snapshots
        self._queue.put((step, epoch, t, payload, copies, train_logits))
        return True

    def sync(self, timeout: float | None = None) -> bool:
        """Wait until every snapshot queued so far is written, then flush and ``fsync`` the store.

        Call it before writing a checkpoint (``topotrace train`` does, at every epoch): the snapshots the checkpoint
        counts on are then on the disk, not only in the operating system's cache, and survive a power cut.
        :meth:`close` syncs too. The writer thread does the work (the file is its own); this call blocks until it
        is done.

        Args:
            timeout: seconds to wait at most (``None``: as long as it takes).

        Returns:
            True when the store is synced; False when recording has stopped (a writer failure, see :attr:`error`),
            the recorder is closed, or the timeout passed.
        """
        if self._closed or not self._active or not self._thread.is_alive():
            return False
        done = _Sync()
        self._queue.put(done)  # after every snapshot queued so far: the queue is FIFO
        if not done.event.wait(timeout):
            return False
        return done.ok

    def close(self) -> None:
        """Write every queued snapshot, stop the writer thread and close the store. Safe to call twice.

        Warns (RuntimeWarning) when the run has no snapshot at step 0 or its schedule's last step was never
        recorded (see the class's "Warns").
        """
        self._close(check=True)

    def _close(self, check: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._active = False
        atexit.unregister(self.close)
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._check_overflow(wait=True, stacklevel=4)
        self._report()
        if check and self._error is None and (self._ddp is None or self._ddp.rank == 0):
            self._check_complete()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._close(check=exc_type is None)  # with an exception on its way, that exception says what happened

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._error else "recording")
        return (f"Recorder({str(self.path)!r}, layers={list(self.layers)}, probes={[p.name for p in self.probes]}, "
                f"schedule={self.schedule!r}, n_snapshots={self._n}, {state})")


__all__ = ["MC_SEED_BASE", "ProbeSet", "Recorder"]

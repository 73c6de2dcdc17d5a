"""The recorder: probe passes at scheduled training steps, written to a store by a background thread.

A plain PyTorch loop needs four lines::

    rec = Recorder(model, "runs/demo/store.h5", layers="fc*", probes=[ProbeSet("heldout", x, y)],
                   class_names=classes, schedule=log_spaced(total_steps, 50))
    rec.step(0)                          # the untrained model
    for step in range(1, total_steps + 1):
        ...                              # one optimiser update
        rec.step(step, epoch)            # a probe pass if the schedule says so
    rec.close()                          # or: with Recorder(...) as rec:

What a probe pass does on the training thread: every probe set is run through the model in batches, in eval
mode and under ``torch.no_grad()``, with forward hooks on the selected layers that exist only for the pass;
the reduced layer outputs, cast to the store's dtype, and the logits are copied to host memory and queued
(on a CUDA device without blocking, into reused pinned buffers; the writer waits for one event per pass, see
:mod:`topotrace.instrument.hooks`). Afterwards every module's ``training`` flag and the torch RNG states (CPU,
and CUDA when the model is there) are restored, so training continues exactly as without the recorder
(BatchNorm statistics are not updated in eval mode).

Compiled models: the probe pass runs the original, eager module (``torch.compile``'s wrapper is unwrapped, see
:func:`topotrace.instrument.layers.unwrap`) with Dynamo's stance set to ``"force_eager"`` for the pass, so
compiled submodules run eagerly too: Dynamo never traces the hooks, the probe batch sizes or the no-grad mode,
and the compiled training forward is not recompiled because of the recorder.

Precision: the pass runs under ``torch.autocast`` when ``autocast=`` names the dtype the training autocasts to
(``torch.bfloat16``, ``torch.float16``), else in the model's own precision, with autocast off even when the
recorder is called inside the training's autocast block. A recorded value that is finite but beyond the
store's float16 range is stored as ±inf (counted with the non-finite values in ``probes/<set>/nonfinite``) and
its layer is warned about once, with the advice to record with ``act_dtype="float32"``.

Monte-Carlo dropout (``mc_dropout=K``, K > 0): after the eval-mode pass, still under ``torch.no_grad()`` and
without any forward hook (the activations stored are the eval-mode ones), each probe set runs K more times with
every dropout module (any ``torch.nn.modules.dropout._DropoutNd``: ``nn.Dropout``, ``Dropout1d/2d/3d``,
``AlphaDropout``, ``FeatureAlphaDropout``) in training mode and every other module in eval mode (BatchNorm uses
and keeps its running statistics). Per probe batch the K passes run one after the other in the probe batch
size, and their softmax probabilities and entropies are summed on the model's device (float64), so only two
sums per sample reach the host, never the K softmax arrays. The passes draw their dropout masks from the
global RNGs under :func:`torch.random.fork_rng` (CPU and the model's device): at the start of each probe set
the generators are seeded with ``MC_SEED_BASE + step`` (CPU, and the model's device only), so a recording
is reproducible and one probe set's masks do not depend on the others; on leaving the fork the RNG states
are back where they were, and the pass's own save and restore of the CPU and CUDA states and of every
``training`` flag (in ``finally``, also when a pass raises) covers the MC passes too: training with
``mc_dropout`` stays bit-identical to training without a recorder. Functional dropout
(``F.dropout(x, p, self.training)`` in a module that is not a dropout module) stays off.

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

import atexit
import contextlib
import logging
import operator
import os
import platform
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.parameter import is_lazy

from . import confidence
from .hooks import Capture, HostCopies, capture
from .layers import (
    LayerSelector,
    LogitsSelector,
    OutputSelector,
    n_neurons_for,
    resolve_layers,
    resolve_outputs,
    resolve_reductions,
    select_logits,
    unwrap,
)
from .shard import DDPShard as _DDPShard
from .store import (
    LayerSpec,
    ProbeRecord,
    ProbeSpec,
    Snapshot,
    StoreSpec,
    check_replaceable,
    open_writer,
    recorded_measures,
)
from .store.shards import shard_spec

log = logging.getLogger(__name__)

_STOP = object()


class _Sync:
    """A request to the writer thread: sync the store once every snapshot before it is written."""

    __slots__ = ("event", "ok")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False

_set = object.__setattr__

MC_SEED_BASE = 2016  # the MC-dropout passes of the snapshot at step s are seeded with MC_SEED_BASE + s
# Keys of the MC-dropout sums in a pass's host arrays; a leading "." is never part of a named_modules() name.
_MC_PROB_SUM = ".mc_prob_sum"  # (n, C) float64: sum over the K passes of softmax(logits)
_MC_ENTROPY_SUM = ".mc_entropy_sum"  # (n, 1) float64: sum over the K passes of the entropy (nats)


@dataclass(frozen=True, eq=False)
class ProbeSet:
    """A fixed set of samples run through the model at every snapshot.

    Attributes:
        name: ``"heldout"`` or ``"train"`` by convention; any name without ``/``.
        x: tensor of shape (n, ...), the model's inputs (kept where it is; moved to the model's device per batch).
        y: tensor of shape (n,), int64 true classes.
        index: array of shape (n,), int64 positions of the samples in their source data set;
            ``None`` means ``arange(n)``.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"The 'name' parameter of ProbeSet must be a non-empty str without '/'. "
                             f"Got {self.name!r} instead.")
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise TypeError(f"ProbeSet {self.name!r}: 'x' and 'y' must be torch tensors. "
                            f"Got {type(self.x).__name__} and {type(self.y).__name__}.")
        n = self.x.shape[0] if self.x.ndim else 0
        if n == 0 or self.y.shape != (n,):
            raise ValueError(f"ProbeSet {self.name!r}: 'x' must have shape (n, ...) with n >= 1 and 'y' shape (n,). "
                             f"Got x {tuple(self.x.shape)} and y {tuple(self.y.shape)}.")
        if self.y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"ProbeSet {self.name!r}: 'y' must hold integer class labels. Got {self.y.dtype}.")
        index = np.arange(n, dtype=np.int64) if self.index is None else np.asarray(self.index)
        if index.shape != (n,) or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"ProbeSet {self.name!r}: 'index' must be None or an integer array of shape ({n},). "
                             f"Got {index.dtype} {index.shape}.")
        object.__setattr__(self, "index", index.astype(np.int64))

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


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


def mc_seed(step: int) -> int:
    """The seed of the MC-dropout passes of the snapshot at ``step``: ``MC_SEED_BASE + step`` (mod 2**63)."""
    return (MC_SEED_BASE + step) % (1 << 63)


def _seed_generators(seed: int, device: torch.device) -> None:
    """Seed the CPU generator and the default generator of ``device`` (no other device's)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    elif device.type != "cpu":
        torch.get_device_module(device.type).manual_seed(seed)


def _fork_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """Fork the CPU RNG and, for an accelerator, the RNG of ``device``: restored on leaving the block."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(devices=[device], device_type=device.type)


def _eager() -> contextlib.AbstractContextManager:
    """Dynamo's ``"force_eager"`` stance for the block: compiled code inside runs eagerly, nothing is traced.

    A no-op while Dynamo was never imported (then nothing can be compiled), and before torch 2.6 (no stances:
    there only the unwrapped top-level module runs eagerly, compiled submodules run their compiled code).
    """
    set_stance = getattr(torch.compiler, "set_stance", None)
    if "torch._dynamo" not in sys.modules or set_stance is None:
        return contextlib.nullcontext()
    return set_stance("force_eager")


_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


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


class Recorder:
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
            modules in training mode (the module docstring says how; the masks are seeded with
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

    def _check_complete(self) -> None:
        """Warn about a run without step 0, or whose schedule's last step was never recorded (one line each)."""
        where = f"The recording to {self.path} ended"
        try:
            wants_zero = bool(self.schedule(0))
        except Exception:  # noqa: BLE001 - a schedule that cannot say: no warning
            wants_zero = False
        if self._first_step is None:
            warnings.warn(f"{where} without any snapshot: call rec.step(0) before training (the untrained model) "
                          "and rec.step(step) after every optimiser update.", RuntimeWarning, stacklevel=4)
            return
        if self._first_step != 0 and wants_zero:
            warnings.warn(f"{where} without a snapshot at step 0 (the untrained model; its first is at step "
                          f"{self._first_step}): call rec.step(0) before the first optimiser update, the report "
                          "measures every change from it.", RuntimeWarning, stacklevel=4)
        last = getattr(self.schedule, "last_step", None)
        if isinstance(last, (int, np.integer)) and not isinstance(last, bool):
            done = self._last_step
            if done is None or done < last:
                warnings.warn(f"{where} at step {done}, before the last step {int(last)} of its schedule "
                              f"{self.schedule!r}: training stopped early, or the schedule was made for more steps "
                              "than the loop ran (make it for epochs x steps per epoch).", RuntimeWarning,
                              stacklevel=4)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._close(check=exc_type is None)  # with an exception on its way, that exception says what happened

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._error else "recording")
        return (f"Recorder({str(self.path)!r}, layers={list(self.layers)}, probes={[p.name for p in self.probes]}, "
                f"schedule={self.schedule!r}, n_snapshots={self._n}, {state})")

    # --- training thread ----------------------------------------------------------------------------------

    def _inputs(self, probe: ProbeSet, device: torch.device) -> torch.Tensor:
        key = (probe.name, device)
        x = self._x_cache.get(key)
        if x is None:
            x = self._x_cache[key] = probe.x.to(device)
        return x

    def _precision(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Autocast to ``self.autocast`` for the pass, or autocast off if the caller's block has it on."""
        if self.autocast is not None:
            return torch.autocast(device.type, dtype=self.autocast)
        try:
            on = torch.is_autocast_enabled(device.type)
        except TypeError:  # torch < 2.4: no device argument
            on = torch.is_autocast_enabled() if device.type == "cuda" else torch.is_autocast_cpu_enabled()
        return torch.autocast(device.type, enabled=False) if on else contextlib.nullcontext()

    def _run(self, inputs: Mapping[str, torch.Tensor], bufs: dict[str, dict[str, np.ndarray]],
             act_dtype: np.dtype | str = np.float32, mc_step: int | None = None
             ) -> tuple[dict[str, tuple[int, ...]], dict[str, str], HostCopies]:
        """One probe pass over ``inputs`` (probe name -> [n, ...]); model state restored afterwards.

        Fills ``bufs``: probe name -> {layer name -> (n, n_neurons) act_dtype, "": logits (n, C) float32};
        arrays already there are overwritten in place (on CUDA: once the returned copies are ready). With
        ``mc_step`` (the snapshot's step) and ``mc_dropout > 0``, the MC-dropout passes follow
        (:meth:`_mc_passes`). Returns layer name -> output shape of one sample, layer name -> reduction, and the
        copies to the host.
        """
        model = self._model
        device = _device_of(model)
        modules = self._modules
        modes = [m.training for m in modules]
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        bs = self.batch_size
        try:
            # Flags are set directly, not through model.eval()/train(): a train() override with side effects
            # (e.g. merging adapter weights into the base weights on eval) must not run for a probe pass.
            # object.__setattr__ skips nn.Module.__setattr__'s parameter/buffer bookkeeping (a bool is neither).
            for m in modules:
                _set(m, "training", False)
            with torch.no_grad(), _eager(), self._precision(device):
                with capture(self.layers, self._reductions, act_dtype, self._outputs) as cap:
                    for name, x in inputs.items():
                        x = x.to(device)  # a no-op when the probe set already lives on the model's device
                        n = x.shape[0]
                        dest = bufs.setdefault(name, {})
                        for start in range(0, n, bs):
                            cap.begin(dest, n, start)
                            batch = x[start : start + bs]
                            out = select_logits(model(batch), self._logits)  # [batch, C]
                            cap.end_batch()
                            if out.ndim != 2 or out.shape[0] != batch.shape[0]:
                                raise ValueError(self._bad_logits(out, batch.shape[0], name))
                            cap.write("", out, np.float32)  # rows start.. of dest[""], (n, C) float32
                    shapes, reductions = cap.sample_shapes, cap.reductions()
                if mc_step is not None and self.mc_dropout:  # the hooks are gone: nothing records these passes
                    self._mc_passes(inputs, bufs, cap, device, mc_step)
                copies = cap.finish()
        finally:
            for m, flag in zip(modules, modes):
                _set(m, "training", flag)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, device)
        return shapes, reductions, copies

    def _mc_passes(self, inputs: Mapping[str, torch.Tensor], bufs: dict[str, dict[str, np.ndarray]], cap: Capture,
                   device: torch.device, step: int) -> None:
        """K stochastic passes per probe batch with the dropout modules on; their sums go to ``bufs``.

        Called by :meth:`_run` with every module in eval mode (it restores all flags and the CPU and CUDA RNG
        states afterwards). Fills ``bufs[probe][_MC_PROB_SUM]`` (n, C) and ``bufs[probe][_MC_ENTROPY_SUM]``
        (n, 1), float64: the sums over the K passes of the softmax probabilities and of their entropy (nats).
        """
        model, k, bs = self._model, self.mc_dropout, self.batch_size
        acc = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        for m in self._dropouts:
            _set(m, "training", True)
        with _fork_rng(device):
            for name, x in inputs.items():
                _seed_generators(mc_seed(step), device)  # per probe set: its masks do not depend on the others
                x = x.to(device)
                n = x.shape[0]
                dest = bufs[name]
                for start in range(0, n, bs):
                    batch = x[start : start + bs]
                    prob_sum = entropy_sum = None
                    for _ in range(k):
                        p = torch.softmax(select_logits(model(batch), self._logits).to(acc), dim=1)  # [batch, C]
                        h = torch.special.entr(p).sum(dim=1, keepdim=True)  # [batch, 1]
                        if prob_sum is None:
                            prob_sum, entropy_sum = p, h
                        else:
                            prob_sum += p
                            entropy_sum += h
                    cap.begin(dest, n, start)
                    cap.write(_MC_PROB_SUM, prob_sum, np.float64)  # rows start.. of (n, C)
                    cap.write(_MC_ENTROPY_SUM, entropy_sum, np.float64)  # rows start.. of (n, 1)

    def _bad_logits(self, out: torch.Tensor, batch: int, probe: str) -> str:
        chosen = self._logits
        if chosen is None:
            how = "the model's output"
        elif isinstance(chosen, (int, str)):
            how = f"logits={chosen!r}"
        else:
            how = f"logits={getattr(chosen, '__name__', chosen)}"
        return (f"The logits ({how}) must have shape (batch, n_classes) with batch = {batch}. Got shape "
                f"{tuple(out.shape)} for probe set {probe!r}. Pass logits= (an index, key or callable) that gives "
                "the (batch, n_classes) logits.")

    def _probe_pass(self, step: int) -> tuple[dict[str, dict[str, np.ndarray]], HostCopies]:
        try:  # host arrays of a snapshot the writer has finished with: reused, so no fresh memory per pass
            bufs = self._free.get_nowait()
        except queue.Empty:
            bufs = {}
        device = _device_of(self._model)
        _, _, copies = self._run({p.name: self._inputs(p, device) for p in self.probes}, bufs, self.spec.act_dtype,
                                 mc_step=step)
        return bufs, copies

    def _dry_pass(self) -> tuple[dict[str, tuple[int, ...]], dict[str, str], int]:
        bufs: dict[str, dict[str, np.ndarray]] = {}
        shapes, reductions, copies = self._run({p.name: p.x[:2] for p in self.probes}, bufs)
        copies.wait()
        logits = next(iter(bufs.values()))[""]
        return {n: shapes[n] for n in self.layers}, reductions, logits.shape[1]

    def _check_overflow(self, wait: bool = False, stacklevel: int = 4) -> None:
        """Warn once per layer about values beyond the store's dtype, for every pass whose counts arrived.

        ``wait``: wait for the counts still in flight (CUDA). ``stacklevel`` points the warning at the caller of
        :meth:`step` (5: step, snapshot, _snapshot, here) or of :meth:`close`.
        """
        keep = []
        for step, copies in self._pending:
            if not (wait or copies.ready()):
                keep.append((step, copies))
                continue
            if wait:
                copies.wait()
            for layer, count in copies.overflow().items():
                if layer in self._overflowed:
                    continue
                self._overflowed.add(layer)
                dtype = np.dtype(self.spec.act_dtype)
                hint = ' Record with act_dtype="float32" to keep them.' if dtype.itemsize < 4 else ""
                warnings.warn(
                    f"Layer {layer!r} has values beyond the {dtype} range (±{float(np.finfo(dtype).max):g}): {count} "
                    f"at step {step} are stored as ±inf and counted with the non-finite values "
                    f"(probes/<set>/nonfinite).{hint}",
                    RuntimeWarning,
                    stacklevel=stacklevel,
                )
        self._pending = keep

    def _report(self) -> None:
        if self._error is not None and not self._warned:
            self._warned = True
            reason = " ".join(str(self._error).split()).rstrip(".")  # one line: HDF5's messages hold newlines
            warnings.warn(
                f"Recording to {self.path} stopped: {type(self._error).__name__}: {reason}. Training goes on "
                f"unrecorded; the store keeps its {self._n} committed snapshots.",
                RuntimeWarning,
                stacklevel=3,
            )

    # --- writer thread ------------------------------------------------------------------------------------

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


__all__ = ["ProbeSet", "Recorder"]

"""The recorder's probe pass, on the training thread: :class:`ProbeSet` and :class:`ProbePassMixin`.

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
"""

from __future__ import annotations

import contextlib
import queue
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .hooks import Capture, HostCopies, capture
from .layers import select_logits

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


class ProbePassMixin:
    """The probe passes of :class:`~topotrace.instrument.recorder.Recorder` (a mixin of it, for its training thread).

    Uses the recorder's ``_model``, ``layers``, ``_reductions``, ``_outputs``, ``_logits``, ``_modules``,
    ``_dropouts``, ``probes``, ``batch_size``, ``autocast``, ``mc_dropout``, ``spec``, ``_x_cache`` and ``_free``.
    """

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

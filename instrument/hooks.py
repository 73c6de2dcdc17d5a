"""Forward hooks that exist only inside a ``with`` block, and the capture of layer outputs during a probe pass.

:func:`forward_hooks` registers hooks, yields, and removes every one of them in ``finally`` — after a normal
exit and after an exception alike — so training steps outside a probe pass run without any hook.
:func:`capture` builds on it: inside each hook the selected layer's output is reduced to [batch, n_neurons]
and copied into a host array in the store's dtype, so later in-place changes in the forward pass cannot alter
what was recorded; :meth:`Capture.end_batch` checks that every layer ran exactly once. The first call of each
hook plans the layer once: which tensor of its output is recorded (the only one, or the one a selector names)
and its reduction (the one given, or the automatic choice where the shape leaves no doubt); an ambiguous output
raises a one-line ``ValueError`` from that first forward pass.

On a CUDA device the copies do not stall the stream: each output is cast to the store's dtype on the device
and copied with ``non_blocking=True`` into host arrays in pinned (page-locked) memory, reused from pass to pass;
:meth:`Capture.finish` records one CUDA event after the last copy of the pass, which the consumer waits on
before reading the arrays (one synchronisation per pass instead of one per layer and batch). On the CPU the
copies are plain synchronous copies.

Overflow: values that are finite in the model but beyond the range of the host arrays' dtype (float16:
magnitude 65520 and above, which rounds to ±inf; 65504 is float16's largest value) are counted per layer at the
cast (:meth:`HostCopies.overflow`), so that the recorder can say which layer overflows; they are stored as ±inf.
On the CPU one ``torch.aminmax`` per layer and batch finds them (the exact count only runs when it finds
something); on CUDA the count is taken on the device, without a synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from .layers import OutputSelector, choose_reduction, reduce_output, select_layer_output

Hook = Callable[[nn.Module, Any, Any], Any]
Count = Union[int, torch.Tensor]  # a count on the host, or a 0-dim int64 tensor on the device

NOT_FIRED_HINT = (
    "A module that forward() never calls, or one bypassed by a fused fast path, cannot be recorded: e.g. "
    "torch.nn.MultiheadAttention uses out_proj's weights without calling out_proj, and "
    "torch.nn.TransformerEncoderLayer in eval mode under no_grad may run as one fused kernel without calling "
    "its submodules (self_attn, linear1, ...). Record modules that run, such as the enclosing layer."
)


@contextmanager
def forward_hooks(hooks: Sequence[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Register forward hooks for the duration of the block; all are removed on exit, also after an exception.

    Args:
        hooks: ``(module, hook)`` pairs; ``hook(module, inputs, output)`` as in
            :meth:`torch.nn.Module.register_forward_hook`.
    """
    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def overflow_limit(dtype: np.dtype | str) -> float | None:
    """The smallest magnitude that a cast to the float ``dtype`` turns into ±inf (``None`` for other dtypes).

    The largest finite value plus half its spacing: 65520 for float16 (whose largest value is 65504; values
    between round down to it), 2**128 - 2**103 for float32.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return None
    info = np.finfo(dtype)
    return float(info.max) + 2.0 ** (info.maxexp - 2 - info.nmant)  # half the spacing of the largest values


def _may_exceed(dtype: torch.dtype, limit: float | None) -> bool:
    """Whether values of ``dtype`` can reach ``limit`` (float32 can reach float16's; float16 cannot)."""
    if limit is None or dtype == torch.bool:
        return False
    info = torch.finfo(dtype) if dtype.is_floating_point else torch.iinfo(dtype)
    return float(info.max) >= limit


class HostCopies:
    """The host side of one capture: ready at once on the CPU; on CUDA once :attr:`event` has completed.

    Attributes:
        event: the CUDA event recorded after the pass's last copy to the host, or ``None`` when every copy was
            synchronous (CPU).
    """

    def __init__(self, event: torch.cuda.Event | None, overflow: Mapping[str, int] | torch.Tensor,
                 names: Sequence[str]):
        self.event = event
        self._overflow = overflow  # layer name -> count, or a pinned int64 tensor of shape (len(names),)
        self._names = list(names)

    def ready(self) -> bool:
        """Whether the copies have arrived (never blocks)."""
        return self.event is None or self.event.query()

    def wait(self) -> None:
        """Block until the copies have arrived; a no-op on the CPU."""
        if self.event is not None:
            self.event.synchronize()

    def overflow(self) -> dict[str, int]:
        """Layer name -> finite values that became ±inf in the host dtype (layers with none are left out).

        Read it once :meth:`ready` is true (or after :meth:`wait`).
        """
        if isinstance(self._overflow, torch.Tensor):
            return {n: int(c) for n, c in zip(self._names, self._overflow.tolist()) if c}
        return {n: int(c) for n, c in self._overflow.items() if c}


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


class Capture:
    """Reduced outputs of the hooked layers, written batch by batch into host arrays during one probe pass.

    The arrays are passed in with :meth:`begin` and may be reused from pass to pass (no fresh allocation,
    hence no page faults, on the training thread); an array that is missing or has the wrong width or dtype
    is allocated in the hook (in pinned memory for a CUDA output). Copying straight into the store's dtype
    halves the bytes the training thread writes when the store keeps float16 (``torch.Tensor.copy_`` casts;
    a CUDA output is cast on the device and copied without blocking, see the module docstring).

    Args:
        layers: layer name -> module.
        reductions: layer name -> reduction, for layers whose shape has no automatic reduction or that should
            not use it.
        dtype: dtype of the host arrays.
        outputs: layer name -> which tensor of an output that holds several is recorded (an int index, a str
            key or attribute, or a callable output -> tensor); see
            :func:`topotrace.instrument.layers.select_layer_output`.

    Attributes:
        layers: layer name -> module.
        sample_shapes: layer name -> the output shape of one sample before reduction (set by the first batch).
    """

    def __init__(self, layers: Mapping[str, nn.Module], reductions: Mapping[str, str] | None = None,
                 dtype: np.dtype | str = np.float32, outputs: Mapping[str, OutputSelector] | None = None):
        self.layers = dict(layers)
        self.dtype = np.dtype(dtype)
        self.reductions_given = dict(reductions or {})
        self.outputs_given = dict(outputs or {})
        self.sample_shapes: dict[str, tuple[int, ...]] = {}
        self._planned: dict[str, str] = {}  # layer name -> reduction, fixed by the layer's first output
        self._calls = dict.fromkeys(self.layers, 0)
        self._dest: dict[str, np.ndarray] = {}
        self._rows = 0
        self._start = 0
        self._limit = overflow_limit(self.dtype)
        self._checked: dict[str, bool] = {}  # layer name -> whether its outputs can overflow the host dtype
        self._overflow: dict[str, Count] = dict.fromkeys(self.layers, 0)
        self._device: torch.device | None = None  # the CUDA device of the non-blocking copies, if any

    def begin(self, dest: dict[str, np.ndarray], n_rows: int, start: int) -> None:
        """Direct the next batch into rows ``start ..`` of ``dest[name]``, arrays of shape (n_rows, n_neurons)."""
        self._dest, self._rows, self._start = dest, n_rows, start

    def write(self, key: str, t: torch.Tensor, dtype: np.dtype | str | None = None) -> torch.Tensor:
        """Copy ``t`` of shape [batch, width] into rows ``start ..`` of ``dest[key]`` (see :meth:`begin`).

        ``dest[key]`` is allocated, of shape (n_rows, width) and ``dtype`` (default: the capture's), if it is
        missing or does not fit; in pinned memory when ``t`` is on a CUDA device. A CUDA tensor is cast on the
        device and copied without blocking (the host rows are valid once :meth:`finish`'s event completed).

        Returns:
            The tensor whose values reach the host: the host rows (CPU) or the cast tensor (CUDA).
        """
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        shape = (self._rows, t.shape[1])
        buf = self._dest.get(key)
        cuda = t.device.type == "cuda"
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            if cuda:  # page-locked, so that the copy runs asynchronously; the array keeps the tensor alive
                buf = torch.empty(shape, dtype=_torch_dtype(dtype), pin_memory=True).numpy()
            else:
                buf = np.empty(shape, dtype)
            self._dest[key] = buf
        stop = self._start + t.shape[0]
        if not cuda:
            return torch.from_numpy(buf[self._start : stop]).copy_(t)  # [batch, width]; casts and moves to host
        # the pinned tensor under the array (its storage is the one the caching host allocator knows)
        host = buf.base if isinstance(buf.base, torch.Tensor) and buf.base.shape == buf.shape else torch.from_numpy(buf)
        rows = host[self._start : stop]  # [batch, width]
        self._device = t.device
        cast = t.to(rows.dtype)  # on the device: float16 halves the bytes that cross the bus
        rows.copy_(cast, non_blocking=True)
        return cast

    def hook(self, name: str) -> Hook:
        """The forward hook that records layer ``name``."""
        calls, shapes, planned, checked = self._calls, self.sample_shapes, self._planned, self._checked
        given, selector = self.reductions_given.get(name), self.outputs_given.get(name)
        limit, overflow = self._limit, self._overflow

        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if selector is None and isinstance(output, torch.Tensor):
                t = output.detach()  # [batch, *sample_shape]
            else:
                t = select_layer_output(output, name, selector).detach()
            reduction = planned.get(name)
            if reduction is None:  # the first batch: shape and reduction are checked once
                shape = tuple(t.shape[1:])
                reduction = planned[name] = choose_reduction(name, shape, given)
                shapes[name] = shape
                checked[name] = _may_exceed(t.dtype, limit)
            r = reduce_output(t, reduction)  # [batch, n_neurons]
            stored = self.write(name, r)  # [batch, n_neurons] in the host dtype
            if checked[name]:
                if stored.device.type == "cuda":  # counted on the device: reading it here would wait for it
                    overflow[name] = overflow[name] + torch.count_nonzero(stored.isinf() & ~r.isinf())
                else:
                    lo, hi = torch.aminmax(r)  # one pass; the exact count only where it may find something
                    if not (-limit < float(lo) and float(hi) < limit):  # also true for NaN
                        overflow[name] += int(torch.count_nonzero(stored.isinf() & ~r.isinf()))
            calls[name] += 1

        return record

    def finish(self) -> HostCopies:
        """End the pass: the copies to the host and the overflow counts (one CUDA event for all of them)."""
        names = list(self.layers)
        if self._device is None:
            return HostCopies(None, {n: int(c) for n, c in self._overflow.items()}, names)
        device = self._device
        zero = torch.zeros((), dtype=torch.int64, device=device)
        counts = torch.stack([c if isinstance(c, torch.Tensor) else zero for c in self._overflow.values()])
        host = torch.empty(len(names), dtype=torch.int64, pin_memory=True)  # [n_layers]
        host.copy_(counts, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        return HostCopies(event, host, names)

    def end_batch(self) -> None:
        """Check the batch just run: every layer ran exactly once.

        Raises:
            RuntimeError: a layer did not run (see :data:`NOT_FIRED_HINT`) or ran more than once.
        """
        calls = self._calls
        try:
            missing = [n for n, c in calls.items() if c == 0]
            if missing:
                raise RuntimeError(f"Layers {missing} did not run during the probe pass (their forward hooks never "
                                   f"fired). {NOT_FIRED_HINT}")
            repeated = {n: c for n, c in calls.items() if c > 1}
            if repeated:
                raise RuntimeError(f"Layers {sorted(repeated)} ran more than once in one forward pass (calls: "
                                   f"{repeated}); a reused module has no single activation per sample. Record a "
                                   "module that runs once.")
        finally:
            for n in calls:
                calls[n] = 0

    def reductions(self) -> dict[str, str]:
        """Layer name -> reduction of the layers that ran: the one given, else the automatic choice."""
        return dict(self._planned)


@contextmanager
def capture(layers: Mapping[str, nn.Module], reductions: Mapping[str, str] | None = None,
            dtype: np.dtype | str = np.float32, outputs: Mapping[str, OutputSelector] | None = None
            ) -> Iterator[Capture]:
    """Hook ``layers`` for the duration of the block and collect their reduced outputs.

    Args:
        layers: layer name -> module, e.g. from :func:`topotrace.instrument.layers.resolve_layers`.
        reductions: layer name -> reduction for layers that do not use the automatic choice (required for
            shapes without one, such as [batch, tokens, features]).
        dtype: dtype of the host arrays.
        outputs: layer name -> which tensor of an output that holds several is recorded.

    Yields:
        The :class:`Capture`; call :meth:`Capture.begin` before and :meth:`Capture.end_batch` after each
        forward pass.
    """
    cap = Capture(layers, reductions, dtype, outputs)
    with forward_hooks([(m, cap.hook(n)) for n, m in cap.layers.items()]):
        yield cap

"""Forward hooks that exist only inside a ``with`` block, and the capture of layer outputs during a probe pass.

:func:`forward_hooks` registers hooks, yields, and removes every one of them in ``finally`` — after a normal
exit and after an exception alike — so training steps outside a probe pass run without any hook.
:func:`capture` builds on it: inside each hook the selected layer's output is reduced to [batch, n_neurons]
and copied into a host array in the store's dtype, so later in-place changes in the forward pass cannot alter
what was recorded; :meth:`Capture.end_batch` checks that every layer ran exactly once. The first call of each
hook plans the layer once: which tensor of its output is recorded (the only one, or the one a selector names)
and its reduction (the one given, or the automatic choice where the shape leaves no doubt); an ambiguous output
raises a one-line ``ValueError`` from that first forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from .layers import OutputSelector, choose_reduction, reduce_output, select_layer_output

Hook = Callable[[nn.Module, Any, Any], Any]

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


class Capture:
    """Reduced outputs of the hooked layers, written batch by batch into host arrays during one probe pass.

    The arrays are passed in with :meth:`begin` and may be reused from pass to pass (no fresh allocation,
    hence no page faults, on the training thread); an array that is missing or has the wrong width or dtype
    is allocated in the hook. Copying straight into the store's dtype halves the bytes the training thread
    writes when the store keeps float16 (``torch.Tensor.copy_`` casts).

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

    def begin(self, dest: dict[str, np.ndarray], n_rows: int, start: int) -> None:
        """Direct the next batch into rows ``start ..`` of ``dest[name]``, arrays of shape (n_rows, n_neurons)."""
        self._dest, self._rows, self._start = dest, n_rows, start

    def hook(self, name: str) -> Hook:
        """The forward hook that records layer ``name``."""
        calls, shapes, planned, dtype = self._calls, self.sample_shapes, self._planned, self.dtype
        given, selector = self.reductions_given.get(name), self.outputs_given.get(name)

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
            r = reduce_output(t, reduction)  # [batch, n_neurons]
            buf = self._dest.get(name)
            if buf is None or buf.shape != (self._rows, r.shape[1]) or buf.dtype != dtype:
                buf = self._dest[name] = np.empty((self._rows, r.shape[1]), dtype)
            torch.from_numpy(buf[self._start : self._start + r.shape[0]]).copy_(r)  # casts and moves to host
            calls[name] += 1

        return record

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

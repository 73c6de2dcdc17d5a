"""Forward hooks that exist only inside a ``with`` block, and the capture of layer outputs during a probe pass.

:func:`forward_hooks` registers hooks, yields, and removes every one of them in ``finally`` — after a normal
exit and after an exception alike — so training steps outside a probe pass run without any hook.
:func:`capture` builds on it: each selected layer's output is reduced to [batch, n_neurons] and kept in host
memory as float32, batch by batch; :meth:`Capture.end_batch` checks that every layer ran exactly once and that
no kept output was changed in place later in the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .layers import first_tensor, reduce_output, reduction_for

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
    """Reduced outputs of the hooked layers, collected batch by batch during one probe pass.

    Outputs are kept without a copy where possible: a hook holds a reference to the output (or to its
    reduction) and :meth:`end_batch` checks the tensor's version counter. If the forward pass changed an
    output in place after its hook ran (``ReLU(inplace=True)`` after a recorded ``Linear``), the batch must be
    run again, and from then on that layer is copied inside its hook.

    Attributes:
        outputs: layer name -> list of CPU float32 tensors of shape [batch, n_neurons], one per batch.
        sample_shapes: layer name -> the output shape of one sample before reduction (set on first call).
        copy: names of the layers copied inside the hook (found changed in place before).
    """

    def __init__(self, layers: Mapping[str, nn.Module], copy: Iterable[str] = ()):
        self.layers = dict(layers)
        self.outputs: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self.sample_shapes: dict[str, tuple[int, ...]] = {}
        self.copy = set(copy)
        self._calls = dict.fromkeys(self.layers, 0)
        # layer name -> (reduced output [batch, n_neurons], tensor it views or None, that tensor's version)
        self._pending: dict[str, tuple[torch.Tensor, torch.Tensor | None, int]] = {}

    def hook(self, name: str) -> Hook:
        """The forward hook that records layer ``name``."""
        calls, pending, shapes, copy = self._calls, self._pending, self.sample_shapes, self.copy

        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            t = first_tensor(output, f"Layer {name!r}").detach()
            if name not in shapes:
                shapes[name] = tuple(t.shape[1:])
            r = reduce_output(t)  # [batch, n_neurons]
            if t.ndim >= 3 or not t.is_cpu or t.dtype != torch.float32:
                pending[name] = (r.to(device="cpu", dtype=torch.float32), None, 0)  # a new tensor
            elif name in copy:
                pending[name] = (r.clone(), None, 0)
            else:
                pending[name] = (r, t, t._version)  # a view of t: valid unless t changes in place
            calls[name] += 1

        return record

    def end_batch(self) -> list[str]:
        """Check and keep the outputs of the batch just run.

        Returns:
            Names of layers whose output the forward pass changed in place after their hook ran. If any, the
            batch's outputs are discarded, those layers are added to :attr:`copy`, and the caller must run the
            batch again. Empty when the batch's outputs were kept.

        Raises:
            RuntimeError: a layer did not run (see :data:`NOT_FIRED_HINT`) or ran more than once.
        """
        calls, pending = self._calls, self._pending
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
            changed = [n for n, (_, src, version) in pending.items() if src is not None and src._version != version]
            if changed:
                self.copy.update(changed)
                return changed
            for n, (r, _, _) in pending.items():
                self.outputs[n].append(r)
            return []
        finally:
            pending.clear()
            for n in calls:
                calls[n] = 0

    def reductions(self) -> dict[str, str]:
        """Layer name -> ``"flatten"`` or ``"channel_mean"``, from the observed output shapes."""
        return {n: reduction_for(s) for n, s in self.sample_shapes.items()}


@contextmanager
def capture(layers: Mapping[str, nn.Module], copy: Iterable[str] = ()) -> Iterator[Capture]:
    """Hook ``layers`` for the duration of the block and collect their reduced outputs.

    Args:
        layers: layer name -> module, e.g. from :func:`instrument.layers.resolve_layers`.
        copy: layers known to be changed in place later in the forward pass: copied inside the hook.

    Yields:
        The :class:`Capture` being filled; call :meth:`Capture.end_batch` after each forward pass.
    """
    cap = Capture(layers, copy)
    with forward_hooks([(m, cap.hook(n)) for n, m in cap.layers.items()]):
        yield cap

"""Which layers to record, and how one layer's output becomes one row of neuron values per sample.

Layers are selected once, by exact ``named_modules()`` name, a list of names, a glob (``"fc*"``,
``"encoder.*.mlp"``) or a predicate ``(name, module) -> bool``, and resolved to an ordered
``{name: module}`` whose names are used verbatim in the store and the report. In globs, ``*`` and ``?`` stay
within one dotted part of a name (``"hidden*"`` selects ``hidden1`` but not its child ``hidden1.0``), ``**``
crosses dots (``"encoder.**"`` selects everything below ``encoder``), and ``[...]`` is a character class.

Reductions (recorded per layer in the store):

* ``"flatten"``: outputs of shape [batch, d] or [batch] — every output unit is a neuron;
* ``"channel_mean"``: outputs with a spatial extent, [batch, C, L], [batch, C, H, W], [batch, C, D, H, W]
  (convolutions, pooling, conv batch norm) — the mean over space of each channel is one neuron;
* ``"token_mean"``: sequence outputs [batch, T, D] (transformer blocks, batch-first RNNs) — the mean over
  tokens of each feature is one neuron. Never chosen automatically (a [batch, T, D] output looks like a 1-D
  conv output): ask for it with ``Recorder(reductions={"encoder.*": "token_mean"})``.

Outputs with 3 or more dims get ``"channel_mean"`` unless a reduction is given; others ``"flatten"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Union

import numpy as np
import torch
from torch import nn

from .store import REDUCTIONS

LayerSelector = Union[str, Sequence[str], Callable[[str, nn.Module], bool]]

_GLOB_CHARS = set("*?[")


def unwrap(model: nn.Module) -> nn.Module:
    """The module that does the work: ``model.module`` for (Distributed)DataParallel wrappers, else ``model``.

    Calling a DDP wrapper on one rank alone deadlocks, and its names carry a ``module.`` prefix.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter must be a torch.nn.Module. Got {type(model).__name__} instead.")
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def resolve_layers(model: nn.Module, layers: LayerSelector) -> dict[str, nn.Module]:
    """Resolve a layer selection to ``{name: module}`` in ``named_modules()`` order.

    Args:
        model: the (unwrapped) model.
        layers: an exact module name, a glob pattern, a sequence of names/patterns, or a predicate
            ``(name, module) -> bool``. The root module (name ``""``) is never selected.

    Returns:
        Dict of dotted name -> module, in the order of ``model.named_modules()``.

    Raises:
        ValueError: a name matches no module (the message lists the available names), or nothing is selected.
        TypeError: ``layers`` is none of the accepted kinds.
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    available = [n for n, _ in named]
    if callable(layers) and not isinstance(layers, str):
        chosen = {n for n, m in named if layers(n, m)}
        if not chosen:
            raise ValueError(f"The 'layers' predicate {layers!r} selected no module. Available: {available}")
    else:
        if isinstance(layers, str):
            patterns = [layers]
        elif isinstance(layers, Sequence) and all(isinstance(p, str) for p in layers):
            patterns = list(layers)
        else:
            raise TypeError("The 'layers' parameter must be a module name, a glob, a list of them, or a predicate "
                            f"(name, module) -> bool. Got {layers!r} instead.")
        if not patterns:
            raise ValueError(f"The 'layers' parameter selects no layer (empty list). Available: {available}")
        chosen = set()
        for p in patterns:
            if _GLOB_CHARS & set(p):
                rx = glob_regex(p)
                hits = [n for n in available if rx.fullmatch(n)]
                if not hits:
                    raise ValueError(f"Layer pattern {p!r} matches no layer. Available: {available}")
                chosen.update(hits)
            elif p in available:
                chosen.add(p)
            else:
                raise ValueError(f"Unknown layer {p!r}. Available: {available}")
    return {n: m for n, m in named if n in chosen}


def resolve_reductions(layers: Mapping[str, nn.Module], reductions: Mapping[str, str] | None
                       ) -> dict[str, str]:
    """Resolve ``{layer name or glob: reduction}`` against the selected layers to ``{layer name: reduction}``.

    Raises:
        ValueError: an unknown reduction, or a key that matches no selected layer.
        TypeError: ``reductions`` is not a mapping of str to str.
    """
    if reductions is None:
        return {}
    if not isinstance(reductions, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in reductions.items()):
        raise TypeError(f"The 'reductions' parameter must map layer names or globs to reduction names. "
                        f"Got {reductions!r} instead.")
    out: dict[str, str] = {}
    for key, reduction in reductions.items():
        if reduction not in REDUCTIONS:
            raise ValueError(f"Unknown reduction {reduction!r} for {key!r}. Allowed: {list(REDUCTIONS)}")
        rx = glob_regex(key)
        hits = [n for n in layers if rx.fullmatch(n)]
        if not hits:
            raise ValueError(f"The 'reductions' key {key!r} matches no selected layer. Selected: {list(layers)}")
        out |= dict.fromkeys(hits, reduction)
    return out


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a layer glob: ``*`` and ``?`` do not cross ``.``; ``**`` does; ``[...]`` is a character class."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append(r"[^.]*")
        elif c == "?":
            out.append(r"[^.]")
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def reduction_for(sample_shape: Sequence[int]) -> str:
    """The automatic reduction: ``"channel_mean"`` for shapes with a spatial extent, else ``"flatten"``."""
    return "channel_mean" if len(sample_shape) >= 2 else "flatten"


def n_neurons_for(sample_shape: Sequence[int], reduction: str) -> int:
    """Neurons per sample that ``reduction`` leaves of an output of shape ``sample_shape`` (one sample)."""
    if reduction == "channel_mean":
        return int(sample_shape[0])
    if reduction == "token_mean":
        return int(sample_shape[-1])
    return int(np.prod(sample_shape, dtype=np.int64))


def reduce_output(out: torch.Tensor, reduction: str | None = None) -> torch.Tensor:
    """One row of neuron values per sample.

    Args:
        out: a layer's output, shape [batch, *sample_shape].
        reduction: ``"flatten"``, ``"channel_mean"`` (mean over dims 2.. of [batch, C, *spatial]),
            ``"token_mean"`` (mean over dims 1..-2 of [batch, *tokens, D], for sequence models) or ``None``
            for :func:`reduction_for`'s automatic choice.

    Returns:
        Tensor of shape [batch, n_neurons] (a view where possible).
    """
    reduction = reduction or reduction_for(out.shape[1:])
    if reduction == "channel_mean" and out.ndim >= 3:  # [batch, C, *spatial] -> [batch, C]
        return out.mean(dim=tuple(range(2, out.ndim)))
    if reduction == "token_mean" and out.ndim >= 3:  # [batch, *tokens, D] -> [batch, D]
        return out.mean(dim=tuple(range(1, out.ndim - 1)))
    return out.reshape(out.shape[0], -1)  # [batch] or [batch, d] -> [batch, d]


def first_tensor(out: object, what: str) -> torch.Tensor:
    """The output itself if it is a tensor, else the first tensor of a tuple/list output.

    Raises:
        TypeError: no tensor found; ``what`` names the layer in the message.
    """
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    raise TypeError(f"{what} returned {type(out).__name__}, which holds no tensor to record.")


LogitsSelector = Union[str, Callable[[object], "torch.Tensor"], None]


def select_logits(out: object, logits: LogitsSelector = None) -> torch.Tensor:
    """The logits in a model's output, shape (batch, n_classes).

    Args:
        out: what ``model(x)`` returned: a tensor, a tuple/list, a mapping or an object with attributes (a
            Hugging Face ``ModelOutput`` is both a mapping and has attributes).
        logits: ``None`` takes the output itself or its first tensor; a str takes that key or attribute
            (``"logits"`` for Hugging Face models); a callable is given the output and returns the tensor.

    Raises:
        TypeError: nothing that is a tensor was found where ``logits`` points.
    """
    if logits is None:
        return first_tensor(out, "The model")
    if callable(logits):
        value = logits(out)
        where = f"The 'logits' callable {getattr(logits, '__name__', logits)!r}"
    elif isinstance(out, Mapping) and logits in out:
        value, where = out[logits], f"The model output's key {logits!r}"
    else:
        value, where = getattr(out, logits, None), f"The model output's attribute {logits!r}"
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} must give the logits tensor of shape (batch, n_classes). Got "
                        f"{type(value).__name__} from a {type(out).__name__} output.")
    return value


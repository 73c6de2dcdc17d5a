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
  tokens of each feature is one neuron.

Chosen automatically only where the shape leaves no doubt: [batch] and [batch, d] get ``"flatten"``,
[batch, C, H, W] and [batch, C, D, H, W] ``"channel_mean"``. Any other shape, above all [batch, A, B]
(tokens x features of a transformer block, or channels x length of a 1-D conv), is refused unless
``Recorder(reductions={"encoder.*": "token_mean"})`` names the reduction.

Compiled models: ``torch.compile(model)`` returns a wrapper whose module names carry an ``_orig_mod.`` part
(``_orig_mod.fc1``; ``body._orig_mod.fc1`` for a compiled submodule ``body``). :func:`unwrap` unwraps a compiled
model to its original module, and layer names are used without those parts (``fc1``, ``body.fc1``) in the store
and the report; a selection, a ``reductions`` or an ``outputs`` key is accepted with or without them.

Which tensor of an output is recorded: a layer or model output that holds several tensors (a tuple, list,
mapping, dataclass or Hugging Face ``ModelOutput``, e.g. ``nn.MultiheadAttention``'s ``(out, weights)``)
is refused unless a selector says which one: an int index, a str key or attribute name, or a callable
``output -> tensor`` (``Recorder(outputs={"attn": 0}, logits="logits")``). A tensor, or a structure holding
exactly one tensor, needs no selector.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Union

import numpy as np
import torch
from torch import nn

from .store import REDUCTIONS

LayerSelector = Union[str, Sequence[str], Callable[[str, nn.Module], bool]]
OutputSelector = Union[int, str, Callable[[object], torch.Tensor]]
LogitsSelector = Union[OutputSelector, None]

_GLOB_CHARS = set("*?[")


_COMPILED = "_orig_mod"  # the attribute of torch.compile's wrapper (OptimizedModule) that holds the original module


def _is_compiled_wrapper(module: nn.Module) -> bool:
    """Whether ``module`` is ``torch.compile``'s wrapper (without importing Dynamo: no wrapper exists before it)."""
    dynamo = sys.modules.get("torch._dynamo.eval_frame")
    return dynamo is not None and isinstance(module, dynamo.OptimizedModule)


def unwrap(model: nn.Module) -> nn.Module:
    """The module that does the work, in eager mode: wrappers are taken off, outermost first.

    ``model.module`` for (Distributed)DataParallel wrappers (calling a DDP wrapper on one rank alone deadlocks,
    and its names carry a ``module.`` prefix); ``model._orig_mod`` for ``torch.compile``'s wrapper (the probe
    pass runs the original module, so the compiled training graph never sees it).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"The 'model' parameter must be a torch.nn.Module. Got {type(model).__name__} instead.")
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif _is_compiled_wrapper(model):
            model = getattr(model, _COMPILED)
        else:
            return model


def layer_name(name: str) -> str:
    """A dotted module name without the ``_orig_mod`` parts that ``torch.compile``'s wrappers add."""
    if _COMPILED not in name:
        return name
    return ".".join(part for part in name.split(".") if part != _COMPILED)


def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of every submodule (not the root), in ``named_modules()`` order, names as in the store.

    Names are :func:`layer_name`'s: a compiled submodule ``body`` (``torch.compile``'s wrapper) and its
    original module ``body._orig_mod`` are both ``body``, which maps to the original module (the one whose
    forward hooks fire when the model runs eagerly).
    """
    out: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        name = layer_name(name)
        if name:
            out[name] = module  # a wrapper's original module comes after the wrapper and replaces it
    return out


def resolve_layers(model: nn.Module, layers: LayerSelector) -> dict[str, nn.Module]:
    """Resolve a layer selection to ``{name: module}`` in ``named_modules()`` order.

    Args:
        model: the (unwrapped) model.
        layers: an exact module name, a glob pattern, a sequence of names/patterns, or a predicate
            ``(name, module) -> bool``. The root module (name ``""``) is never selected. Names and patterns
            may carry ``torch.compile``'s ``_orig_mod.`` parts or not (see :func:`named_layers`).

    Returns:
        Dict of dotted name (without ``_orig_mod`` parts) -> module, in the order of ``model.named_modules()``.

    Raises:
        ValueError: a name matches no module (the message lists the available names), or nothing is selected.
        TypeError: ``layers`` is none of the accepted kinds.
    """
    named = list(named_layers(model).items())
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
        for given in patterns:
            p = layer_name(given)  # "_orig_mod.fc1" is "fc1"
            if _GLOB_CHARS & set(p):
                rx = glob_regex(p)
                hits = [n for n in available if rx.fullmatch(n)]
                if not hits:
                    raise ValueError(f"Layer pattern {given!r} matches no layer. Available: {available}")
                chosen.update(hits)
            elif p in available:
                chosen.add(p)
            else:
                raise ValueError(f"Unknown layer {given!r}. Available: {available}")
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
    for key, reduction in reductions.items():
        if reduction not in REDUCTIONS:
            raise ValueError(f"Unknown reduction {reduction!r} for {key!r}. Allowed: {list(REDUCTIONS)}")
    return _per_layer(layers, reductions, "reductions")


def _per_layer(layers: Mapping[str, nn.Module], given: Mapping[str, object], what: str) -> dict[str, object]:
    """``{layer name or glob: value}`` -> ``{layer name: value}`` over the selected layers (later keys win).

    Raises:
        ValueError: a key that matches no selected layer.
    """
    out: dict[str, object] = {}
    for key, value in given.items():
        rx = glob_regex(layer_name(key))
        hits = [n for n in layers if rx.fullmatch(n)]
        if not hits:
            raise ValueError(f"The '{what}' key {key!r} matches no selected layer. Selected: {list(layers)}")
        out |= dict.fromkeys(hits, value)
    return out


def resolve_outputs(layers: Mapping[str, nn.Module], outputs: Mapping[str, OutputSelector] | None
                    ) -> dict[str, OutputSelector]:
    """Resolve ``{layer name or glob: selector}`` against the selected layers to ``{layer name: selector}``.

    A selector says which tensor of a layer output that holds several is recorded: an int index, a str key or
    attribute name, or a callable ``output -> tensor`` (see :func:`select_output`).

    Raises:
        ValueError: a key that matches no selected layer.
        TypeError: ``outputs`` is not a mapping of str to selectors.
    """
    if outputs is None:
        return {}
    if not isinstance(outputs, Mapping) or not all(isinstance(k, str) and _is_selector(v)
                                                   for k, v in outputs.items()):
        raise TypeError(f"The 'outputs' parameter must map layer names or globs to an int index, a str key or "
                        f"attribute name, or a callable output -> tensor. Got {outputs!r} instead.")
    return _per_layer(layers, outputs, "outputs")


def _is_selector(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str) or callable(value)


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


def reduction_for(sample_shape: Sequence[int], layer: str | None = None) -> str:
    """The automatic reduction for an output of shape [batch, *sample_shape], where the shape leaves no doubt.

    [batch] and [batch, d] give ``"flatten"``; [batch, C, H, W] and [batch, C, D, H, W] (2-D and 3-D conv
    maps) give ``"channel_mean"``.

    Args:
        sample_shape: the output shape of one sample (without the batch axis).
        layer: the layer's name, for the message.

    Raises:
        ValueError: any other shape, above all [batch, A, B] (tokens x features, or channels x length); the
            one-line message lists what ``token_mean``, ``channel_mean`` and ``flatten`` would give and how to
            pass the choice.
    """
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) <= 1:
        return "flatten"
    if len(shape) in (3, 4):
        return "channel_mean"
    dims = ", ".join(map(str, shape))
    tokens, positions = int(np.prod(shape[:-1])), int(np.prod(shape[1:]))
    what = f"Layer {layer!r} outputs" if layer is not None else "An output of shape"
    how = f"reductions={{{layer!r}: <reduction>}}" if layer is not None else "a reduction"
    guess = " (tokens x features, or channels x length?)" if len(shape) == 2 else ""
    raise ValueError(f"{what} [batch, {dims}], which has no automatic reduction{guess}. Pass {how}: "
                     f"'token_mean' gives {shape[-1]} neurons (the mean over {tokens} tokens), 'channel_mean' "
                     f"{shape[0]} neurons (the mean over {positions} positions), 'flatten' "
                     f"{n_neurons_for(shape, 'flatten')} neurons.")


def choose_reduction(layer: str, sample_shape: Sequence[int], reduction: str | None = None) -> str:
    """The reduction for ``layer``: the one given (checked against the shape), else :func:`reduction_for`'s.

    Raises:
        ValueError: no reduction given for an ambiguous shape, or a mean reduction for [batch] or [batch, d].
    """
    if reduction is None:
        return reduction_for(sample_shape, layer)
    if reduction != "flatten" and len(sample_shape) < 2:
        raise ValueError(f"Layer {layer!r}: reduction {reduction!r} needs outputs with at least 2 dims per "
                         f"sample. Got per-sample shape {tuple(sample_shape)}.")
    return reduction


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

    Raises:
        ValueError: ``reduction`` is None and the shape has no automatic reduction (e.g. [batch, A, B]).
    """
    reduction = reduction or reduction_for(out.shape[1:])
    if reduction == "channel_mean" and out.ndim >= 3:  # [batch, C, *spatial] -> [batch, C]
        return out.mean(dim=tuple(range(2, out.ndim)))
    if reduction == "token_mean" and out.ndim >= 3:  # [batch, *tokens, D] -> [batch, D]
        return out.mean(dim=tuple(range(1, out.ndim - 1)))
    return out.reshape(out.shape[0], -1)  # [batch] or [batch, d] -> [batch, d]


def output_tensors(out: object, path: str = "") -> list[tuple[str, torch.Tensor]]:
    """Every tensor in an output, depth first, with the path that reaches it.

    Tuples and lists give ``[0]``, mappings (a Hugging Face ``ModelOutput`` is one) ``['logits']``,
    dataclasses ``.logits``; nested ones concatenate (``[1][0]``). A tensor output gives ``[("", out)]``.
    """
    if isinstance(out, torch.Tensor):
        return [(path, out)]
    if isinstance(out, Mapping):
        items = [(f"{path}[{k!r}]", v) for k, v in out.items()]
    elif isinstance(out, (tuple, list)):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(out)]
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = [(f"{path}.{f.name}", getattr(out, f.name)) for f in dataclasses.fields(out)]
    else:
        return []
    return [found for p, v in items for found in output_tensors(v, p)]


def select_logits(out: object, logits: LogitsSelector = None) -> torch.Tensor:
    """The logits in a model's output (shape checked by the caller: (batch, n_classes)).

    Args:
        out: what ``model(x)`` returned: a tensor, a tuple/list, a mapping (a Hugging Face ``ModelOutput``) or
            a dataclass.
        logits: ``None`` takes the output's only tensor; an int takes that entry (of a tuple/list, or of a
            mapping's or dataclass's values in order); a str takes that key or attribute (``"logits"`` for
            Hugging Face models); a callable is given the output and returns the tensor.

    Raises:
        ValueError: ``logits`` is None and the output holds several tensors (the message lists them with
            their shapes), or an index is out of range.
        TypeError: the output holds no tensor, or ``logits`` points at no tensor.
    """
    return _select(out, logits, "The model", lambda v: f"logits={v}", "are the logits")


def select_layer_output(out: object, layer: str, selector: OutputSelector | None = None) -> torch.Tensor:
    """The tensor to record of layer ``layer``'s output, shape [batch, ...]; ``selector`` as in :func:`select_logits`.

    Raises:
        ValueError: ``selector`` is None and the output holds several tensors (the message lists them with
            their shapes and says to pass ``outputs={layer: <index>}``), or an index is out of range.
        TypeError: the output holds no tensor, or ``selector`` points at no tensor.
    """
    return _select(out, selector, f"Layer {layer!r}", lambda v: f"outputs={{{layer!r}: {v}}}", "to record")


def _listing(found: list[tuple[str, torch.Tensor]]) -> str:
    return ", ".join(f"{p or 'the output'} shape {tuple(t.shape)}" for p, t in found)


def _select(out: object, selector: OutputSelector | None, what: str, how: Callable[[str], str], purpose: str
            ) -> torch.Tensor:
    """One tensor of ``out``; ``what`` says who returned it, ``how(value)`` how the selector is passed."""
    if selector is None:
        if isinstance(out, torch.Tensor):
            return out
        found = output_tensors(out)
        if len(found) == 1:
            return found[0][1]
        if not found:
            raise TypeError(f"{what} returned {type(out).__name__}, which holds no tensor to record.")
        if isinstance(out, (tuple, list)):
            kind, other = "<index>", "a key/callable"
        elif isinstance(out, Mapping):
            kind, other = "<key>", "an index/callable"
        else:
            kind, other = "<attribute>", "an index/callable"
        raise ValueError(f"{what} returns {len(found)} tensors: {_listing(found)}. Pass {how(kind)} (or {other}) "
                         f"to say which {purpose}.")
    where = f"the {type(out).__name__} that {what[0].lower()}{what[1:]} returns"
    if isinstance(selector, str) or not callable(selector):
        passed = how(repr(selector))
        if isinstance(out, torch.Tensor):
            raise TypeError(f"{passed} picks from a tuple, list, mapping or dataclass output, but {what[0].lower()}"
                            f"{what[1:]} returns a single tensor of shape {tuple(out.shape)}. Leave it unset.")
        if isinstance(selector, str):
            if isinstance(out, Mapping) and selector in out:
                value = out[selector]
            elif not isinstance(out, Mapping) and hasattr(out, selector):
                value = getattr(out, selector)
            else:
                raise TypeError(f"{passed}: no key or attribute {selector!r} in {where}. It holds "
                                f"{_listing(output_tensors(out)) or 'no tensor'}.")
        else:
            if isinstance(out, Mapping) and selector in out:
                entries = [out[selector]]
                selector = 0
            elif isinstance(out, (tuple, list)):
                entries = list(out)
            elif isinstance(out, Mapping):
                entries = list(out.values())
            elif dataclasses.is_dataclass(out) and not isinstance(out, type):
                entries = [getattr(out, f.name) for f in dataclasses.fields(out)]
            else:
                raise TypeError(f"{passed}: {where} cannot be indexed. Pass a str attribute name or a callable.")
            if not -len(entries) <= selector < len(entries):
                raise ValueError(f"{passed}: index {selector} is out of range for the {len(entries)} entries of "
                                 f"{where}. It holds {_listing(output_tensors(out)) or 'no tensor'}.")
            value = entries[selector]
    else:
        passed = how(getattr(selector, "__name__", repr(selector)))
        value = selector(out)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{passed} must give a tensor. Got {type(value).__name__} from {where}.")
    return value

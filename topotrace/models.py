"""The built-in models of ``topotrace train``: ``[model] kind = "mlp" | "cnn" | "resnet" | "transformer"``.

Every model takes flat inputs ``[batch, n_features]`` (what the data sets give) and views them in the data's
``input_shape`` (``Dataset.input_shape``: digits ``(1, 8, 8)``, MNIST-1D ``(1, 40)``); it returns logits
``[batch, n_classes]``. Each names the modules worth recording (docs/models.md):

* ``mlp``: ``hidden1``, ``hidden2``, ... (Linear, [BatchNorm], ReLU, [Dropout]) — one neuron per unit;
* ``cnn``: ``conv1``, ``conv2``, ... (Conv1d or Conv2d by the data, stride 2, [BatchNorm], ReLU) — one neuron
  per channel (the mean over positions, ``channel_mean``);
* ``resnet``: ``block1``, ``block2``, ... residual blocks with BatchNorm — one neuron per channel;
* ``transformer``: ``block1``, ``block2``, ... pre-norm encoder blocks over tokens (digits: 8 rows of 8 pixels,
  MNIST-1D: 40 positions of 1 value) — one neuron per feature (the mean over tokens, ``token_mean``).

The encoder block is written out here (attention from Linear layers and a softmax) rather than taken from
``nn.TransformerEncoderLayer``, whose fused inference path skips the hooks of its submodules.

:data:`BUILDERS` is the one registry ``{kind: builder}``; the parameters and their defaults live in
:data:`topotrace.config.MODEL_KINDS` (the config is checked without importing torch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .config import MODEL_KINDS


class MLP(nn.Module):
    """A plain multi-layer perceptron; hidden layer ``i`` is the module ``hidden{i+1}`` (Linear, [BN], ReLU, [Dropout]).

    Recording ``hidden*`` gives each hidden layer's activity after the non-linearity.
    """

    def __init__(self, n_in: int, hidden: list[int], n_out: int, dropout: float = 0.0, batchnorm: bool = False):
        super().__init__()
        width = n_in
        for i, h in enumerate(hidden):
            parts: list[nn.Module] = [nn.Linear(width, h)]
            if batchnorm:
                parts.append(nn.BatchNorm1d(h))
            parts.append(nn.ReLU())
            if dropout > 0:
                parts.append(nn.Dropout(dropout))
            self.add_module(f"hidden{i + 1}", nn.Sequential(*parts))
            width = h
        self.out = nn.Linear(width, n_out)
        self.n_hidden = len(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, n_in] -> [batch, n_out]
        for i in range(self.n_hidden):
            x = getattr(self, f"hidden{i + 1}")(x)
        return self.out(x)


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv1d if dims == 1 else nn.Conv2d


def _bn(dims: int) -> type[nn.Module]:
    return nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d


def _spatial(input_shape: Sequence[int]) -> tuple[int, int]:
    """(channels, spatial dims) of ``input_shape`` = (C, L) or (C, H, W)."""
    if len(input_shape) not in (2, 3):
        raise ValueError(f"Convolutional models need inputs of shape (channels, length) or (channels, height, "
                         f"width); the data give {tuple(input_shape)}.")
    return int(input_shape[0]), len(input_shape) - 1


class CNN(nn.Module):
    """Convolution blocks ``conv1``, ``conv2``, ... (Conv, [BN], ReLU), then the flattened map to the logits.

    Each block halves the length (or height and width) with stride 2 and ``padding = kernel_size // 2``.
    1-D (Conv1d) for inputs (C, L), 2-D (Conv2d) for (C, H, W).

    Args:
        input_shape: one sample's shape, (C, L) or (C, H, W).
        n_classes: logits.
        channels: output channels of each block.
        kernel_size: the kernel's length (or side).
        dropout: dropout before the last Linear layer (0: none).
        batchnorm: BatchNorm after each convolution.
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, channels: Sequence[int], kernel_size: int = 3,
                 dropout: float = 0.0, batchnorm: bool = False):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        width, dims = _spatial(self.input_shape)
        size = list(self.input_shape[1:])
        for i, c in enumerate(channels):
            parts: list[nn.Module] = [_conv(dims)(width, c, kernel_size, stride=2, padding=kernel_size // 2)]
            if batchnorm:
                parts.append(_bn(dims)(c))
            parts.append(nn.ReLU())
            self.add_module(f"conv{i + 1}", nn.Sequential(*parts))
            size = [(s + 2 * (kernel_size // 2) - kernel_size) // 2 + 1 for s in size]
            width = c
        self.n_blocks = len(channels)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.Linear(width * math.prod(size), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, n_features] -> [batch, n_classes]
        x = x.reshape(len(x), *self.input_shape)
        for i in range(self.n_blocks):
            x = getattr(self, f"conv{i + 1}")(x)  # [batch, C_i, *size_i]
        return self.out(self.drop(x.flatten(1)))


class ResidualBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is a 1x1 conv + BN when the shape changes.

    Args:
        dims: 1 or 2 (Conv1d or Conv2d).
        c_in: input channels.
        c_out: output channels.
        stride: stride of the first convolution (2 halves the length or side).
    """

    def __init__(self, dims: int, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        conv, bn = _conv(dims), _bn(dims)
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = bn(c_out)
        self.relu = nn.ReLU()
        self.shortcut = (nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), bn(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, c_in, *size] -> [batch, c_out, *size / stride]
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """A small residual network: a stem, residual blocks ``block1``, ``block2``, ..., average pooling, a Linear layer.

    The stem is a 3-wide conv, BN and ReLU; the pooling is global (the mean over positions). Stage ``s`` has
    ``blocks`` residual blocks of ``channels[s]`` channels; the first block of every stage after the first halves
    the length (or side).

    Args:
        input_shape: one sample's shape, (C, L) or (C, H, W).
        n_classes: logits.
        channels: channels of each stage.
        blocks: residual blocks per stage.
        dropout: dropout before the last Linear layer (0: none).
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, channels: Sequence[int], blocks: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        c_in, dims = _spatial(self.input_shape)
        self.stem = nn.Sequential(_conv(dims)(c_in, channels[0], 3, padding=1, bias=False), _bn(dims)(channels[0]),
                                  nn.ReLU())
        width, n = channels[0], 0
        for s, c in enumerate(channels):
            for b in range(blocks):
                n += 1
                self.add_module(f"block{n}", ResidualBlock(dims, width, c, stride=2 if s > 0 and b == 0 else 1))
                width = c
        self.n_blocks = n
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, n_features] -> [batch, n_classes]
        x = self.stem(x.reshape(len(x), *self.input_shape))
        for i in range(self.n_blocks):
            x = getattr(self, f"block{i + 1}")(x)
        return self.out(self.drop(x.flatten(2).mean(2)))  # global average pooling: [batch, C]


class SelfAttention(nn.Module):
    """Multi-head self-attention written out: ``softmax(q k^T / sqrt(d_head)) v`` per head, then a Linear layer.

    Args:
        d_model: features per token.
        heads: attention heads (``d_model`` must be a multiple).
    """

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, T, d_model] -> [batch, T, d_model]
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # [b, h, T, dh]
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)  # [b, h, T, T]
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, d))


class EncoderBlock(nn.Module):
    """A pre-norm transformer encoder block: ``x + attn(ln1(x))``, then ``x + ff(ln2(x))`` (ff: Linear, GELU, Linear).

    Args:
        d_model: features per token.
        heads: attention heads.
        ff: width of the feed-forward layer.
        dropout: dropout after attention and after the feed-forward layer (0: none).
    """

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, T, d_model] -> [batch, T, d_model]
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.ff(self.ln2(x)))


class Transformer(nn.Module):
    """A small transformer encoder over tokens: ``embed``, blocks ``block1``, ``block2``, ..., a Linear layer.

    ``embed`` is a convolution over the tokens (``kernel_size`` neighbouring tokens make one embedding; 1: each
    token alone, a Linear layer) plus learned positions; after the blocks come a LayerNorm, the mean over tokens and
    the Linear layer to the logits. Tokens: a (C, L) input is L tokens of C values (MNIST-1D: 40 positions of 1
    value); a (C, H, W) input is H tokens of C*W values (digits: 8 rows of 8 pixels).

    Args:
        input_shape: one sample's shape, (C, L) or (C, H, W).
        n_classes: logits.
        d_model: features per token.
        heads: attention heads (``d_model`` must be a multiple).
        blocks: encoder blocks.
        ff: width of each block's feed-forward layer.
        dropout: dropout in the blocks (0: none).
        kernel_size: tokens seen by each token's embedding (odd keeps them centred; MNIST-1D's single values
            gain from 5: about 94 % instead of about 55 % held-out accuracy in configs/mnist1d_transformer.toml).
    """

    def __init__(self, input_shape: Sequence[int], n_classes: int, d_model: int = 32, heads: int = 4,
                 blocks: int = 2, ff: int = 64, dropout: float = 0.0, kernel_size: int = 1):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        c, _ = _spatial(self.input_shape)
        if len(self.input_shape) == 2:
            self.n_tokens, token_dim = self.input_shape[1], c
        else:
            self.n_tokens, token_dim = self.input_shape[1], c * self.input_shape[2]
        self.embed = nn.Conv1d(token_dim, d_model, kernel_size, padding=kernel_size // 2)  # over the tokens
        self.pos = nn.Parameter(torch.randn(self.n_tokens, d_model) * 0.02)
        for i in range(blocks):
            self.add_module(f"block{i + 1}", EncoderBlock(d_model, heads, ff, dropout))
        self.n_blocks = blocks
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, n_classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Flat inputs [batch, n_features] as tokens [batch, T, token_dim]."""
        x = x.reshape(len(x), *self.input_shape)
        if x.ndim == 3:  # [batch, C, L] -> [batch, L, C]
            return x.transpose(1, 2)
        return x.permute(0, 2, 1, 3).flatten(2)  # [batch, C, H, W] -> [batch, H, C*W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, n_features] -> [batch, n_classes]
        x = self.embed(self.tokens(x).transpose(1, 2))[..., : self.n_tokens].transpose(1, 2) + self.pos  # [b, T, d]
        for i in range(self.n_blocks):
            x = getattr(self, f"block{i + 1}")(x)
        return self.out(self.norm(x).mean(1))


def _mlp(m: Mapping, input_shape: Sequence[int], n_classes: int) -> nn.Module:
    return MLP(math.prod(input_shape), list(m["hidden"]), n_classes, m["dropout"], m["batchnorm"])


def _cnn(m: Mapping, input_shape: Sequence[int], n_classes: int) -> nn.Module:
    return CNN(input_shape, n_classes, list(m["channels"]), m["kernel_size"], m["dropout"], m["batchnorm"])


def _resnet(m: Mapping, input_shape: Sequence[int], n_classes: int) -> nn.Module:
    return ResNet(input_shape, n_classes, list(m["channels"]), m["blocks"], m["dropout"])


def _transformer(m: Mapping, input_shape: Sequence[int], n_classes: int) -> nn.Module:
    return Transformer(input_shape, n_classes, m["d_model"], m["heads"], m["blocks"], m["ff"], m["dropout"],
                       m["kernel_size"])


# The one registry: kind -> builder(model settings, input_shape, n_classes). Parameters: config.MODEL_KINDS.
BUILDERS: dict[str, Callable[[Mapping, Sequence[int], int], nn.Module]] = {
    "mlp": _mlp, "cnn": _cnn, "resnet": _resnet, "transformer": _transformer,
}
# How a recorded output of more than one dim per sample becomes neurons, per kind (docs/models.md).
REDUCTIONS = {"mlp": None, "cnn": "channel_mean", "resnet": "channel_mean", "transformer": "token_mean"}
assert set(BUILDERS) == set(MODEL_KINDS) == set(REDUCTIONS), "every model kind has a builder and its parameters"


def build_model(m: Mapping, input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """The model the ``[model]`` settings ask for.

    Args:
        m: the ``model`` section of a config from :func:`topotrace.config.load_config` (``kind`` and its parameters).
        input_shape: one sample's shape (``Dataset.input_shape``), e.g. (1, 8, 8) or (1, 40).
        n_classes: logits.

    Raises:
        ValueError: an unknown kind (the message lists the known ones).
    """
    kind = m.get("kind", "mlp")
    if kind not in BUILDERS:
        raise ValueError(f"The 'model.kind' setting must be one of {list(BUILDERS)}. Got {kind!r} instead.")
    return BUILDERS[kind](m, input_shape, n_classes)


def describe_model(m: Mapping, input_shape: Sequence[int]) -> str:
    """One line naming the architecture, e.g. ``"cnn: Conv1d blocks of [32, 32] channels, kernel 5"``."""
    kind = m.get("kind", "mlp")
    dims = len(input_shape) - 1
    if kind == "mlp":
        return f"mlp: hidden layers {list(m['hidden'])}" + (", BatchNorm" if m["batchnorm"] else "")
    if kind == "cnn":
        return (f"cnn: Conv{dims}d blocks of {list(m['channels'])} channels, kernel {m['kernel_size']}, stride 2"
                + (", BatchNorm" if m["batchnorm"] else ""))
    if kind == "resnet":
        return f"resnet: {m['blocks']} residual block(s) per stage of {list(m['channels'])} channels (Conv{dims}d, " \
               "BatchNorm)"
    return (f"transformer: {m['blocks']} encoder block(s), d_model {m['d_model']}, {m['heads']} heads, "
            f"feed-forward {m['ff']}, token embedding over {m['kernel_size']} token(s)")


def layer_reductions(m: Mapping, input_shape: Sequence[int], n_classes: int, layers: Sequence[str]
                     ) -> dict[str, str] | None:
    """The ``reductions`` the recorder needs for the selected layers of a built-in model.

    Outputs of one dim per sample need none; outputs with more (conv maps [batch, C, *space], token sequences
    [batch, T, D]) get the kind's reduction (``channel_mean`` or ``token_mean``). The shapes come from one forward
    pass of a copy on the meta device (no computation, no random numbers drawn).

    Args:
        m: the ``model`` settings.
        input_shape: one sample's shape.
        n_classes: logits.
        layers: the selected layer names (``resolve_layers``).

    Returns:
        ``{layer: reduction}``, or ``None`` when no layer needs one (the MLP: the recorder's own choice).
    """
    reduction = REDUCTIONS[m.get("kind", "mlp")]
    if reduction is None:
        return None
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = build_model(m, input_shape, n_classes).eval()
    ndims: dict[str, int] = {}

    def hook(name: str) -> Callable:
        return lambda mod, args, out: ndims.__setitem__(name, getattr(out, "ndim", 2))

    handles = [mod.register_forward_hook(hook(name)) for name, mod in model.named_modules() if name in layers]
    try:
        with torch.no_grad():
            model(torch.empty(2, math.prod(input_shape), device="meta"))
    finally:
        for h in handles:
            h.remove()
    out = {name: reduction for name in layers if ndims.get(name, 2) > 2}
    return out or None

"""Map values as the report ships them: 8-bit codes on each map's colour range, and their error bound.

A map is drawn through a colour scale of 256 levels, so the page ships each value source (a layer's NAPs of one
grouping, or its correlations with one confidence measure; shape (S, G, N)) as ``uint8`` codes instead of
float32. Codes 0..254 lie evenly on ``[low, high]``::

    step = (high - low) / 254,    value = low + code * step,    code 255 = no value (NaN: an empty group)

``[low, high]`` is the colour range the maps use (:func:`topotrace.report_templates.style.activation_scale` for
activations, ``±corr_fit_limit`` for correlations), widened to the data where a value lies outside it (never for
an analysis made by topotrace: its colour limit is the largest |value|). A decoded value is within ``step / 2``
of the analysis value (:attr:`Quantized.bound`), and so is every map pixel (a convex combination of neuron
values): that is less than one colour level ``(high - low) / 256``, so every pixel's colour is the float
path's or its neighbour in the palette. The contrast view subtracts the mean over groups of decoded values:
its error is at most ``step * (1 - 1/G)``. ``render_maps.js`` decodes in the browser with the same formula.

The codes are also stored as differences from the previous snapshot (modulo 256; :func:`delta_encode`): maps
change little from one snapshot to the next, so Bokeh's gzip of the buffer shrinks them further; the browser
adds them up once per source (:func:`delta_decode` is the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVELS = 255  # codes 0..254 carry values
NAN_CODE = 255  # no value


@dataclass(frozen=True)
class Quantized:
    """One value source as shipped.

    Attributes:
        codes: uint8 array of the values' shape; :data:`NAN_CODE` where the value is not finite.
        low: value of code 0.
        step: value difference between neighbouring codes, ``(high - low) / 254``.
    """

    codes: np.ndarray
    low: float
    step: float

    @property
    def bound(self) -> float:
        """Largest difference between a decoded value (or map pixel) and the analysis value: ``step / 2``."""
        return self.step / 2

    def decode(self) -> np.ndarray:
        """The values as the browser sees them: float64 array of the codes' shape, NaN for :data:`NAN_CODE`."""
        out = self.low + self.codes.astype(np.float64) * self.step
        out[self.codes == NAN_CODE] = np.nan
        return out


def quantize(values: np.ndarray, low: float, high: float) -> Quantized:
    """Codes of ``values`` (any shape) on ``[low, high]``, widened to the finite values where they lie outside.

    Args:
        values: array of any shape; NaN and infinite values become :data:`NAN_CODE`.
        low: the low end of the colour range the maps draw the values over.
        high: its high end (``> low``).
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    low, high = float(low), float(high)
    if finite.any():
        low, high = min(low, float(v[finite].min())), max(high, float(v[finite].max()))
    if not high > low:
        high = low + 1.0
    step = (high - low) / (LEVELS - 1)
    codes = np.full(v.shape, NAN_CODE, dtype=np.uint8)
    codes[finite] = np.clip(np.rint((v[finite] - low) / step), 0, LEVELS - 1).astype(np.uint8)
    return Quantized(codes, low, step)


def delta_encode(codes: np.ndarray) -> np.ndarray:
    """Codes of shape (S, ...) as differences from the previous snapshot, modulo 256 (the first row as is)."""
    c = np.asarray(codes, dtype=np.uint8)
    out = c.copy()
    out[1:] = c[1:] - c[:-1]  # uint8 arithmetic wraps modulo 256
    return out


def delta_decode(deltas: np.ndarray) -> np.ndarray:
    """Inverse of :func:`delta_encode` (the browser does the same once per value source)."""
    return np.cumsum(np.asarray(deltas, dtype=np.uint8), axis=0, dtype=np.uint8)


def precision_text(bound: float) -> str:
    """The bound rounded up to one significant digit, as shown next to hovered values (e.g. ``"0.005"``)."""
    if not bound > 0 or not math.isfinite(bound):
        return "0"
    exp = math.floor(math.log10(bound))
    digit = math.ceil(round(bound / 10.0**exp, 9))
    if digit == 10:
        digit, exp = 1, exp + 1
    return f"{digit * 10.0**exp:.{max(0, -exp)}f}"


def value_format(bound: float) -> str:
    """Bokeh tooltip number format that shows a value to the digit of its bound (``"0.000"`` for ±0.005)."""
    if not bound > 0 or not math.isfinite(bound):
        return "0.000"
    decimals = max(0, -math.floor(math.log10(bound)))
    return "0" if decimals == 0 else "0." + "0" * decimals

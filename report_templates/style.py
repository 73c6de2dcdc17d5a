"""The report's look, shared by every figure module and the PNG export: palettes, colour scales, safe text.

Owns the one palette interpolator (:func:`interpolate_palette`) behind the diverging and the sequential palette
and the RGB arrays of the PNG export; the colour scale and limits of a layer's maps (:func:`activation_scale`,
:func:`contrast_limit`, :func:`corr_fit_limit`) and the binning of values into a palette the way Bokeh's
``LinearColorMapper`` does it (:func:`color_index`); the escaping of run text (:func:`esc` for Div HTML,
:func:`plain` for titles and labels); and the styled ``Div`` every figure module uses (:func:`html_div`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
from bokeh.models import Div, InlineStyleSheet
from bokeh.palettes import RdBu11, Reds9

from ..analysis.results import LayerResult


def palette_rgb(palette: Sequence[str] | None = None) -> np.ndarray:
    """A palette of hex colours (default: the report's diverging one) as an array of shape (n, 3), uint8."""
    palette = diverging_palette() if palette is None else palette
    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in palette], dtype=np.uint8)


def interpolate_palette(anchors: Sequence[str], n: int = 256) -> np.ndarray:
    """``n`` colours running evenly through the hex ``anchors`` (linear in RGB, rounded), shape (n, 3), uint8."""
    base = palette_rgb(anchors).astype(np.float64)
    pos = np.linspace(0.0, len(base) - 1, n)
    lo = np.floor(pos).astype(int).clip(0, len(base) - 2)
    frac = (pos - lo)[:, None]
    return np.rint(base[lo] * (1 - frac) + base[lo + 1] * frac).astype(np.uint8)


def palette_hex(rgb: np.ndarray) -> list[str]:
    """An array of shape (n, 3) of RGB values in [0, 255] as ``n`` hex colours (what Bokeh mappers take)."""
    return ["#%02x%02x%02x" % tuple(int(v) for v in c) for c in rgb]


def _blue_to_red(colors: Sequence[str]) -> tuple[str, ...]:
    """The colours from blue to red, whichever way the palette module lists them."""
    first = palette_rgb(colors[:1])[0]
    return tuple(colors[::-1]) if first[0] > first[2] else tuple(colors)


def _white_to_dark_red(colors: Sequence[str]) -> tuple[str, ...]:
    """Pure white, then the reds from light to dark without their near-white end, whichever way they are listed."""
    reds = palette_rgb(colors).astype(np.float64)
    light_to_dark = [colors[i] for i in np.argsort(-reds.sum(axis=1))]
    return ("#ffffff", *light_to_dark[1:])


DIVERGING_ANCHORS = _blue_to_red(RdBu11)  # RdBu11 from blue through white to red
SEQUENTIAL_ANCHORS = _white_to_dark_red(Reds9)  # pure white, then Reds9 from light to dark
OFF_MAP = "#d4d4d4"  # background of the off-map area: light grey, unlike the white of zero (report, figures, PNG)


def diverging_palette(n: int = 256) -> list[str]:
    """Blue (negative) - white (zero) - red (positive) palette of ``n`` hex colours, interpolated from RdBu11."""
    return palette_hex(interpolate_palette(DIVERGING_ANCHORS, n))


def sequential_palette(n: int = 256) -> list[str]:
    """White (zero) to dark red (the limit) palette of ``n`` hex colours, interpolated from white and Reds9."""
    return palette_hex(interpolate_palette(SEQUENTIAL_ANCHORS, n))


def color_index(values: np.ndarray, low: float, high: float, n: int = 256) -> np.ndarray:
    """Palette index of each value as Bokeh's LinearColorMapper bins it over [low, high]; NaN -> -1."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.floor((v - low) / (high - low) * n)
    idx = np.clip(np.nan_to_num(idx, nan=0.0), 0, n - 1).astype(np.int64)
    return np.where(np.isnan(v), -1, idx)


def _usable(limit: float) -> float:
    """A colour limit that draws: a dead layer (limit 0 or NaN) still gets the scale 1.0."""
    return float(limit) if np.isfinite(limit) and limit > 0 else 1.0


def activation_scale(layer: LayerResult) -> tuple[list[str], float, float]:
    """Palette and (low, high) of the layer's raw-activation maps, the same for every snapshot and group.

    Non-negative layers: white -> dark red over [0, color_limit]; others: blue - white - red over
    [-color_limit, +color_limit]. The PNG export uses exactly this mapping.
    """
    limit = _usable(layer.color_limit)
    if layer.nonnegative:
        return sequential_palette(), 0.0, limit
    return diverging_palette(), -limit, limit


def contrast_limit(layer: LayerResult) -> float:
    """Symmetric colour limit of contrast-normalised maps (each neuron's mean over the groups subtracted)."""
    return _usable(layer.color_limit_contrast)


def corr_fit_limit(layer: LayerResult, measure: str) -> float:
    """Symmetric colour limit of the layer's correlation maps with ``measure`` in the "fit to data" view.

    The largest finite |r| over all snapshots, neurons and both maps (overall and within class), so one scale
    serves every snapshot; 1.0 when there is none (or it is 0).
    """
    cr = (layer.corr or {}).get(measure)
    if cr is None:
        return 1.0
    top = 0.0
    for r in (cr.pearson, cr.pearson_within):
        a = np.abs(np.asarray(r, np.float64))
        a = a[np.isfinite(a)]
        if a.size:
            top = max(top, float(a.max()))
    return _usable(min(top, 1.0))


def esc(value: object) -> str:
    """Text from a run, made safe for Div HTML."""
    return html.escape(str(value), quote=True)


def plain(value: object) -> str:
    """Run text for a Bokeh title, axis label or colour-bar title, kept from being read as TeX.

    BokehJS typesets strings delimited by double dollars, backslash-bracket or backslash-parenthesis with
    MathJax, which it would fetch over the network; a zero-width space between the delimiter's characters keeps the
    text plain.
    """
    text = str(value)
    for pair in ("$$", "\\[", "\\]", "\\(", "\\)"):
        text = text.replace(pair, pair[0] + "\u200b" + pair[1])
    return text


# Divs render in their own shadow DOM, so the page's stylesheet does not reach inside; each Div gets this sheet.
_DIV_CSS = """
:host { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
        "Liberation Sans", sans-serif; color: #1f2328; }
.tt-layer { margin: 12px 0 2px; color: #444c56; font-size: 13.5px; }
.tt-sub { margin: 10px 0 0; font-size: 14px; font-weight: 600; }
.tt-ctl { display: inline-block; padding-top: 7px; color: #57606a; font-size: 13px; }
.tt-steplabel { display: inline-block; padding-top: 6px; font-size: 14px; font-variant-numeric: tabular-nums;
                min-width: 270px; }
.tt-key { white-space: nowrap; margin-right: 6px; }
.tt-key span { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 3px;
               vertical-align: -1px; }
"""


def html_div(text: str, **kw) -> Div:
    """A Div of trusted HTML (callers escape run text with :func:`esc`); TeX typesetting off."""
    return Div(text=text, disable_math=True, stylesheets=[InlineStyleSheet(css=_DIV_CSS)], **kw)


"""Static PNG export of one topographic map with its colour bar, for papers (Pillow only, no matplotlib).

The picture uses the report's colour mapping exactly (:func:`.style.activation_scale`): for a layer whose
activations are never negative the sequential white-to-dark-red palette over [0, limit], otherwise the diverging
palette over [-limit, +limit]; the contrast view (each neuron's mean over the groups subtracted) uses the diverging
palette over the layer's contrast limit. Values are binned like Bokeh's ``LinearColorMapper``
(:func:`.style.color_index`). Pixels outside the layout's region are light grey (:data:`.style.OFF_MAP`), unlike
zero's white. Geometry (in output pixels; ``H, W`` = the operator's grid, ``scale`` = pixels per grid cell)::

    title band of TITLE_H px
    map:        x in [MARGIN, MARGIN + W*scale),  y in [TITLE_H, TITLE_H + H*scale)   (grid row 0 at the bottom)
    colour bar: x in [bar_x, bar_x + BAR_W) with bar_x = MARGIN + W*scale + GAP, same rows as the map,
                the scale's high end at the top, its low end at the bottom, tick labels to its right.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from ..analysis.naps import contrast_normalise
from ..analysis.results import AnalysisResults
from .outputs import atomic_output
from .style import OFF_MAP, activation_scale, color_index, contrast_limit, diverging_palette, palette_rgb

MARGIN = 10
TITLE_H = 30
GAP = 14
BAR_W = 16
LABEL_W = 64


def _resolve_group(names: list[str], group: int | str) -> int:
    if isinstance(group, (bool, float)) or not isinstance(group, (int, np.integer, str)):
        raise TypeError(f"The 'group' parameter must be an int index or a group name. Got {type(group).__name__}.")
    if isinstance(group, str):
        if group in names:
            return names.index(group)
        try:
            group = int(group)
        except ValueError:
            raise ValueError(f"The 'group' parameter must be one of {names} or an index. Got {group!r}.") from None
    if not -len(names) <= int(group) < len(names):
        raise ValueError(f"The 'group' parameter must be an index in [0, {len(names)}). Got {group}.")
    return int(group) % len(names)


def export_map_png(results: AnalysisResults, layer: str, grouping: str, group: int | str, snapshot: int,
                   path: str | os.PathLike, scale: int = 4, contrast: bool = False) -> Path:
    """Write one map (a group's mean activation at one snapshot) with a colour bar as a PNG.

    Args:
        results: the analysis of a run.
        layer: layer name.
        grouping: a key of the layer's NAPs, e.g. ``"class"``, ``"correct"`` or ``"confbin"``.
        group: group name (e.g. ``"3"``) or index; a name wins when a string is both.
        snapshot: snapshot position, negative counts from the end (``-1`` is the last).
        path: PNG file to write.
        scale: output pixels per map grid cell (nearest-neighbour upscaling), 1 to 32.
        contrast: draw the contrast to the other groups of the grouping (the neuron's mean over the groups at
            that snapshot subtracted) on the diverging scale of the layer's contrast limit, as the report's
            contrast view does.

    Returns:
        The path written.
    """
    if not isinstance(results, AnalysisResults):
        raise TypeError(f"The 'results' parameter must be an AnalysisResults. Got {type(results).__name__}.")
    if layer not in results.layers:
        raise ValueError(f"The 'layer' parameter must be one of {list(results.layers)}. Got {layer!r}.")
    la = results.layers[layer]
    if grouping not in la.naps:
        raise ValueError(f"The 'grouping' parameter must be one of {list(la.naps)}. Got {grouping!r}.")
    if not la.layouts or la.default_layout not in la.layouts:
        raise ValueError(f"Layer {layer!r} has no layout to draw a map on.")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)):
        raise TypeError(f"The 'scale' parameter must be an int. Got {type(scale).__name__}.")
    if not 1 <= scale <= 32:
        raise ValueError(f"The 'scale' parameter must be in [1, 32]. Got {scale}.")
    gn = la.naps[grouping]
    g = _resolve_group(list(gn.group_names), group)
    s_total = gn.naps.shape[0]
    if isinstance(snapshot, bool) or not isinstance(snapshot, (int, np.integer)):
        raise TypeError(f"The 'snapshot' parameter must be an int. Got {type(snapshot).__name__}.")
    if not -s_total <= snapshot < s_total:
        raise ValueError(f"The 'snapshot' parameter must be in [{-s_total}, {s_total}). Got {snapshot}.")
    s = int(snapshot) % s_total
    op = la.layouts[la.default_layout].interp
    if not isinstance(contrast, (bool, np.bool_)):
        raise TypeError(f"The 'contrast' parameter must be a bool. Got {type(contrast).__name__}.")
    if contrast:
        values = contrast_normalise(np.asarray(gn.naps[s], np.float32))[g]  # (N,)
        palette, low, high = diverging_palette(), -contrast_limit(la), contrast_limit(la)
    else:
        values = gn.naps[s, g]
        palette, low, high = activation_scale(la)
    img = op.apply(values)  # (H, W), row 0 at the bottom, NaN outside
    pal = palette_rgb(palette)

    h, w = op.grid_shape
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = [int(OFF_MAP[i : i + 2], 16) for i in (1, 3, 5)]
    idx = color_index(img, low, high, len(pal))
    rgb[idx >= 0] = pal[idx[idx >= 0]]
    rgb = np.repeat(np.repeat(rgb[::-1], scale, axis=0), scale, axis=1)  # top row of the PNG = highest y

    mh, mw = h * scale, w * scale
    bar_x = MARGIN + mw + GAP
    width, height = bar_x + BAR_W + LABEL_W, TITLE_H + mh + MARGIN
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(Image.fromarray(rgb), (MARGIN, TITLE_H))
    # colour bar: row r of the bar shows the value at the centre of that row, top = high
    centres = high - (np.arange(mh) + 0.5) / mh * (high - low)
    bar = np.repeat(pal[color_index(centres, low, high, len(pal))][:, None, :], BAR_W, axis=1)
    canvas.paste(Image.fromarray(bar), (bar_x, TITLE_H))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((bar_x - 1, TITLE_H - 1, bar_x + BAR_W, TITLE_H + mh), outline=(90, 90, 90))
    font = ImageFont.load_default(size=max(10, min(14, mh // 12)))
    for frac, value in ((0.0, high), (0.5, (high + low) / 2), (1.0, low)):
        y = TITLE_H + min(int(frac * mh), mh - 1)
        draw.line((bar_x + BAR_W, y, bar_x + BAR_W + 4, y), fill=(60, 60, 60))
        text = "0" if value == 0 else (f"{value:+.3g}" if low < 0 else f"{value:.3g}")
        draw.text((bar_x + BAR_W + 7, y), text, fill=(30, 30, 30), font=font,
                  anchor="lm")
    step = int(results.steps[s]) if len(results.steps) > s else s
    title = f"{layer} · {gn.group_names[g]} · step {step:,}" + (" · contrast" if contrast else "")
    draw.text((MARGIN, TITLE_H // 2), title, fill=(20, 20, 20), font=ImageFont.load_default(size=13), anchor="lm")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "topotrace")  # how topotrace.report_templates.outputs recognises its own PNGs
    with atomic_output(out, "figure") as tmp:
        canvas.save(tmp, format="PNG", pnginfo=info)
    return out

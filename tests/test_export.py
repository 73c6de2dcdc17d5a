"""PNG export of a map: size, colour bar, and pixel colours equal to the report's colour mapping."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from topotrace.report_templates import export
from topotrace.report_templates.export import export_map_png
from topotrace.report_templates.style import diverging_palette, sequential_palette

from .test_report import synthetic_results


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return synthetic_results(tmp_path_factory.mktemp("exp") / "store.h5", n_snapshots=4, layer_sizes=(30,),
                             n_classes=4, per_class=10)


def _ref_rgb(value: float, limit: float, low: float | None = None, pal: list[str] | None = None) -> np.ndarray:
    """Bokeh LinearColorMapper binning over [low, limit] (low = -limit by default) into a 256-colour palette."""
    pal = diverging_palette(256) if pal is None else pal
    low = -limit if low is None else low
    i = int(np.clip(np.floor((value - low) / (limit - low) * 256), 0, 255))
    return np.array([int(pal[i][k:k + 2], 16) for k in (1, 3, 5)])


def _map_pixel(op, p: int, scale: int) -> tuple[int, int]:
    """(y, x) in the PNG of the centre of operator pixel p (grid row 0 is the bottom of the picture)."""
    h, w = op.grid_shape
    r, c = divmod(int(op.pixel[p]), w)
    return export.TITLE_H + (h - 1 - r) * scale + scale // 2, export.MARGIN + c * scale + scale // 2


def test_size_and_pixels_match_colour_mapping(results, tmp_path):
    la = results.layers["layer0"]
    op = la.layouts[la.default_layout].interp
    scale = 3
    path = export_map_png(results, "layer0", "class", "class 2", -1, tmp_path / "m.png", scale=scale)
    im = np.asarray(Image.open(path).convert("RGB")).astype(int)
    h, w = op.grid_shape
    assert im.shape == (export.TITLE_H + h * scale + export.MARGIN,
                        export.MARGIN + w * scale + export.GAP + export.BAR_W + export.LABEL_W, 3)
    values = la.naps["class"].naps[-1, 2]
    rng = np.random.default_rng(0)
    for p in rng.choice(len(op.pixel), 12, replace=False):
        v = float((values[op.neurons[p]] * op.weights[p]).sum())  # the operator's definition, by hand
        r, c = divmod(int(op.pixel[p]), w)
        y = export.TITLE_H + (h - 1 - r) * scale + scale // 2  # grid row 0 is the bottom of the picture
        x = export.MARGIN + c * scale + scale // 2
        assert np.array_equal(im[y, x], _ref_rgb(v, la.color_limit)), (p, v)
    outside = np.setdiff1d(np.arange(h * w), op.pixel)
    if len(outside):
        r, c = divmod(int(outside[0]), w)
        grey = (0xD4, 0xD4, 0xD4)  # off the map: light grey, not the white of zero
        assert tuple(im[export.TITLE_H + (h - 1 - r) * scale, export.MARGIN + c * scale]) == grey


def test_colour_bar_runs_from_plus_to_minus_limit(results, tmp_path):
    la = results.layers["layer0"]
    h, w = la.layouts[la.default_layout].interp.grid_shape
    scale = 2
    im = np.asarray(Image.open(export_map_png(results, "layer0", "correct", 1, 0, tmp_path / "b.png",
                                              scale=scale)).convert("RGB")).astype(int)
    bx = export.MARGIN + w * scale + export.GAP + export.BAR_W // 2
    top, bottom = export.TITLE_H + 1, export.TITLE_H + h * scale - 2
    pal = diverging_palette(256)
    lim, mh = la.color_limit, h * scale
    for y in (top, bottom, top + mh // 3):
        centre = lim - (y - export.TITLE_H + 0.5) / mh * 2 * lim  # the value row y stands for
        assert np.array_equal(im[y, bx], _ref_rgb(centre, lim)), y
    assert pal[255] != pal[0]
    assert im[top, bx][0] > im[top, bx][2] and im[bottom, bx][2] > im[bottom, bx][0]  # red on top, blue below
    mid = im[export.TITLE_H + h * scale // 2, bx]
    assert mid.min() > 225  # white around zero
    labels = im[export.TITLE_H:export.TITLE_H + h * scale, bx + export.BAR_W:]
    assert (labels.sum(axis=2) < 300).sum() > 30  # tick labels were drawn


def test_snapshots_differ_and_group_by_index_or_name(results, tmp_path):
    a = np.asarray(Image.open(export_map_png(results, "layer0", "class", 1, 0, tmp_path / "a.png")))
    b = np.asarray(Image.open(export_map_png(results, "layer0", "class", "class 1", 0, tmp_path / "b.png")))
    c = np.asarray(Image.open(export_map_png(results, "layer0", "class", 1, -1, tmp_path / "c.png")))
    assert np.array_equal(a[export.TITLE_H:], b[export.TITLE_H:])
    assert not np.array_equal(a[export.TITLE_H:], c[export.TITLE_H:])


@pytest.mark.parametrize("kw, err, match", [
    ({"layer": "nope"}, ValueError, "'layer'"),
    ({"grouping": "nope"}, ValueError, "'grouping'"),
    ({"group": 99}, ValueError, "'group'"),
    ({"group": "no such class"}, ValueError, "'group'"),
    ({"group": 1.5}, TypeError, "'group'"),
    ({"snapshot": 4}, ValueError, "'snapshot'"),
    ({"scale": 0}, ValueError, "'scale'"),
    ({"scale": "2"}, TypeError, "'scale'"),
])
def test_bad_arguments_name_the_parameter(results, tmp_path, kw, err, match):
    args = dict(layer="layer0", grouping="class", group=0, snapshot=-1, path=tmp_path / "x.png", scale=2)
    args.update(kw)
    with pytest.raises(err, match=match):
        export_map_png(results, **args)


def test_nonnegative_layer_uses_sequential_mapping(results, tmp_path):
    """With NAPs >= 0 (as after ReLU) the PNG maps [0, limit] white to dark red, like the report."""
    import dataclasses

    la = results.layers["layer0"]
    naps = {k: dataclasses.replace(g, naps=np.abs(g.naps)) for k, g in la.naps.items()}
    res = dataclasses.replace(results, layers={"layer0": dataclasses.replace(la, naps=naps, nonnegative=True)})
    op = la.layouts[la.default_layout].interp
    scale = 3
    im = np.asarray(Image.open(export_map_png(res, "layer0", "class", 1, -1, tmp_path / "s.png", scale=scale))
                    .convert("RGB")).astype(int)
    values = naps["class"].naps[-1, 1]
    pal = sequential_palette(256)
    for p in np.random.default_rng(1).choice(len(op.pixel), 12, replace=False):
        v = float((values[op.neurons[p]] * op.weights[p]).sum())
        assert np.array_equal(im[_map_pixel(op, p, scale)], _ref_rgb(v, la.color_limit, 0.0, pal)), (p, v)
    h, w = op.grid_shape
    bx = export.MARGIN + w * scale + export.GAP + export.BAR_W // 2
    top, bottom = im[export.TITLE_H + 1, bx], im[export.TITLE_H + h * scale - 2, bx]
    assert tuple(bottom) == (255, 255, 255) or bottom.min() > 245  # zero is white
    assert top[0] > 80 and top[1] < 20 and top[2] < 30  # the limit is dark red


def test_contrast_export_subtracts_group_mean(results, tmp_path):
    """contrast=True draws the NAP minus the neuron's mean over the groups, on the symmetric contrast scale."""
    la = results.layers["layer0"]
    op = la.layouts[la.default_layout].interp
    scale = 2
    im = np.asarray(Image.open(export_map_png(results, "layer0", "class", 2, 1, tmp_path / "c.png", scale=scale,
                                              contrast=True)).convert("RGB")).astype(int)
    naps = la.naps["class"].naps[1].astype(np.float64)  # (G, N)
    values = naps[2] - np.nanmean(naps, axis=0)  # reference contrast normalisation
    lim = la.color_limit_contrast
    assert lim > 0
    for p in np.random.default_rng(2).choice(len(op.pixel), 12, replace=False):
        v = float((values[op.neurons[p]] * op.weights[p]).sum())
        assert np.array_equal(im[_map_pixel(op, p, scale)], _ref_rgb(v, lim)), (p, v)
    with pytest.raises(TypeError, match="'contrast'"):
        export_map_png(results, "layer0", "class", 2, 1, tmp_path / "x.png", contrast="yes")

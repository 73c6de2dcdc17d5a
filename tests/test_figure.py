"""topotrace figure: grids of maps and findings as PDF, SVG and PNG (report_templates/figures.py, cmd_figure.py)."""

from __future__ import annotations

import dataclasses
import re
import sys
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from topotrace.analysis.pipeline import analyze  # noqa: E402
from topotrace.cli import main  # noqa: E402
from topotrace.instrument.synthetic import write_synthetic_store  # noqa: E402
from topotrace.report_templates import figures  # noqa: E402
from topotrace.report_templates.style import OFF_MAP, color_index  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny analysed run: (run folder, results)."""
    folder = tmp_path_factory.mktemp("run")
    write_synthetic_store(folder / "store.h5", n_snapshots=3, layer_sizes=(16,), n_classes=3, per_class=6)
    results = analyze(folder / "store.h5", folder / "analysis.h5", layout_methods=["pca"])
    return folder, results


def _svg_texts(path) -> list[str]:
    root = ET.parse(path).getroot()
    return ["".join(el.itertext()) for el in root.iter() if el.tag.endswith("}text")]


def _pdf_images(data: bytes) -> list[tuple[int, int]]:
    """(width, height) of every image XObject in a PDF (also in compressed object streams)."""
    chunks = [data]
    for m in re.finditer(rb"stream\r?\n", data):
        try:
            chunks.append(zlib.decompressobj().decompress(data[m.end():m.end() + 2_000_000]))
        except zlib.error:
            pass
    out = []
    for chunk in chunks:
        for m in re.finditer(rb"/Subtype\s*/Image", chunk):
            around = chunk[max(0, m.start() - 400):m.end() + 400]
            w = re.search(rb"/Width\s+(\d+)", around)
            h = re.search(rb"/Height\s+(\d+)", around)
            out.append((int(w.group(1)) if w else -1, int(h.group(1)) if h else -1))
    return out


def _covered_levels(coll, extent, shape) -> np.ndarray:
    """Palette index drawn at each grid cell by a level_paths collection: array (H, W), -1 where nothing is."""
    h, w = shape
    x0, x1, y0, y1 = extent
    dx, dy = (x1 - x0) / w, (y1 - y0) / h
    n = coll.get_cmap().N
    norm = coll.norm
    levels = np.floor((np.asarray(coll.get_array()) - norm.vmin) / (norm.vmax - norm.vmin) * n).astype(int)
    drawn = np.full((h, w), -1)
    for path, level in zip(coll.get_paths(), levels):
        for rect in path.vertices.reshape(-1, 5, 2):
            i = int(round((rect[0, 1] - y0) / dy))
            a, b = int(round((rect[0, 0] - x0) / dx)), int(round((rect[1, 0] - x0) / dx))
            assert (drawn[i, a:b] == -1).all(), "a cell drawn twice"
            drawn[i, a:b] = level
    return drawn


@pytest.mark.slow
def test_pdf_is_vector(run, capsys):
    """A PDF grid of maps embeds no raster image at all (maps and colour bar are vector shapes)."""
    folder, _ = run
    out = folder / "grid.pdf"
    assert main(["figure", str(folder), "--layer", "layer0", "--snapshots", "0,-1", "--dots", "--format", "pdf",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    data = out.read_bytes()
    assert data.startswith(b"%PDF")
    assert _pdf_images(data) == []
    assert b"DejaVuSans" in data  # the font is embedded: every character renders


@pytest.mark.slow
def test_svg_is_vector_with_text_labels(run, capsys):
    """An SVG grid with --maps vector has no <image>; its labels (group, step, colour bar) are text elements."""
    folder, results = run
    out = folder / "grid.svg"
    assert main(["figure", str(folder), "--layer", "layer0", "--grouping", "class", "--snapshots", "0,1,-1",
                 "--maps", "vector", "--out", str(out)]) == 0
    assert "<image" not in out.read_text("utf-8")
    texts = _svg_texts(out)
    for label in ("class 1, n = 6", f"step {int(results.steps[-1]):,}", f"step {int(results.steps[0]):,}",
                  "mean activation"):
        assert label in texts, (label, texts)
    assert "DejaVu Sans" in out.read_text("utf-8")


def test_confbin_and_correct_labels():
    """Groups are labelled in full."""
    assert figures.group_label("confbin", "0.94–0.99") == "confidence 0.94–0.99"
    assert figures.group_label("class", "3") == "class 3"
    assert figures.group_label("class", "class 3") == "class 3"
    assert figures.group_label("pred", "3") == "predicted class 3"
    assert figures.group_label("correct", "wrong") == "wrong"
    assert figures.group_label("class_confbin", "class 2 | 0–20 %") == "class 2, confidence 0–20 %"


def test_drawn_values_equal_the_analysis(run):
    """Each map cell takes the palette colour of the operator's rendering of the NAPs at that snapshot and group;
    the cells just off the map take their halo neighbour's colour (the clip cuts them at the outline)."""
    _, results = run
    la = results.layers["layer0"]
    op = la.layouts[la.default_layout].interp
    gn = la.naps["class"]
    grid = figures.plan_map_grid(results, "layer0", [0, -1], "class", ["class 2", 0])
    np.testing.assert_array_equal(grid.values[1, 0], gn.naps[-1, 2])
    np.testing.assert_array_equal(grid.values[0, 1], gn.naps[0, 0])
    fig = figures.draw_map_grid(grid)
    axes = {ax.get_label(): ax for ax in fig.axes}
    for (r, s), (c, g) in [((r, s), (c, g)) for r, s in enumerate([0, 2]) for c, g in enumerate([2, 0])]:
        (coll,) = axes[f"map {r},{c}"].collections
        img = op.apply(gn.naps[s, g])
        img.flat[grid.halo[0]] = img.flat[grid.halo[1]]
        expected = color_index(img, grid.low, grid.high, len(grid.palette))
        np.testing.assert_array_equal(_covered_levels(coll, grid.extent, op.grid_shape), expected)
    assert (grid.low, grid.high) == (-la.color_limit, la.color_limit) or la.nonnegative


def test_outline_clip_and_grey_off_the_map(run):
    """Each map is clipped to the region and its outline drawn; off the map the grey background shows, unlike the
    palette's colour of zero (checked on the rendered pixels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgb

    from topotrace.analysis.maps import halo

    _, results = run
    la = results.layers["layer0"]
    op = la.layouts[la.default_layout].interp
    grid = figures.plan_map_grid(results, "layer0", [-1], "class", [0])
    np.testing.assert_array_equal(grid.outline, op.outline)
    np.testing.assert_array_equal(grid.halo, halo(op))
    zero = np.where(np.isfinite(grid.images), 0.0, np.nan).astype(np.float32)  # every map value 0
    fig = figures.draw_map_grid(dataclasses.replace(grid, images=zero), title=False)
    ax = next(a for a in fig.axes if a.get_label() == "map 0,0")
    (coll,) = ax.collections
    assert coll.get_clip_path() is not None
    (line,) = [ln for ln in ax.lines if ln.get_label() == "outline 0,0"]
    np.testing.assert_array_equal(np.column_stack(line.get_data()), op.outline.astype(np.float64))
    assert ax.get_facecolor()[:3] == pytest.approx(to_rgb(OFF_MAP))
    zero_rgb = to_rgb(grid.palette[color_index(np.zeros(1), grid.low, grid.high, len(grid.palette))[0]])
    assert np.abs(np.subtract(zero_rgb, to_rgb(OFF_MAP))).max() > 0.1
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())[..., :3] / 255.0
    h, w = op.grid_shape
    on = np.zeros((h, w), bool)
    on.flat[op.pixel] = True
    pad = np.pad(on, 3)
    deep_on = np.ones_like(on)  # cells whose 7 x 7 neighbourhood is all on the map, or all off it
    deep_off = np.ones_like(on)
    for dy in range(7):
        for dx in range(7):
            deep_on &= pad[dy:dy + h, dx:dx + w]
            deep_off &= ~pad[dy:dy + h, dx:dx + w]
    x0, x1, y0, y1 = op.extent

    def colour_at(cells):
        r, c = np.argwhere(cells)[len(np.argwhere(cells)) // 2]
        x, y = x0 + (c + 0.5) * (x1 - x0) / w, y0 + (r + 0.5) * (y1 - y0) / h
        px, py = ax.transData.transform((x, y))
        return rgba[int(round(rgba.shape[0] - py)), int(round(px))]

    assert deep_on.any() and deep_off.any()
    np.testing.assert_allclose(colour_at(deep_on), zero_rgb, atol=0.02)
    np.testing.assert_allclose(colour_at(deep_off), to_rgb(OFF_MAP), atol=0.02)


def test_corr_maps_use_pearson_on_unit_scale(run):
    """--kind corr draws Pearson r (overall, within class) on [-1, 1] with a labelled colour bar."""
    _, results = run
    cr = results.layers["layer0"].corr["max_prob"]
    grid = figures.plan_map_grid(results, "layer0", [-1], kind="corr", measure="max_prob")
    assert (grid.low, grid.high) == (-1.0, 1.0)
    assert grid.col_labels == ["overall", "within class"]
    assert grid.bar_label == "Pearson r with max_prob"
    np.testing.assert_array_equal(grid.values[0, 0], cr.pearson[-1].astype(np.float32))
    np.testing.assert_array_equal(grid.values[0, 1], cr.pearson_within[-1].astype(np.float32))


@pytest.mark.slow
def test_empty_group_is_a_labelled_blank(run, tmp_path):
    """A group without samples at a snapshot is drawn as "no samples", not as a map."""
    _, results = run
    la = results.layers["layer0"]
    gn = la.naps["class"]
    counts, naps = gn.counts.copy(), gn.naps.copy()
    counts[-1, 1], naps[-1, 1] = 0, np.nan
    la2 = dataclasses.replace(la, naps={**la.naps, "class": dataclasses.replace(gn, counts=counts, naps=naps)})
    res2 = dataclasses.replace(results, layers={"layer0": la2})
    grid = figures.plan_map_grid(res2, "layer0", [0, -1], "class")
    assert grid.empty.tolist() == [[False, False, False], [False, True, False]]
    assert grid.empty_cells() == [(f"step {int(results.steps[-1]):,}", "class 1")]
    assert grid.cell_notes[1][1] == "n = 0"
    fig = figures.draw_map_grid(grid)
    blank = next(ax for ax in fig.axes if ax.get_label() == "blank 1,1")
    assert [t.get_text() for t in blank.texts if t.get_text() == "no samples"] == ["no samples"]
    assert not blank.collections
    figures.save_figure(fig, tmp_path / "e.svg", "svg")
    assert "no samples" in _svg_texts(tmp_path / "e.svg")


@pytest.mark.slow
def test_png_and_findings(run, capsys):
    """PNG honours --dpi; --kind findings draws each claim's curve with its band."""
    from PIL import Image

    folder, _ = run
    small, big = folder / "s.png", folder / "b.png"
    for out, dpi in ((small, "50"), (big, "100")):
        assert main(["figure", str(folder), "--layer", "layer0", "--groups", "0,1", "--out", str(out),
                     "--dpi", dpi]) == 0
    w_small, w_big = Image.open(small).size[0], Image.open(big).size[0]
    assert abs(w_big - 2 * w_small) <= 2
    out = folder / "findings.svg"
    assert main(["figure", str(folder), "--kind", "findings", "--out", str(out)]) == 0
    texts = _svg_texts(out)
    assert any(t.startswith("stronger with time") for t in texts)
    assert "<image" not in out.read_text("utf-8")


@pytest.mark.parametrize("extra, needle", [
    (["--layer", "fc9"], "Unknown layer 'fc9'. Available: ['layer0']"),
    (["--layer", "layer0", "--grouping", "cls"], "Available: ['class', 'pred', 'correct', 'confbin'"),
    (["--layer", "layer0", "--groups", "class 7"], "Unknown group 'class 7' of grouping 'class'. Available: "
                                                    "['class 0', 'class 1', 'class 2']"),
    (["--layer", "layer0", "--snapshots", "0,3"], "Snapshot index 3 is out of range"),
    (["--layer", "layer0", "--snapshots", "0,last"], "comma-separated integers"),
    (["--layer", "layer0", "--format", "jpg"], "Unknown format 'jpg' for '--format'. Available: ['pdf', 'svg', "
                                               "'png']"),
    (["--layer", "layer0", "--kind", "corr", "--measure", "nope"], "Unknown measure 'nope'"),
    (["--kind", "maps"], "Unknown kind 'maps'"),
    (["--grouping", "class"], "'--layer' option is required"),
])
def test_bad_input_one_line_nothing_written(run, capsys, extra, needle):
    """Bad input: one error line, exit 2, no output file."""
    folder, _ = run
    out = folder / "bad.pdf"
    assert main(["figure", str(folder), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("topotrace: error: ") and needle in err, err
    assert not out.exists() and not out.with_name("bad.pdf.tmp").exists()


def test_out_in_missing_folder_and_missing_matplotlib(run, capsys, monkeypatch):
    """--out in a missing folder, and matplotlib missing: one line, exit 2, nothing written."""
    folder, _ = run
    assert main(["figure", str(folder), "--layer", "layer0", "--out", str(folder / "nope" / "f.pdf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert not (folder / "nope").exists()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["figure", str(folder), "--layer", "layer0", "--out", str(folder / "m.pdf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'topotrace[figures]'" in err
    assert not (folder / "m.pdf").exists()


@pytest.mark.slow
def test_default_out_and_report_png_alias(run, capsys, monkeypatch):
    """Without --out the figure goes to figures/ next to the store; report --png needs matplotlib up front."""
    folder, _ = run
    assert main(["figure", str(folder), "--layer", "layer0", "--grouping", "correct", "--format", "svg"]) == 0
    out = folder / "figures" / "layer0_correct.svg"
    assert capsys.readouterr().out.strip() == str(out) and out.is_file()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(folder), "--png", "layer0:class:1:-1"]) == 2
    assert "pip install 'topotrace[figures]'" in capsys.readouterr().err
    assert not (folder / "report.html").exists() and not (folder / "maps").exists()

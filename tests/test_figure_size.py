"""Map-grid figures stay small: one embedded raster per map where vector shapes would make a large file (#23)."""

from __future__ import annotations

import base64
import io
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402

from topotrace.analysis.pipeline import analyze  # noqa: E402
from topotrace.cli import main  # noqa: E402
from topotrace.instrument.synthetic import write_synthetic_store  # noqa: E402
from topotrace.report_templates import figures  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An analysed run of 6 classes with a 48-neuron layer: its 128 x 128 maps hold many colour runs."""
    folder = tmp_path_factory.mktemp("run")
    write_synthetic_store(folder / "store.h5", n_snapshots=3, layer_sizes=(48,), n_classes=6, per_class=6)
    results = analyze(folder / "store.h5", folder / "analysis.h5", layout_methods=["pca"])
    return folder, results


def _rects(fig) -> int:
    return sum(len(p.vertices) for c in figures.map_collections(fig) for p in c.get_paths()) // 5


def _svg(path):
    return ET.parse(path).getroot()


def _tag(el) -> str:
    return el.tag.rsplit("}", 1)[-1]


@pytest.mark.slow
def test_auto_svg_embeds_one_raster_per_map_when_vector_is_large(run, tmp_path):
    """Over the budget: one <image> per map, text still text, outlines still paths, far fewer bytes than vector;
    each raster's opaque pixels are the palette's colours."""
    _, results = run
    grid = figures.plan_map_grid(results, "layer0", [0, 1, 2])
    fig = figures.draw_map_grid(grid)
    rects, n_maps = _rects(fig), int((~grid.empty).sum())
    assert rects * figures.RECT_BYTES["svg"] > figures.VECTOR_BUDGET["svg"]  # the case under test
    vector, auto = tmp_path / "v.svg", tmp_path / "a.svg"
    figures.save_figure(fig, vector, "svg", maps="vector")
    figures.save_figure(fig, auto, "svg")  # auto
    assert vector.read_text("utf-8").count("<image") == 0
    root = _svg(auto)
    images = [el for el in root.iter() if _tag(el) == "image"]
    assert len(images) == n_maps
    assert auto.stat().st_size < vector.stat().st_size / 3
    assert auto.stat().st_size < 3_000_000
    texts = ["".join(el.itertext()) for el in root.iter() if _tag(el) == "text"]
    assert any("class 0" in t for t in texts) and any("step" in t for t in texts)  # labels stay text
    palette = {tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in grid.palette}
    for el in images:
        href = el.get("{http://www.w3.org/1999/xlink}href") or el.get("href")
        data = base64.b64decode(re.sub(r"^data:image/png;base64,", "", href))
        px = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).reshape(-1, 4)
        opaque = px[px[:, 3] == 255, :3]
        assert len(opaque) > 100
        in_palette = np.array([tuple(p) in palette for p in map(tuple, opaque)])
        assert in_palette.mean() > 0.9  # antialiased edges between colours aside, every pixel is a palette colour


@pytest.mark.slow
def test_small_grid_stays_vector_and_raster_can_be_asked(run, tmp_path):
    """Under the budget: no raster; --maps raster gives one per map; --maps vector never."""
    folder, results = run
    grid = figures.plan_map_grid(results, "layer0", [0], groups=["class 0"])
    fig = figures.draw_map_grid(grid)
    assert _rects(fig) * figures.RECT_BYTES["svg"] <= figures.VECTOR_BUDGET["svg"]
    out = tmp_path / "s.svg"
    figures.save_figure(fig, out, "svg")
    assert out.read_text("utf-8").count("<image") == 0
    out2 = tmp_path / "r.svg"
    assert main(["figure", str(folder), "--layer", "layer0", "--snapshots", "0", "--groups", "class 0",
                 "--maps", "raster", "--out", str(out2)]) == 0
    assert out2.read_text("utf-8").count("<image") == 1
    out3 = tmp_path / "v.svg"
    assert main(["figure", str(folder), "--layer", "layer0", "--snapshots", "0,-1", "--maps", "vector", "--out",
                 str(out3)]) == 0
    assert out3.read_text("utf-8").count("<image") == 0


@pytest.mark.parametrize(("extra", "needle"), [
    (["--dpi", "1e9"], "The '--dpi' option must be a number from 1 to 1200"),
    (["--dpi", "0"], "The '--dpi' option must be a number from 1 to 1200"),
    (["--maps", "png"], "Unknown map rendering 'png' for '--maps'. Available: ['auto', 'vector', 'raster']"),
])
def test_bad_dpi_and_maps_are_one_line(run, tmp_path, capsys, extra, needle):
    folder, _ = run
    out = tmp_path / "x.svg"
    capsys.readouterr()
    assert main(["figure", str(folder), "--layer", "layer0", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert not out.exists()
    with pytest.raises(ValueError, match="from 1 to 1200"):
        figures.check_dpi(5000)

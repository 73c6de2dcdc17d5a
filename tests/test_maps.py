"""Interpolation operator, colour limits and smoothness (topotrace.analysis.maps)."""

import numpy as np
import pytest

from topotrace.analysis import maps


def _grid_layout(n=8, seed=0):
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n)), -1).reshape(-1, 2)
    return g + rng.uniform(-0.02, 0.02, g.shape)


def test_barycentric_interpolation_is_exact_for_linear_fields():
    xy = _grid_layout()
    op = maps.interp_operator(xy, grid=32, max_radius=np.inf)
    values = 2 * xy[:, 0] - 3 * xy[:, 1] + 1
    img = op.apply(values)
    x0, x1, y0, y1 = op.extent
    cx = x0 + (np.arange(32) + 0.5) * (x1 - x0) / 32
    cy = y0 + (np.arange(32) + 0.5) * (y1 - y0) / 32
    truth = 2 * cx[None, :] - 3 * cy[:, None] + 1  # row = y, row 0 at the bottom
    inside = np.isfinite(img)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(img[inside], truth[inside], atol=1e-4)
    assert op.neurons.shape == (len(op.pixel), 3)
    np.testing.assert_allclose(op.weights.sum(1), 1, atol=1e-6)
    assert (op.weights >= 0).all()


def test_render_matches_apply():
    xy = _grid_layout(6, 1)
    op = maps.interp_operator(xy, grid=16)
    v = np.random.default_rng(2).normal(size=(3, len(xy)))
    imgs = maps.render(op, v)
    for k in range(3):
        np.testing.assert_allclose(imgs[k], op.apply(v[k]), equal_nan=True, atol=1e-6)


def test_region_masks_gaps_between_clusters():
    rng = np.random.default_rng(3)
    xy = np.vstack([rng.uniform(0, 0.2, (30, 2)), rng.uniform(0.8, 1.0, (30, 2))])
    hull = maps.interp_operator(xy, grid=40, max_radius=np.inf)
    concave = maps.interp_operator(xy, grid=40)
    assert len(concave.pixel) < 0.6 * len(hull.pixel)
    img = concave.apply(np.ones(60))
    assert np.isnan(img[20, 20])  # the middle, far from every neuron, is blank
    assert np.isfinite(hull.apply(np.ones(60))[20, 20])


def test_region_does_not_bridge_the_gap_to_an_island():
    """An island five spacings off a regular lattice (e.g. a layer's silent units) is not joined to it by the
    wedge the convex hull would fill, while the lattice and the island are filled without holes."""
    lattice = _grid_layout(10, 6) * 0.9  # x, y in 0 .. 0.9, spacing 0.1
    island = np.array([[0, 0], [0.1, 0], [0.05, 0.09], [0, 0.1], [0.1, 0.1], [0.05, 0.01]]) + [1.4, 0.4]
    xy = np.vstack([lattice, island])
    for max_radius, gap_filled in ((2.5, False), (np.inf, True)):
        op = maps.interp_operator(xy, grid=80, max_radius=max_radius)
        img = op.apply(np.ones(len(xy)))
        x0, x1, y0, y1 = op.extent
        cx = x0 + (np.arange(80) + 0.5) * (x1 - x0) / 80
        cy = y0 + (np.arange(80) + 0.5) * (y1 - y0) / 80
        gap = np.isfinite(img[:, (cx > 0.95) & (cx < 1.35)])
        assert gap.any() == gap_filled
        assert np.isfinite(img[np.ix_((cy > 0.05) & (cy < 0.85), (cx > 0.05) & (cx < 0.85))]).all()  # no holes
        assert np.isfinite(img[np.ix_((cy > 0.43) & (cy < 0.47), (cx > 1.43) & (cx < 1.47))]).all()  # island


def test_invalid_inputs():
    with pytest.raises(ValueError, match="'xy'"):
        maps.interp_operator(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 3"):
        maps.interp_operator(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="line"):
        maps.interp_operator(np.column_stack([np.arange(5.0), np.arange(5.0)]))


def test_color_limit_is_shared_across_snapshots():
    early = np.full((1, 2, 4), 0.1)
    late = np.array([[[0.5, -2.0, np.nan, 1.0], [0, 0, 0, 0]]])
    naps = np.concatenate([early, late])  # (S, G, N)
    assert maps.color_limit([naps]) == 2.0
    assert maps.color_limit([naps[:1], naps[1:]]) == 2.0
    v = np.abs(naps[np.isfinite(naps)])
    assert maps.color_limit([naps], percentile=90) == pytest.approx(np.percentile(v, 90))
    assert maps.color_limit([np.zeros(3)]) == 1.0
    with pytest.raises(ValueError, match="'percentile'"):
        maps.color_limit([naps], percentile=0)


def test_smoothness_smooth_vs_random_values():
    xy = _grid_layout(10, 4)
    op = maps.interp_operator(xy, grid=48)
    smooth = np.vstack([xy[:, 0], np.sin(3 * xy[:, 1])])
    rough = np.random.default_rng(5).normal(size=(2, len(xy)))
    assert maps.smoothness(op, smooth) > 0.8
    assert abs(maps.smoothness(op, rough)) < 0.25
    assert maps.smoothness(op, smooth) == maps.smoothness(op, smooth)  # seeded baseline


def test_all_nonnegative_ignores_nan_and_needs_a_value():
    """Non-negativity is read from every finite value; NaN (empty groups) does not count; no values -> False."""
    from topotrace.analysis.maps import all_nonnegative

    a = np.abs(np.random.default_rng(0).normal(size=(3, 4, 5)))
    a[0, 0] = np.nan
    assert all_nonnegative([a, a[:1]])
    b = a.copy()
    b[-1, 0, 3] = -1e-3
    assert not all_nonnegative([a, b])
    assert not all_nonnegative([np.full((2, 2), np.nan)])


# --- the finer maps of issue 10: grid, outline, halo --------------------------------------------------------------

def _annulus(n=14, seed=7):
    """A jittered lattice with its middle taken out: a region with one outer boundary and one hole."""
    g = _grid_layout(n, seed)
    r = np.linalg.norm(g - 0.5, axis=1)
    return g[r > 0.25]


def _kept_reference(xy, max_radius=2.5):
    """The alpha shape's triangles, computed independently: circumcentre by solving the perpendicular-bisector
    equations, spacing from the full distance matrix. Returns (triangles (T, 3), kept (T,) bool)."""
    from scipy.spatial import Delaunay

    tris = Delaunay(xy).simplices
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(d, np.inf)
    spacing = np.median(d.min(axis=1))
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    m = np.stack([b - a, c - a], axis=1)  # [T, 2, 2]: 2 (p - a) . (v - a) = |v - a|^2 for v = b, c
    rhs = 0.5 * np.stack([((b - a) ** 2).sum(1), ((c - a) ** 2).sum(1)], axis=1)
    centre = np.linalg.solve(m, rhs[..., None])[..., 0]  # relative to a
    radius = np.linalg.norm(centre, axis=1)
    return tris, radius <= max_radius * spacing


def _rings(outline):
    """The outline's rings, each (k, 2) with its first vertex repeated at the end."""
    ok = np.isfinite(outline).all(axis=1)
    return [p[np.isfinite(p).all(axis=1)] for p in np.split(outline, np.flatnonzero(~ok)) if len(p)]


def _signed_area(ring):
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def _even_odd_inside(points, rings):
    """Point in polygon by ray casting (even-odd over every ring), for points of shape (P, 2)."""
    inside = np.zeros(len(points), bool)
    px, py = points[:, 0][:, None], points[:, 1][:, None]
    for ring in rings:
        x0, y0, x1, y1 = ring[:-1, 0], ring[:-1, 1], ring[1:, 0], ring[1:, 1]
        crosses = (y0 > py) != (y1 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= (crosses & (px < xc)).sum(axis=1) % 2 == 1
    return inside


def test_default_grid_is_128_and_linear_fields_stay_exact():
    """The pipeline's grid is 128 x 128; at that grid the operator still reproduces a linear field exactly on the
    map (alpha-shape region, not the convex hull)."""
    from topotrace.analysis.pipeline import GRID

    assert GRID == 128
    xy = _annulus()
    op = maps.interp_operator(xy)
    assert op.grid_shape == (128, 128)
    values = 2 * xy[:, 0] - 3 * xy[:, 1] + 1
    img = op.apply(values)
    x0, x1, y0, y1 = op.extent
    cx = x0 + (np.arange(128) + 0.5) * (x1 - x0) / 128
    cy = y0 + (np.arange(128) + 0.5) * (y1 - y0) / 128
    truth = 2 * cx[None, :] - 3 * cy[:, None] + 1
    inside = np.isfinite(img)
    assert 0.3 < inside.mean() < 0.9 and np.isnan(img[64, 64])  # the annulus's hole is off the map
    np.testing.assert_allclose(img[inside], truth[inside], atol=1e-4)


@pytest.mark.parametrize("layout", ["annulus", "clusters"])
def test_outline_is_the_boundary_of_the_kept_triangles(layout):
    """The outline's segments are exactly the edges of exactly one kept triangle (reference: numpy), every ring
    is closed, outer rings run counter-clockwise and holes clockwise."""
    rng = np.random.default_rng(3)
    xy = _annulus() if layout == "annulus" else np.vstack([rng.uniform(0, 0.2, (30, 2)),
                                                           rng.uniform(0.8, 1.0, (30, 2))])
    op = maps.interp_operator(xy, grid=64)
    tris, kept = _kept_reference(xy)
    t = np.sort(tris[kept], axis=1)
    edges = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [0, 2]]])
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    expected = {tuple(e) for e in uniq[counts == 1]}
    rings = _rings(np.asarray(op.outline, np.float64))
    index = {tuple(np.float32(p)): i for i, p in enumerate(xy)}
    got = []
    for ring in rings:
        assert (ring[0] == ring[-1]).all()  # closed
        ids = [index[tuple(np.float32(p))] for p in ring]
        got += [tuple(sorted(e)) for e in zip(ids[:-1], ids[1:])]
    assert len(got) == len(set(got))  # each boundary edge once
    assert set(got) == expected
    areas = sorted(_signed_area(r) for r in rings)
    if layout == "annulus":
        assert len(rings) == 2 and areas[0] < 0 < areas[1] and abs(areas[0]) < areas[1]  # hole cw, outer ccw
    else:
        assert len(rings) == 2 and all(a > 0 for a in areas)  # two outer rings, no hole


def test_outline_encloses_exactly_the_map_pixels():
    """A pixel is on the map (in ``op.pixel``, finite in ``apply``) exactly when its centre lies inside the outline
    (even-odd over the rings, so the hole counts); every other pixel is NaN."""
    xy = _annulus()
    op = maps.interp_operator(xy, grid=96)
    x0, x1, y0, y1 = op.extent
    cx = x0 + (np.arange(96) + 0.5) * (x1 - x0) / 96
    cy = y0 + (np.arange(96) + 0.5) * (y1 - y0) / 96
    px, py = np.meshgrid(cx, cy)
    inside = _even_odd_inside(np.column_stack([px.ravel(), py.ravel()]), _rings(np.asarray(op.outline, np.float64)))
    np.testing.assert_array_equal(np.flatnonzero(inside), np.sort(op.pixel))
    img = op.apply(np.ones(len(xy)))
    np.testing.assert_array_equal(np.isfinite(img).ravel(), inside)


def test_halo_matches_a_loop_over_neighbours():
    """The halo: each off-map pixel with an on-map 8-neighbour, lent by the first such neighbour in order."""
    xy = _annulus()
    op = maps.interp_operator(xy, grid=40)
    h, w = op.grid_shape
    on = np.zeros(h * w, bool)
    on[op.pixel] = True
    ref = []
    for y in range(h):
        for x in range(w):
            if on[y * w + x]:
                continue
            for dy, dx in maps.HALO_NEIGHBOURS:
                if 0 <= y + dy < h and 0 <= x + dx < w and on[(y + dy) * w + x + dx]:
                    ref.append((y * w + x, (y + dy) * w + x + dx))
                    break
    np.testing.assert_array_equal(maps.halo(op), np.array(ref).T)
    assert set(maps.HALO_NEIGHBOURS) == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)} - {(0, 0)}


def test_outline_round_trips_through_the_cache(tmp_path):
    """The outline is saved with the operator and loaded back unchanged (float32, NaN separators kept)."""
    from topotrace.analysis.pipeline import analyze
    from topotrace.analysis.results import load_results
    from topotrace.instrument.synthetic import write_synthetic_store

    store = write_synthetic_store(tmp_path / "s.h5", n_snapshots=2, layer_sizes=(20,), n_classes=3, per_class=5)
    res = analyze(store, tmp_path / "a.h5", layout_methods=["pca"])
    la = res.layers["layer0"]
    op = la.layouts[la.default_layout].interp
    assert op.grid_shape == (128, 128) and op.outline.shape[1] == 2 and np.isfinite(op.outline).any()
    back = load_results(tmp_path / "a.h5").layers["layer0"].layouts[la.default_layout].interp
    np.testing.assert_array_equal(back.outline, op.outline)
    assert back.outline.dtype == np.float32


def test_region_outline_orients_rings_whatever_the_triangles_order():
    """Triangles given clockwise or mixed give the same rings' orientation: outer counter-clockwise, hole
    clockwise (so non-zero and even-odd filling agree)."""
    xy = _annulus()
    tris, kept = _kept_reference(xy)
    t = tris[kept]
    mixed = t.copy()
    mixed[::2] = mixed[::2, ::-1]
    for order in (t, t[:, ::-1], mixed):
        areas = sorted(_signed_area(r) for r in _rings(maps.region_outline(xy, order)))
        assert len(areas) == 2 and areas[0] < 0 < areas[1]
    assert maps.region_outline(xy, np.zeros((0, 3), int)).shape == (0, 2)

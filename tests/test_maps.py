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

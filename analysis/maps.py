"""Topographic maps: the interpolation operator from neuron values to image pixels, and colour limits.

A map is drawn once per layout as an operator (pixel -> three neurons with barycentric weights, from a Delaunay
triangulation of the neuron positions), so rendering any snapshot or group is a gather and a weighted sum
(:meth:`topotrace.analysis.results.InterpOperator.apply`); the report ships the operator instead of images.

The map region is an alpha shape: the Delaunay triangles whose circumradius is at most ``max_radius`` times the
median nearest-neighbour spacing. Triangles that bridge empty space (bays of a concave layout, the gap to an
island of neurons such as the silent units of a ReLU layer) have large circumradii, so those pixels stay blank
instead of being filled by interpolating across the gap.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from .results import InterpOperator


def interp_operator(xy: np.ndarray, grid: int = 64, max_radius: float = 2.5, pad: float = 0.02) -> InterpOperator:
    """Barycentric interpolation operator of a layout on a ``grid`` x ``grid`` image.

    Args:
        xy: array of shape (N, 2), neuron positions (N >= 3, not all on one line).
        grid: image side in pixels.
        max_radius: triangles whose circumradius exceeds ``max_radius`` x the median nearest-neighbour distance
            are outside the region (``np.inf`` keeps the whole convex hull).
        pad: margin around the positions' bounding box, as a fraction of its size.

    Returns:
        :class:`InterpOperator` with grid_shape (grid, grid), row 0 at the bottom (smallest y).
    """
    xy = np.asarray(xy, np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"The 'xy' parameter must have shape (N, 2). Got {xy.shape} instead.")
    if len(xy) < 3:
        raise ValueError(f"A map needs at least 3 neurons. Got {len(xy)}.")
    if not isinstance(grid, (int, np.integer)) or grid < 2:
        raise ValueError(f"The 'grid' parameter must be an int >= 2. Got {grid!r} instead.")
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.maximum(hi - lo, 1e-12)
    lo, hi = lo - pad * span, hi + pad * span
    xs = lo[0] + (np.arange(grid) + 0.5) * (hi[0] - lo[0]) / grid
    ys = lo[1] + (np.arange(grid) + 0.5) * (hi[1] - lo[1]) / grid
    px, py = np.meshgrid(xs, ys)  # row index = y
    pts = np.column_stack([px.ravel(), py.ravel()])
    try:
        tri = Delaunay(xy)
    except Exception as err:  # scipy raises QhullError for degenerate inputs
        raise ValueError(f"Cannot triangulate {len(xy)} neuron positions (all on a line?).") from err
    simplex = tri.find_simplex(pts)
    inside = simplex >= 0
    if np.isfinite(max_radius):
        nn = cKDTree(xy).query(xy, k=2)[0][:, 1]
        spacing = float(np.median(nn[nn > 0])) if np.any(nn > 0) else float(np.max(span))
        a, b, c = (xy[tri.simplices[:, i]] for i in range(3))  # corners, each [T, 2]
        sides = np.linalg.norm(b - c, axis=1) * np.linalg.norm(a - c, axis=1) * np.linalg.norm(a - b, axis=1)
        area2 = np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])  # twice the area
        radius = np.divide(sides, 2.0 * area2, out=np.full(len(sides), np.inf), where=area2 > 0)  # R = abc / 4A
        inside &= radius[simplex] <= max_radius * spacing
    pix = np.flatnonzero(inside)
    s = simplex[pix]
    t = tri.transform[s]  # [P, 3, 2]
    b = np.einsum("pij,pj->pi", t[:, :2], pts[pix] - t[:, 2])
    w = np.column_stack([b, 1.0 - b.sum(axis=1)])
    w = np.clip(w, 0.0, None)
    w /= w.sum(axis=1, keepdims=True)
    return InterpOperator(
        grid_shape=(grid, grid),
        extent=(float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])),
        pixel=pix.astype(np.int32),
        neurons=tri.simplices[s].astype(np.int32),
        weights=w.astype(np.float32),
    )


def render(op: InterpOperator, values: np.ndarray) -> np.ndarray:
    """Render maps of several value vectors: ``values`` of shape (M, N) -> images of shape (M, H, W)."""
    values = np.atleast_2d(np.asarray(values, np.float32))
    h, w = op.grid_shape
    img = np.full((values.shape[0], h * w), np.nan, np.float32)
    img[:, op.pixel] = np.einsum("mpk,pk->mp", values[:, op.neurons], op.weights)
    return img.reshape(-1, h, w)


def all_nonnegative(arrays: Iterable[np.ndarray]) -> bool:
    """True when the arrays hold at least one finite value and no finite value below 0 (NaNs are ignored)."""
    seen = False
    for a in arrays:
        a = np.asarray(a)
        finite = a[np.isfinite(a)]
        if finite.size:
            seen = True
            if finite.min() < 0:
                return False
    return seen


def color_limit(arrays: Iterable[np.ndarray], percentile: float = 100.0) -> float:
    """One symmetric colour limit for all the given maps' values (every snapshot and group together).

    Args:
        arrays: arrays of any shape (e.g. NAPs of shape (S, G, N)); NaNs are ignored.
        percentile: percentile of |value| to use (100 = the maximum; lower clips rare outliers).

    Returns:
        The limit L (maps run from -L to +L); 1.0 when there are no finite values or all are zero.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"The 'percentile' parameter must be in (0, 100]. Got {percentile!r} instead.")
    if percentile == 100:  # streamed: one row of the first axis at a time, so big stacks cost no copies
        lim = 0.0
        for a in arrays:
            a = np.asarray(a)
            for row in a.reshape(len(a), -1) if a.ndim > 1 else [a]:
                finite = row[np.isfinite(row)]
                if finite.size:
                    lim = max(lim, float(np.abs(finite).max()))
        return lim if lim > 0 else 1.0
    vals = [np.abs(np.asarray(a, np.float64)).ravel() for a in arrays]
    v = np.concatenate(vals) if vals else np.zeros(0)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 1.0
    lim = float(np.percentile(v, percentile))
    return lim if lim > 0 else 1.0


def smoothness(op: InterpOperator, values: np.ndarray, n_shuffles: int = 5, random_state: int = 0) -> float:
    """Smoothness of maps on a layout, relative to the same layout with neurons shuffled.

    Roughness of a map is the mean squared difference between horizontally and vertically adjacent pixels
    inside the region; the score is ``1 - roughness(layout) / mean roughness(shuffled neuron positions)``,
    averaged over the value vectors: 0 means no smoother than a random placement, 1 a perfectly smooth map.

    Args:
        op: interpolation operator of the layout.
        values: array of shape (M, N), M maps (e.g. the class NAPs used to fit the layout).
        n_shuffles: random placements in the baseline.
        random_state: seed of the shuffles.
    """
    values = np.atleast_2d(np.asarray(values, np.float64))
    values = values[np.isfinite(values).all(axis=1)]
    if len(values) == 0:
        return float("nan")
    values = values - values.mean(axis=1, keepdims=True)

    def rough(v: np.ndarray) -> np.ndarray:
        img = render(op, v)
        dx = np.diff(img, axis=2)
        dy = np.diff(img, axis=1)
        return np.nanmean(dx.reshape(len(v), -1) ** 2, axis=1) + np.nanmean(dy.reshape(len(v), -1) ** 2, axis=1)

    rng = np.random.default_rng(random_state)
    base = np.mean([rough(values[:, rng.permutation(values.shape[1])]) for _ in range(n_shuffles)], axis=0)
    r = rough(values)
    ok = base > 0
    if not ok.any():
        return float("nan")
    return float(np.mean(1.0 - r[ok] / base[ok]))

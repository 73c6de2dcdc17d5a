"""Topographic maps: the interpolation operator from neuron values to image pixels, and colour limits.

A map is drawn once per layout as an operator (pixel -> three neurons with barycentric weights, from a Delaunay
triangulation of the neuron positions), so rendering any snapshot or group is a gather and a weighted sum
(:meth:`topotrace.analysis.results.InterpOperator.apply`); the report ships the operator instead of images.

The map region is an alpha shape: the Delaunay triangles whose circumradius is at most ``max_radius`` times the
median nearest-neighbour spacing (:func:`kept_triangles`). Triangles that bridge empty space (bays of a concave
layout, the gap to an island of neurons such as the silent units of a ReLU layer) have large circumradii, so those
pixels stay off the map (NaN) instead of being filled by interpolating across the gap. The region's exact outline
(:func:`region_outline`: the edges of exactly one kept triangle, chained into rings) travels with the operator, so
the report and the figures draw a smooth edge and a distinct off-map background instead of the pixels' staircase.
The pipeline's grid is 128 x 128 (:data:`topotrace.analysis.pipeline.GRID`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.spatial import Delaunay, cKDTree

from .results import InterpOperator


def interp_operator(xy: np.ndarray, grid: int = 128, max_radius: float = 2.5, pad: float = 0.02) -> InterpOperator:
    """Barycentric interpolation operator of a layout on a ``grid`` x ``grid`` image, with its region's outline.

    Args:
        xy: array of shape (N, 2), neuron positions (N >= 3, not all on one line).
        grid: image side in pixels.
        max_radius: triangles whose circumradius exceeds ``max_radius`` x the median nearest-neighbour distance
            are outside the region (``np.inf`` keeps the whole convex hull).
        pad: margin around the positions' bounding box, as a fraction of its size.

    Returns:
        :class:`InterpOperator` with grid_shape (grid, grid), row 0 at the bottom (smallest y); a pixel belongs to
        the map when its centre lies in a kept triangle, and ``outline`` traces the kept triangles' union exactly
        (:func:`region_outline`), so a renderer can draw a smooth edge instead of the pixels' staircase.
    """
    xy = np.asarray(xy, np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"The 'xy' parameter must have shape (N, 2). Got {xy.shape} instead.")
    if len(xy) < 3:
        raise ValueError(f"A map needs at least 3 neurons. Got {len(xy)}.")
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 2:
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
    kept = kept_triangles(xy, tri.simplices, max_radius)  # [T]
    simplex = tri.find_simplex(pts)
    inside = simplex >= 0
    inside[inside] = kept[simplex[inside]]
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
        outline=region_outline(xy, tri.simplices[kept]).astype(np.float32),
    )


def kept_triangles(xy: np.ndarray, triangles: np.ndarray, max_radius: float) -> np.ndarray:
    """Which triangles form the map region (the alpha shape): circumradius <= ``max_radius`` x the spacing.

    Args:
        xy: array of shape (N, 2), neuron positions.
        triangles: array of shape (T, 3), vertex indices (a Delaunay triangulation of ``xy``).
        max_radius: the limit in units of the median nearest-neighbour distance (``np.inf`` keeps every triangle).

    Returns:
        Array of shape (T,), bool.
    """
    triangles = np.asarray(triangles)
    if not np.isfinite(max_radius):
        return np.ones(len(triangles), bool)
    nn = cKDTree(xy).query(xy, k=2)[0][:, 1]
    span = np.ptp(xy, axis=0) if len(xy) else np.ones(2)
    spacing = float(np.median(nn[nn > 0])) if np.any(nn > 0) else float(np.max(span))
    a, b, c = (xy[triangles[:, i]] for i in range(3))  # corners, each [T, 2]
    sides = np.linalg.norm(b - c, axis=1) * np.linalg.norm(a - c, axis=1) * np.linalg.norm(a - b, axis=1)
    area2 = np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])  # twice the area
    radius = np.divide(sides, 2.0 * area2, out=np.full(len(sides), np.inf), where=area2 > 0)  # R = abc / 4A
    return radius <= max_radius * spacing


def region_outline(xy: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """The boundary of a union of triangles as closed rings: the edges that belong to exactly one triangle.

    Each triangle is turned counter-clockwise; a boundary edge keeps the direction it has in its triangle, so the
    region lies to the left of every ring: outer boundaries run counter-clockwise, holes clockwise. Edges are
    chained into rings from vertex to vertex (at a vertex where two parts of the region touch, a ring may pass
    twice); the rings are deterministic for a given input.

    Args:
        xy: array of shape (N, 2), vertex positions.
        triangles: array of shape (T, 3), vertex indices of the region's triangles (no two overlapping).

    Returns:
        Array of shape (M, 2), float64: the rings' vertices, each ring closed (its first vertex repeated at its
        end), rings separated by one NaN row; shape (0, 2) for no triangles.
    """
    xy = np.asarray(xy, np.float64)
    tris = np.asarray(triangles, np.int64).reshape(-1, 3)
    if len(tris) == 0:
        return np.zeros((0, 2))
    a, b, c = (xy[tris[:, i]] for i in range(3))
    cw = ((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]) < 0
    tris = tris.copy()
    tris[cw] = tris[cw][:, [0, 2, 1]]  # every triangle counter-clockwise
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])  # directed, [3T, 2]
    key = np.sort(edges, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    boundary = edges[counts[inverse.ravel()] == 1]  # [E, 2], region on the left
    boundary = boundary[np.lexsort((boundary[:, 1], boundary[:, 0]))]
    out_edges: dict[int, list[int]] = {}
    for u, v in boundary.tolist():
        out_edges.setdefault(u, []).append(v)
    for vs in out_edges.values():
        vs.reverse()  # pop() takes the smallest target first
    parts = []
    for start in sorted(out_edges):
        while out_edges[start]:
            ring = [start]
            u = start
            while True:
                u = out_edges[u].pop()
                ring.append(u)
                if u == start:
                    break
            parts.append(xy[ring])
            parts.append(np.full((1, 2), np.nan))
    return np.concatenate(parts[:-1])


HALO_NEIGHBOURS = ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))  # (dy, dx), first wins


def halo(op: InterpOperator) -> np.ndarray:
    """The pixels just off the map and, for each, a neighbour on the map that lends it its value.

    A renderer that draws the region's outline over the image (and masks everything off the map) fills these
    pixels first, so that the edge pixels the region covers only in part (their centre is off the map) are
    painted too. A pixel is in the halo when it is off the map and one of its 8 neighbours is on it; the first
    such neighbour in :data:`HALO_NEIGHBOURS` order lends the value (``render_maps.js`` uses the same rule).

    Returns:
        Array of shape (2, Q), int64: row 0 the halo's flat pixel indices (increasing), row 1 the lending pixels.
    """
    h, w = op.grid_shape
    inside = np.zeros((h, w), bool)
    inside.flat[np.asarray(op.pixel, np.int64)] = True
    src = np.full((h, w), -1, np.int64)
    flat = np.arange(h * w).reshape(h, w)
    for dy, dx in reversed(HALO_NEIGHBOURS):  # the first neighbour in the order is written last, so it wins
        shifted = np.zeros((h, w), bool)
        lender = np.full((h, w), -1, np.int64)
        ys, xs = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
        ys2, xs2 = slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx))
        shifted[ys, xs] = inside[ys2, xs2]
        lender[ys, xs] = flat[ys2, xs2]
        src = np.where(shifted, lender, src)
    dst = np.flatnonzero(~inside & (src >= 0))
    return np.stack([dst, src.flat[dst]])


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

    Returns:
        The score; NaN when no value vector is finite or the region holds no two adjacent pixels (explicitly,
        without a numpy warning).
    """
    values = np.atleast_2d(np.asarray(values, np.float64))
    values = values[np.isfinite(values).all(axis=1)]
    if len(values) == 0:
        return float("nan")
    values = values - values.mean(axis=1, keepdims=True)

    def mean_square(d: np.ndarray) -> np.ndarray:
        # Mean of the finite squared differences per map; NaN for a map with none (no adjacent pixel pair in the
        # region, e.g. a layout of a few neurons whose thin triangles are all dropped).
        d = d.reshape(len(d), -1).astype(np.float64)
        ok = np.isfinite(d)
        n = ok.sum(axis=1)
        total = np.where(ok, d, 0.0) ** 2
        return np.where(n > 0, total.sum(axis=1) / np.maximum(n, 1), np.nan)

    def rough(v: np.ndarray) -> np.ndarray:
        img = render(op, v)
        return mean_square(np.diff(img, axis=2)) + mean_square(np.diff(img, axis=1))

    rng = np.random.default_rng(random_state)
    base = np.mean([rough(values[:, rng.permutation(values.shape[1])]) for _ in range(n_shuffles)], axis=0)
    r = rough(values)
    ok = base > 0
    if not ok.any():
        return float("nan")
    return float(np.mean(1.0 - r[ok] / base[ok]))

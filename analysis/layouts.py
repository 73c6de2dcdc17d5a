"""2-D layouts of a layer's neurons (which neurons sit close together on a topographic map) and their quality.

Owns :class:`NeuronLayout` (a scikit-learn-style estimator: ``NeuronLayout(method="force").fit(X).embedding_``),
the self-organising map and force-directed layouts (own numpy implementations), :func:`declutter`, and the
quality scores :func:`trustworthiness_score`, :func:`shepard_score` (smoothness lives in :mod:`.maps`).

Feature vectors X have shape (N, D): one row per neuron, e.g. its NAP over the D classes at the last snapshot.
Distances between neurons are cosine distances by default, so two neurons that respond to the same classes in the
same proportions are neighbours whatever their overall scale.

Declutter. The reference study spreads overlapping neurons with a force simulation over all pairs (O(N^2) per
step, 1000 steps). Here each iteration finds only the pairs closer than a target spacing ``d0`` with a k-d tree
and pushes each such pair apart to ``d0``, with a weak pull back to the original position; the target spacing is
``spacing * sqrt(hull area / N)``. Cost is O(N log N) per iteration, and it stops once no pair is too close.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.spatial import ConvexHull, cKDTree
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.manifold import MDS, TSNE
from sklearn.manifold import trustworthiness as _sk_trustworthiness
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_is_fitted

METRICS = ("cosine", "euclidean")
HAS_UMAP = importlib.util.find_spec("umap") is not None


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """Features in a space where Euclidean distance ranks like ``metric`` (unit rows for cosine)."""
    return _normalise_rows(x) if metric == "cosine" else x


def _to_unit_square(xy: np.ndarray) -> np.ndarray:
    """Scale uniformly (keeping the aspect ratio) and centre into [0, 1]^2."""
    xy = np.asarray(xy, np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = float(np.max(hi - lo))
    if span <= 0:
        return np.full(xy.shape, 0.5)
    return np.clip((xy - (lo + hi) / 2) / span + 0.5, 0.0, 1.0)


def robust_scale(xy: np.ndarray, body: float = 0.9, max_stretch: float = 3.0, pull: float = 0.25) -> np.ndarray:
    """Scale a layout by its body, not by its extremes, so a few far-off neurons cannot squeeze the rest.

    1. Centre on the median; the body is the ``body`` fraction of neurons nearest to it.
    2. Make the body round: along the principal axes of the body, divide by its spread (robust: the 10-90 %
       range of the projections), with the stretch between the two axes limited to ``max_stretch``.
    3. Pull in neurons outside the body radius R radially: distance r -> R (1 + pull ln(r / R)), so an outlier
       group stays outside, in its direction and in its order, but near the body (10 R -> 1.58 R).

    Args:
        xy: array of shape (N, 2), positions in any scale.
        body: fraction of neurons that defines the body.
        max_stretch: largest ratio between the scale factors of the two principal axes.
        pull: strength of the logarithmic compression beyond the body radius.

    Returns:
        Array of shape (N, 2), float64, body radius 0.5 around the origin.
    """
    xy = np.asarray(xy, np.float64)
    d = xy - np.median(xy, axis=0)
    r = np.hypot(d[:, 0], d[:, 1])
    if len(xy) < 3 or not np.any(r > 0):
        return d
    inner = r <= np.quantile(r, body)
    cov = np.cov(d[inner].T) if inner.sum() >= 3 else np.cov(d.T)
    _, vecs = np.linalg.eigh(np.atleast_2d(cov))
    proj = d @ vecs  # [N, 2] along the body's principal axes
    spread = np.percentile(proj[inner], 90, axis=0) - np.percentile(proj[inner], 10, axis=0)
    spread = np.where(spread > 0, spread, max(float(spread.max()), 1e-12))
    spread = np.maximum(spread, spread.max() / max_stretch)
    d = (proj / spread) @ vecs.T  # body roughly round, orientation kept
    r = np.hypot(d[:, 0], d[:, 1])
    big_r = float(np.quantile(r, body))
    if big_r <= 0:
        big_r = float(r.max())
    far = r > big_r
    scale = np.ones(len(r))
    scale[far] = big_r * (1.0 + pull * np.log(r[far] / big_r)) / r[far]
    return d * (scale * 0.5 / big_r)[:, None]


def _pca2(x: np.ndarray, random_state: int | None) -> np.ndarray:
    xc = x - x.mean(axis=0)
    if x.shape[1] < 2:
        return np.column_stack([xc[:, 0] if x.shape[1] else np.zeros(len(x)), np.zeros(len(x))])
    out = PCA(n_components=2, svd_solver="full", random_state=random_state).fit_transform(xc)
    # Fix the sign of each axis so the result does not depend on the SVD's sign convention.
    signs = np.sign(out[np.argmax(np.abs(out), axis=0), [0, 1]])
    return out * np.where(signs == 0, 1.0, signs)


def _som(x: np.ndarray, random_state: int | None, epochs: int = 30) -> np.ndarray:
    """Batch self-organising map; each neuron sits at the distance-weighted mean of its 3 best units."""
    n = len(x)
    side = int(np.clip(np.ceil(np.sqrt(n / 2.0)), 3, 40))
    gy, gx = np.mgrid[0:side, 0:side]
    coords = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float64)  # [U, 2]
    # Linear initialisation on the plane of the first two principal components (deterministic).
    mean = x.mean(axis=0)
    xc = x - mean
    _, sv, vt = np.linalg.svd(xc, full_matrices=False)
    axes = vt[:2] * (sv[:2, None] / np.sqrt(max(n - 1, 1)))
    if axes.shape[0] < 2:
        axes = np.vstack([axes, np.zeros((2 - axes.shape[0], x.shape[1]))])
    u = (coords / max(side - 1, 1)) * 2 - 1
    w = mean + u[:, :1] * axes[0] + u[:, 1:] * axes[1]  # [U, D]
    if random_state is not None:
        w += np.random.default_rng(random_state).normal(0, 1e-6, w.shape)
    grid_d2 = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)  # [U, U]
    sig0, sig1 = side / 2.0, 0.5
    x2 = (x * x).sum(1)
    for e in range(epochs):
        sigma = sig0 * (sig1 / sig0) ** (e / max(epochs - 1, 1))
        d2 = x2[:, None] - 2 * x @ w.T + (w * w).sum(1)[None, :]  # [N, U]
        bmu = d2.argmin(axis=1)
        h = np.exp(-grid_d2[:, bmu] / (2 * sigma * sigma))  # [U, N]
        den = h.sum(axis=1, keepdims=True)
        w = np.where(den > 1e-12, (h @ x) / np.maximum(den, 1e-12), w)
    d2 = np.maximum(x2[:, None] - 2 * x @ w.T + (w * w).sum(1)[None, :], 0.0)
    best = np.argsort(d2, axis=1, kind="stable")[:, :3]
    d = np.sqrt(np.take_along_axis(d2, best, axis=1))
    wt = 1.0 / (d + 1e-3 * (d.max() + 1e-12)) ** 2
    wt /= wt.sum(axis=1, keepdims=True)
    return (coords[best] * wt[:, :, None]).sum(axis=1)


def _knn_edges(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges of the symmetrised k-nearest-neighbour graph (Euclidean on prepared features)."""
    n = len(x)
    k = min(k, n - 1)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
    rows = np.repeat(np.arange(n), k)
    cols = idx[:, 1:].ravel()
    # drop self-matches that duplicates can put outside column 0
    keep = rows != cols
    a, b = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
    pairs = np.unique(a.astype(np.int64) * n + b)
    return pairs // n, pairs % n


def _force(x: np.ndarray, random_state: int | None, k: int = 10, epochs: int = 300, n_neg: int = 5) -> np.ndarray:
    """Force-directed layout of the kNN graph: springs on edges, repulsion from sampled non-neighbours.

    Attraction on each edge and repulsion from ``n_neg`` random nodes per edge end use the Cauchy kernel
    1 / (1 + d^2) (as in t-SNE/UMAP), so the forces are O(N k) per step instead of O(N^2). Full-batch updates,
    learning rate decaying linearly to 0, start from the PCA layout.
    """
    n = len(x)
    rng = np.random.default_rng(random_state)
    ei, ej = _knn_edges(x, k)
    src = np.concatenate([ei, ej])
    dst = np.concatenate([ej, ei])
    deg = np.bincount(src, minlength=n).astype(np.float64)
    deg = np.maximum(deg, 1.0)
    y = _pca2(x, random_state)
    y = 10.0 * (y - y.mean(axis=0)) / (y.std() + 1e-12)
    y += rng.normal(0, 1e-4, y.shape)
    px, py = np.ascontiguousarray(y[:, 0]), np.ascontiguousarray(y[:, 1])  # coordinates as separate vectors
    m = n_neg * len(src)
    neg_src = np.repeat(src, n_neg) if m else src
    for e in range(epochs):
        lr = 1.0 - e / epochs
        dx, dy = px[src] - px[dst], py[src] - py[dst]  # [E]
        f = -2.0 / (1.0 + dx * dx + dy * dy)
        gx, gy = np.clip(f * dx, -4.0, 4.0), np.clip(f * dy, -4.0, 4.0)
        neg_dst = rng.integers(0, n, m)
        ndx, ndy = px[neg_src] - px[neg_dst], py[neg_src] - py[neg_dst]
        d2n = ndx * ndx + ndy * ndy
        fn = 2.0 / ((0.001 + d2n) * (1.0 + d2n))
        fn[neg_src == neg_dst] = 0.0
        px += lr * (np.bincount(src, gx, n) + np.bincount(neg_src, np.clip(fn * ndx, -4.0, 4.0), n)) / deg
        py += lr * (np.bincount(src, gy, n) + np.bincount(neg_src, np.clip(fn * ndy, -4.0, 4.0), n)) / deg
    return np.column_stack([px, py])


def declutter(
    xy: np.ndarray,
    spacing: float = 0.8,
    max_iter: int = 100,
    anchor: float = 0.02,
    random_state: int | None = 0,
) -> np.ndarray:
    """Spread overlapping neurons evenly while keeping neighbourhoods.

    Args:
        xy: array of shape (N, 2), positions in any scale.
        spacing: target distance between neighbours as a multiple of ``sqrt(hull area / N)``.
        max_iter: at most this many iterations (it stops earlier when no pair is too close).
        anchor: strength of the pull back to the original positions per iteration.
        random_state: seed of the directions that separate coincident neurons.

    Returns:
        Array of shape (N, 2), float64, scaled into [0, 1]^2.
    """
    orig = _to_unit_square(xy)
    n = len(orig)
    if n < 2:
        return orig
    try:
        area = ConvexHull(orig).volume if n >= 3 else 0.0
    except Exception:  # collinear or coincident points: scipy's QhullError
        area = 0.0
    area = max(area, 0.05)
    d0 = spacing * np.sqrt(area / n)
    rng = np.random.default_rng(random_state)
    y = orig.copy()
    for _ in range(max_iter):
        pairs = cKDTree(y).query_pairs(d0, output_type="ndarray")
        if len(pairs) == 0:
            break
        i, j = pairs[:, 0], pairs[:, 1]
        diff = y[i] - y[j]
        dist = np.sqrt((diff * diff).sum(1))
        same = dist < 1e-12
        unit = diff / np.where(same, 1.0, dist)[:, None]
        if same.any():
            ang = rng.uniform(0, 2 * np.pi, int(same.sum()))
            unit[same] = np.column_stack([np.cos(ang), np.sin(ang)])
        push = (0.5 * (d0 - np.minimum(dist, d0)))[:, None] * unit
        move = np.zeros_like(y)
        for c in range(2):
            move[:, c] = np.bincount(i, push[:, c], n) - np.bincount(j, push[:, c], n)
        y += 0.5 * move + anchor * (orig - y)
    return _to_unit_square(y)


class NeuronLayout(BaseEstimator):
    """Place neurons in 2-D so that neurons with similar feature vectors sit close together.

    Args:
        method: a name of :data:`METHODS` (:data:`REGISTRY`): ``"pca"``, ``"tsne"``, ``"mds"``, ``"som"``,
            ``"force"``, ``"umap"`` (only if the ``umap-learn`` package is installed).
        metric: ``"cosine"`` (default) or ``"euclidean"`` distance between feature vectors.
        random_state: seed; the same seed gives the same layout.
        declutter: spread overlapping neurons afterwards (see :func:`declutter`).
        n_neighbors: neighbours per neuron in the force-directed layout's graph.
        perplexity: t-SNE perplexity (capped at (N - 1) / 3).
        max_mds_neurons: MDS is refused above this many neurons (it is O(N^2) in memory and slow).

    Attributes:
        embedding_: array of shape (N, 2), float32, positions scaled into [0, 1]^2.
        seconds_: wall time of the fit.

    Example:
        >>> xy = NeuronLayout(method="pca").fit(np.random.rand(50, 10)).embedding_
    """

    def __init__(
        self,
        method: str = "force",
        metric: str = "cosine",
        random_state: int | None = 0,
        declutter: bool = True,
        n_neighbors: int = 10,
        perplexity: float = 30.0,
        max_mds_neurons: int = 1000,
    ):
        self.method = method
        self.metric = metric
        self.random_state = random_state
        self.declutter = declutter
        self.n_neighbors = n_neighbors
        self.perplexity = perplexity
        self.max_mds_neurons = max_mds_neurons

    def _validate(self, x: np.ndarray) -> np.ndarray:
        check_method(self.method)
        if not isinstance(self.metric, str):
            raise TypeError(f"The 'metric' parameter of NeuronLayout must be a str among {set(METRICS)}. "
                            f"Got {self.metric!r} instead.")
        if self.metric not in METRICS:
            raise ValueError(f"The 'metric' parameter of NeuronLayout must be a str among {set(METRICS)}. "
                             f"Got {self.metric!r} instead.")
        entry = REGISTRY[self.method]
        if not entry.available():
            raise ValueError(f"The {self.method!r} method of NeuronLayout needs the optional package "
                             f"{entry.package}, which is not installed: pip install {entry.package}, or choose "
                             f"among {', '.join(m for m in METHODS if REGISTRY[m].available())}.")
        if self.random_state is not None and not isinstance(self.random_state, (int, np.integer)):
            raise TypeError(f"The 'random_state' parameter of NeuronLayout must be an int or None. "
                            f"Got {self.random_state!r} instead.")
        x = np.asarray(x, np.float64)
        if x.ndim != 2:
            raise ValueError(f"X must have shape (n_neurons, n_features). Got shape {x.shape} instead.")
        if len(x) < 3:
            raise ValueError(f"NeuronLayout needs at least 3 neurons. Got {len(x)}.")
        if x.shape[1] < 1:
            raise ValueError(f"X must have at least one feature per neuron. Got shape {x.shape} instead.")
        if not np.isfinite(x).all():
            raise ValueError("X contains NaN or infinite values (empty groups?); drop or fill them first.")
        if self.method == "mds" and len(x) > self.max_mds_neurons:
            raise ValueError(f"The 'mds' method of NeuronLayout is limited to max_mds_neurons="
                             f"{self.max_mds_neurons} neurons. Got {len(x)}; use 'force', 'tsne' or 'pca'.")
        return x

    def fit(self, X: np.ndarray, y: None = None) -> NeuronLayout:  # noqa: N803 (scikit-learn's name)
        """Compute the layout.

        Args:
            X: array of shape (N, D), one feature vector per neuron.
            y: ignored.

        Returns:
            self, with ``embedding_`` of shape (N, 2).
        """
        import time

        t0 = time.perf_counter()
        x = self._validate(X)
        xp = _prepare(x, self.metric)
        rs = None if self.random_state is None else int(self.random_state)
        xy = REGISTRY[self.method].fit(x, xp, self)
        xy = robust_scale(xy)
        xy = declutter(xy, random_state=rs) if self.declutter else _to_unit_square(xy)
        self.embedding_ = xy.astype(np.float32)
        self.seconds_ = time.perf_counter() - t0
        return self

    def fit_transform(self, X: np.ndarray, y: None = None) -> np.ndarray:  # noqa: N803
        """Fit and return ``embedding_`` of shape (N, 2)."""
        return self.fit(X).embedding_

    @property
    def name(self) -> str:
        """Result key: the method, with ``"+declutter"`` when decluttered."""
        return self.method + ("+declutter" if self.declutter else "")

    def score(self, X: np.ndarray, y: None = None) -> float:  # noqa: N803
        """Trustworthiness (k = 7) of the fitted layout for the features ``X`` of shape (N, D)."""
        check_is_fitted(self, "embedding_", msg="This NeuronLayout instance is not fitted yet. Call 'fit' with "
                                                "the neurons' feature vectors before using it.")
        return trustworthiness_score(X, self.embedding_, metric=self.metric)


@dataclass(frozen=True)
class LayoutMethod:
    """One layout method of :data:`REGISTRY`.

    Attributes:
        name: the method's name (``NeuronLayout(method=name)``, ``--layouts``).
        fit: ``fit(x, xp, est) -> xy``: the raw features ``x`` (N, D), the same prepared for the metric ``xp``
            (:func:`_prepare`: unit rows for cosine), the estimator (its parameters) -> positions (N, 2), any scale.
        package: the optional distribution it needs (``pip install`` name), or ``""``.
        available: whether it can run here (its package is installed).
    """

    name: str
    fit: Callable[[np.ndarray, np.ndarray, NeuronLayout], np.ndarray]
    package: str = ""
    available: Callable[[], bool] = lambda: True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not callable(self.fit):
            raise TypeError(f"A layout method needs a name and a fit function. Got name {self.name!r} and fit "
                            f"{self.fit!r}.")


def _fit_tsne(x: np.ndarray, xp: np.ndarray, est: NeuronLayout) -> np.ndarray:
    perplexity = float(min(est.perplexity, max((len(x) - 1) / 3.0, 1.0)))
    # scikit-learn scales its PCA start by the first component's spread: with identical rows (e.g. every
    # neuron silent) that is 0 / 0, and Barnes-Hut t-SNE on NaN positions crashed the process.
    init = "pca" if np.ptp(x, axis=0).max() > 0 else "random"
    return TSNE(2, perplexity=perplexity, metric=est.metric, init=init,
                random_state=_seed(est)).fit_transform(x)


def _fit_mds(x: np.ndarray, xp: np.ndarray, est: NeuronLayout) -> np.ndarray:
    from sklearn.metrics import pairwise_distances

    d = pairwise_distances(x, metric=est.metric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return MDS(2, metric="precomputed", init="random", n_init=1, random_state=_seed(est),
                   normalized_stress="auto").fit_transform(d)


def _fit_umap(x: np.ndarray, xp: np.ndarray, est: NeuronLayout) -> np.ndarray:
    import umap  # optional

    return umap.UMAP(metric=est.metric, random_state=_seed(est)).fit_transform(x)


def _seed(est: NeuronLayout) -> int | None:
    return None if est.random_state is None else int(est.random_state)


def _registry(*methods: LayoutMethod) -> dict[str, LayoutMethod]:
    out: dict[str, LayoutMethod] = {}
    for m in methods:
        if m.name in out:
            raise ValueError(f"Layout method {m.name!r} is registered twice.")
        out[m.name] = m
    return out


# The layout methods: name -> how to fit it. Adding a method is one entry here (and nothing else).
REGISTRY: dict[str, LayoutMethod] = _registry(
    LayoutMethod("pca", lambda x, xp, est: _pca2(xp, _seed(est))),
    LayoutMethod("tsne", _fit_tsne),
    LayoutMethod("mds", _fit_mds),
    LayoutMethod("som", lambda x, xp, est: _som(xp, _seed(est))),
    LayoutMethod("force", lambda x, xp, est: _force(xp, _seed(est), k=int(est.n_neighbors))),
    LayoutMethod("umap", _fit_umap, package="umap-learn", available=lambda: HAS_UMAP),
)
METHODS = tuple(REGISTRY)


def check_method(name: object) -> LayoutMethod:
    """The registered layout method ``name``.

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: no method of that name (one line naming the allowed methods).
    """
    if not isinstance(name, str):
        raise TypeError(f"The 'method' parameter of NeuronLayout must be a str among {set(METHODS)}. "
                        f"Got {name!r} instead.")
    if name not in REGISTRY:
        raise ValueError(f"The 'method' parameter of NeuronLayout must be a str among {set(METHODS)}. "
                         f"Got {name!r} instead: choose one of {', '.join(METHODS)}.")
    return REGISTRY[name]


def feature_distances(x: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Pairwise distances of feature vectors: array of shape (N, N).

    Cosine distance is undefined for an all-zero vector (a neuron silent for every group, e.g. a dead ReLU
    unit); here two silent neurons are identical (distance 0) and a silent neuron is at distance 1 from every
    other neuron, which is what the layouts see after row normalisation.
    """
    from sklearn.metrics import pairwise_distances

    x = np.asarray(x, np.float64)
    if metric != "cosine":
        return pairwise_distances(x, metric=metric)
    xn = _normalise_rows(x)
    d = np.clip(1.0 - xn @ xn.T, 0.0, 2.0)
    zero = ~(np.abs(x).sum(1) > 0)
    d[np.ix_(zero, ~zero)] = 1.0
    d[np.ix_(~zero, zero)] = 1.0
    d[np.ix_(zero, zero)] = 0.0
    np.fill_diagonal(d, 0.0)
    return d


def trustworthiness_score(x: np.ndarray, xy: np.ndarray, k: int = 7, metric: str = "cosine") -> float:
    """Trustworthiness of a layout (Venna & Kaski): 1 when every layout neighbour is a feature neighbour.

    Args:
        x: array of shape (N, D), feature vectors.
        xy: array of shape (N, 2), layout.
        k: neighbours considered (reduced to ``(N - 1) // 2`` for tiny N).
        metric: feature-space metric (see :func:`feature_distances` for silent neurons under cosine).
    """
    n = len(x)
    k = int(min(k, max((n - 1) // 2, 1)))
    return float(_sk_trustworthiness(feature_distances(x, metric), np.asarray(xy, np.float64), n_neighbors=k,
                                     metric="precomputed"))


def shepard_score(
    x: np.ndarray, xy: np.ndarray, metric: str = "cosine", max_pairs: int = 200_000, random_state: int = 0
) -> float:
    """Spearman correlation between feature-space and layout distances over neuron pairs.

    Args:
        x: array of shape (N, D).
        xy: array of shape (N, 2).
        metric: feature-space metric.
        max_pairs: all pairs are used up to this many; beyond, this many pairs are drawn (seeded).
        random_state: seed of the pair sample.
    """
    x = _prepare(np.asarray(x, np.float64), metric)
    xy = np.asarray(xy, np.float64)
    n = len(x)
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, 1)
    else:
        rng = np.random.default_rng(random_state)
        i, j = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
        keep = i != j
        i, j = i[keep], j[keep]
    if metric == "cosine":
        zero = ~(np.abs(x).sum(1) > 0)
        dx = 1.0 - (x[i] * x[j]).sum(1)
        dx[zero[i] | zero[j]] = 1.0
    else:
        dx = np.sqrt(((x[i] - x[j]) ** 2).sum(1))
    dl = np.sqrt(((xy[i] - xy[j]) ** 2).sum(1))
    if np.ptp(dx) == 0 or np.ptp(dl) == 0:
        return float("nan")
    return float(sps.spearmanr(dx, dl).statistic)

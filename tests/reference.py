"""Reference implementations for the tests: plain numpy/scipy, written for clarity, not speed.

Production code keeps one implementation of each quantity (streamed, batched, from sufficient statistics);
these are the textbook forms the tests compare it with.
"""

import h5py
import numpy as np
from scipy import stats as sps


def residuals(v, labels):
    """``v`` (n,) or (n, k) with each class's mean removed, float64."""
    v = np.asarray(v, float).copy()
    for c in np.unique(labels):
        v[labels == c] -= v[labels == c].mean(axis=0)
    return v


def pearson(x, y):
    """Pearson r of every column of x (n, N) with every column of y (n, M) -> (N, M), one scipy call per pair."""
    return np.array([[sps.pearsonr(x[:, j], y[:, m]).statistic for m in range(y.shape[1])]
                     for j in range(x.shape[1])])


def pearson_within(x, y, labels):
    """Pearson r of the class residuals -> (N, M); 0 where a residual has no variation."""
    rx, ry = residuals(x, labels), residuals(y, labels)
    out = np.zeros((x.shape[1], y.shape[1]))
    for j in range(x.shape[1]):
        for m in range(y.shape[1]):
            if rx[:, j].std() > 1e-12 and ry[:, m].std() > 1e-12:
                out[j, m] = np.corrcoef(rx[:, j], ry[:, m])[0, 1]
    return out


def distinctness(x, labels):
    """Fisher trace ratio: between-class over within-class sum of squares, summed over neurons (loops)."""
    between = within = 0.0
    for j in range(x.shape[1]):
        m = x[:, j].mean()
        for c in np.unique(labels):
            v = x[labels == c, j]
            between += len(v) * (v.mean() - m) ** 2
            within += ((v - v.mean()) ** 2).sum()
    return between / within


def linear_cka(x, y):
    """Linear CKA from its definition (Kornblith et al. 2019) in feature space."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))


def group_means(acts, key, n_groups):
    """Mean of the rows of ``acts`` (n, N) per group ``key`` (n,) -> (naps (G, N) NaN when empty, counts (G,))."""
    naps = np.full((n_groups, acts.shape[1]), np.nan)
    counts = np.bincount(key, minlength=n_groups)
    for g in range(n_groups):
        if counts[g]:
            naps[g] = acts[key == g].mean(0)
    return naps, counts


def sample_distinctness(acts, labels, n_classes):
    """Per-sample distinctness by loops: leave-one-out own-class mean vs nearest other class mean."""
    out = []
    for i, a in enumerate(acts):
        own = [j for j in range(len(acts)) if labels[j] == labels[i] and j != i]
        others = [c for c in range(n_classes) if c != labels[i] and (labels == c).any()]
        if not own or not others:
            out.append(np.nan)
            continue
        d_own = np.linalg.norm(a - acts[own].mean(axis=0))
        d_other = min(np.linalg.norm(a - acts[labels == c].mean(axis=0)) for c in others)
        out.append((d_other - d_own) / (d_other + d_own) if d_other + d_own > 0 else 0.0)
    return np.array(out)


def partial_spearman(x, y, labels):
    """Spearman of x (n,) and y (n,) given the class: all-sample ranks, class means of the ranks removed."""
    rx, ry = residuals(sps.rankdata(x), labels), residuals(sps.rankdata(y), labels)
    return np.corrcoef(rx, ry)[0, 1]


def hdf5_contents(path):
    """Every dataset (name -> array) and every attribute ((name, key) -> value) of an HDF5 file."""
    data, attrs = {}, {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                attrs[(name, k)] = v
            if isinstance(obj, h5py.Dataset):
                data[name] = obj[()]
        f.visititems(visit)
        for k, v in f.attrs.items():
            attrs[("/", k)] = v
    return data, attrs

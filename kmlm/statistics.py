"""Correlations and principal components, in NumPy, for every kmlm evaluation and projection.

Spearman and Pearson correlation follow `scipy.stats.spearmanr` / `pearsonr` (ties get their
average rank; a constant input has no correlation and gives NaN, which a caller that needs a
number must decide about). `principal_components` projects rows onto their principal axes, as
word-vector plots and the word-vector initialisation of a token-embedding table need.

Example:
>>> round(spearman([1, 2, 3, 4], [20, 10, 40, 30]), 6)
0.6
>>> spearman([1, 2, 3], [5, 5, 5])
nan
"""

import numpy as np


def average_ranks(values):
    """1-based ranks with ties given the mean of the ranks they span (`scipy.stats.rankdata`).

    Example:
    >>> average_ranks([10, 20, 10, 30]).tolist()
    [1.5, 3.0, 1.5, 4.0]
    """
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(len(values), np.float64)
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # mean of ranks start+1 .. end
            start = end
    return ranks


def pearson(x, y):
    """Pearson correlation of two equally long vectors; NaN when either is constant.

    Example:
    >>> pearson([1, 2, 3], [2, 4, 6])
    1.0
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"need two equally long vectors of at least 2 values; got shapes {x.shape} and {y.shape}")
    # Compared exactly: the mean of equal floats need not equal them, which would leave noise.
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    return float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))


def spearman(x, y):
    """Spearman rank correlation: the Pearson correlation of the tie-averaged ranks; NaN
    when either vector is constant.

    Example:
    >>> round(spearman([1, 2, 2, 3], [10, 5, 4, 1]), 4)
    -0.9487
    """
    return pearson(average_ranks(x), average_ranks(y))


def principal_components(matrix, dim):
    """The rows of `matrix` [N, D], centred and projected onto their top `dim` principal
    axes ([N, dim] float64); when `dim` exceeds the axes there are (min(N, D)), the missing
    columns are zeros. Each axis's sign is whatever the SVD gives.

    Example:
    >>> points = principal_components([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]], 1)
    >>> np.abs(points).ravel().tolist()
    [5.0, 0.0, 5.0]
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or dim < 1:
        raise ValueError(f"need a [N, D] matrix and dim >= 1; got shape {matrix.shape} and dim={dim}")
    centred = matrix - matrix.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ axes[:dim].T
    return np.pad(projected, ((0, 0), (0, dim - projected.shape[1])))

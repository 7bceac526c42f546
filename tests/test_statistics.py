"""kmlm.statistics against scipy.stats and independent computations of PCA."""

import warnings

import numpy as np
import pytest
import scipy.stats

from kmlm.statistics import average_ranks, pearson, principal_components, spearman


def _scipy(function, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input before returning NaN
        return function(x, y).statistic


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 50).astype(float)  # many ties
    y = np.round(x + rng.normal(size=50), 1)
    assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-12)
    np.testing.assert_array_equal(average_ranks(y), scipy.stats.rankdata(y))


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 80).astype(float)
    y = x + rng.normal(size=80)
    assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-12)
    np.testing.assert_array_equal(average_ranks(x), scipy.stats.rankdata(x))


@pytest.mark.parametrize("constant", [[5.0] * 6, [0.1] * 6])  # the mean of six 0.1s is not 0.1
def test_constant_input_has_no_correlation_as_in_scipy(constant):
    other = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0]
    for ours, theirs in ((spearman, scipy.stats.spearmanr), (pearson, scipy.stats.pearsonr)):
        assert np.isnan(_scipy(theirs, constant, other))
        assert np.isnan(ours(constant, other)) and np.isnan(ours(other, constant))


def test_spearman_by_hand():
    # ranks x: 1 2 3 4, ranks y: 2 1 4 3 -> rho = 1 - 6 * 4 / (4 * 15) = 0.6
    assert spearman([1, 2, 3, 4], [20, 10, 40, 30]) == pytest.approx(0.6)
    # ranks of x: 1, 2.5, 2.5, 4; of y: 4, 3, 2, 1 -> Pearson of the ranks = -3 / sqrt(10)
    assert spearman([1, 2, 2, 3], [10, 5, 4, 1]) == pytest.approx(-3 / np.sqrt(10), rel=1e-12)


def test_correlations_refuse_mismatched_vectors():
    with pytest.raises(ValueError, match=r"need two equally long vectors of at least 2 values; got shapes \(2,\) and "
                                         r"\(3,\)"):
        pearson([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"got shapes \(1,\) and \(1,\)"):
        spearman([1], [2])


def _principal_axes_by_eigh(matrix):
    """The centred data's coordinates on the covariance eigenvectors, largest first."""
    centred = matrix - matrix.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    return centred @ vectors[:, np.argsort(-values)]


def _assert_equal_up_to_sign(actual, expected):
    for column in range(expected.shape[1]):
        sign = np.sign(actual[:, column] @ expected[:, column])
        np.testing.assert_allclose(actual[:, column] * sign, expected[:, column], atol=1e-9)


def test_principal_components_match_an_eigendecomposition_of_the_covariance():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(40, 6)) @ np.diag([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])  # distinct variances
    expected = _principal_axes_by_eigh(matrix)
    for dim in (1, 2, 6):
        points = principal_components(matrix, dim)
        assert points.shape == (40, dim)
        _assert_equal_up_to_sign(points, expected[:, :dim])


def test_principal_components_match_scikit_learn():
    decomposition = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(30, 5)) * [4.0, 2.0, 1.0, 0.5, 0.2] + 3.0
    expected = decomposition.PCA(n_components=3).fit_transform(matrix)
    _assert_equal_up_to_sign(principal_components(matrix, 3), expected)


def test_more_components_than_axes_are_zero_columns():
    matrix = np.random.default_rng(2).normal(size=(3, 5))  # 3 rows: at most 3 axes
    points = principal_components(matrix, 8)
    assert points.shape == (3, 8)
    np.testing.assert_array_equal(points[:, 3:], 0.0)
    _assert_equal_up_to_sign(points[:, :2], _principal_axes_by_eigh(matrix)[:, :2])
    with pytest.raises(ValueError, match=r"need a \[N, D\] matrix and dim >= 1; got shape \(3,\) and dim=2"):
        principal_components([1.0, 2.0, 3.0], 2)

"""GloVe's compiled AdaGrad trainer against a hand-computed update, finite differences of the
loss, an independent NumPy update, and its determinism with one worker."""

import numpy as np
import pytest

from kmlm.wordvec.glove import glove_weights
from kmlm.wordvec.glove_kernel import epoch_order, initial_tables, train_entries, train_epoch


def _tiny_entries(vocabulary_size=6, seed=0):
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(rng.random((vocabulary_size, vocabulary_size)) < 0.6)
    values = rng.uniform(0.5, 150.0, len(rows))  # some above x_max, where f is 1
    return rows.astype(np.int32), cols.astype(np.int32), np.log(values), glove_weights(values, 100.0, 0.75)


def _numpy_epoch(w, c, bw, bc, order, rows, cols, log_counts, weights, lr):
    """GloVe's AdaGrad written out with whole-row NumPy operations, one entry at a time."""
    w, c, bw, bc = w.copy(), c.copy(), bw.copy(), bc.copy()
    gw, gc, gbw, gbc = np.ones_like(w), np.ones_like(c), np.ones_like(bw), np.ones_like(bc)
    loss = 0.0
    for entry in order:
        i, j = rows[entry], cols[entry]
        error = w[i] @ c[j] + bw[i] + bc[j] - log_counts[entry]
        loss += 0.5 * weights[entry] * error**2
        grad_w, grad_c = lr * weights[entry] * error * c[j], lr * weights[entry] * error * w[i]
        grad_b = lr * weights[entry] * error
        w[i] = w[i] - grad_w / np.sqrt(gw[i])
        c[j] = c[j] - grad_c / np.sqrt(gc[j])
        gw[i] += grad_w**2
        gc[j] += grad_c**2
        bw[i] -= grad_b / np.sqrt(gbw[i])
        bc[j] -= grad_b / np.sqrt(gbc[j])
        gbw[i] += grad_b**2
        gbc[j] += grad_b**2
    return w, c, bw, bc, loss


def _single_entry_tables(word_row, context_row, word_bias, context_bias):
    """Tables of two words whose entry (0, 1) has the given rows and biases; accumulators 1."""
    tables = initial_tables(2, len(word_row), seed=0)
    tables.word[0], tables.context[1] = word_row, context_row
    tables.word_bias[0], tables.context_bias[1] = word_bias, context_bias
    return tables


def _train_one(tables, log_count, weight, lr):
    arrays = (tables.word, tables.context, tables.word_bias, tables.context_bias, tables.word_squares,
              tables.context_squares, tables.word_bias_squares, tables.context_bias_squares)
    entry = (np.array([0], np.int32), np.array([1], np.int32), np.array([log_count]), np.array([weight]))
    return train_entries(*arrays, *entry, np.array([0], np.int64), lr)


def test_two_updates_of_one_entry_equal_a_hand_computation():
    # w = (0.1, 0.2), w~ = (0.3, -0.1), b = 0.05, b~ = -0.02, log X = 1, f = 0.5, lr = 0.05:
    # e = 0.03 - 0.02 + 0.05 - 0.02 - 1 = -0.96, loss = 0.5 * 0.5 * 0.96^2 = 0.2304, g = lr f e = -0.024;
    # with every accumulator at 1: w -= g w~, w~ -= g w, b -= g, G += (g w~)^2, G~ += (g w)^2, H += g^2.
    tables = _single_entry_tables([0.1, 0.2], [0.3, -0.1], 0.05, -0.02)
    assert _train_one(tables, 1.0, 0.5, 0.05) == pytest.approx(0.2304, rel=1e-12)
    np.testing.assert_allclose(tables.word[0], [0.1072, 0.1976], rtol=1e-12)
    np.testing.assert_allclose(tables.context[1], [0.3024, -0.0952], rtol=1e-12)
    assert (tables.word_bias[0], tables.context_bias[1]) == pytest.approx((0.074, 0.004), rel=1e-12)
    np.testing.assert_allclose(tables.word_squares[0], [1 + 0.0072**2, 1 + 0.0024**2], rtol=1e-12)
    np.testing.assert_allclose(tables.context_squares[1], [1 + 0.0024**2, 1 + 0.0048**2], rtol=1e-12)
    assert tables.word_bias_squares[0] == tables.context_bias_squares[1] == pytest.approx(1 + 0.024**2, rel=1e-12)
    # Second visit: e = 0.1072 * 0.3024 - 0.1976 * 0.0952 + 0.078 - 1 = -0.90839424, and every step is now
    # divided by the square root of its accumulator.
    error = 0.1072 * 0.3024 - 0.1976 * 0.0952 + 0.074 + 0.004 - 1
    assert _train_one(tables, 1.0, 0.5, 0.05) == pytest.approx(0.25 * error**2, rel=1e-12)
    g = 0.05 * 0.5 * error
    np.testing.assert_allclose(tables.word[0], [0.1072 - g * 0.3024 / np.sqrt(1 + 0.0072**2),
                                                0.1976 + g * 0.0952 / np.sqrt(1 + 0.0024**2)], rtol=1e-12)
    np.testing.assert_allclose(tables.context[1], [0.3024 - g * 0.1072 / np.sqrt(1 + 0.0024**2),
                                                   -0.0952 - g * 0.1976 / np.sqrt(1 + 0.0048**2)], rtol=1e-12)
    assert tables.word_bias[0] == pytest.approx(0.074 - g / np.sqrt(1 + 0.024**2), rel=1e-12)


def test_the_first_step_is_the_learning_rate_times_the_loss_gradient():
    """With accumulators at 1, the step of every parameter is -lr times the derivative of
    f e^2 / 2, taken here by central finite differences of the loss alone."""
    rng = np.random.default_rng(4)
    dim, log_count, weight, lr = 5, np.log(7.0), 0.3, 0.05
    start = [rng.normal(size=dim), rng.normal(size=dim), rng.normal(), rng.normal()]

    def loss(word_row, context_row, word_bias, context_bias):
        return 0.5 * weight * (word_row @ context_row + word_bias + context_bias - log_count) ** 2

    def derivative(position, index=None, h=1e-6):
        plus, minus = [np.copy(p) for p in start], [np.copy(p) for p in start]
        if index is None:
            plus[position], minus[position] = plus[position] + h, minus[position] - h
        else:
            plus[position][index] += h
            minus[position][index] -= h
        return (loss(*plus) - loss(*minus)) / (2 * h)

    tables = _single_entry_tables(*start)
    assert _train_one(tables, log_count, weight, lr) == pytest.approx(loss(*start), rel=1e-12)
    for position, got in [(0, tables.word[0]), (1, tables.context[1])]:
        want = start[position] - lr * np.array([derivative(position, d) for d in range(dim)])
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    assert tables.word_bias[0] == pytest.approx(start[2] - lr * derivative(2), rel=1e-7)
    assert tables.context_bias[1] == pytest.approx(start[3] - lr * derivative(3), rel=1e-7)


def test_one_epoch_equals_a_numpy_adagrad_update():
    rows, cols, log_counts, weights = _tiny_entries()
    tables = initial_tables(6, 4, seed=3)
    tables.word *= 40  # rows far from zero, so that every term of the update matters
    tables.context *= 40
    start = (tables.word.copy(), tables.context.copy(), tables.word_bias.copy(), tables.context_bias.copy())
    order = epoch_order(len(rows), seed=1, epoch=0)
    loss = train_entries(tables.word, tables.context, tables.word_bias, tables.context_bias, tables.word_squares,
                         tables.context_squares, tables.word_bias_squares, tables.context_bias_squares,
                         rows, cols, log_counts, weights, order, 0.05)
    w, c, bw, bc, expected_loss = _numpy_epoch(*start, order, rows, cols, log_counts, weights, 0.05)
    assert not np.allclose(w, start[0], atol=1e-3)  # the epoch moved the rows
    for got, want in [(tables.word, w), (tables.context, c), (tables.word_bias, bw), (tables.context_bias, bc)]:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert loss == pytest.approx(expected_loss, rel=1e-6)


def test_epochs_lower_the_loss_and_shuffle_differently():
    entries = _tiny_entries(vocabulary_size=20)
    tables = initial_tables(20, 8, seed=0)
    losses = [train_epoch(tables, *entries, lr=0.05, workers=2, seed=0, epoch=e) for e in range(30)]
    assert losses[-1] < 0.2 * losses[0] and losses[10] < losses[0]
    assert not np.array_equal(epoch_order(100, 0, 0), epoch_order(100, 0, 1))
    assert sorted(epoch_order(100, 0, 0)) == list(range(100))


def test_one_worker_and_a_seed_give_the_same_tables():
    entries = _tiny_entries(vocabulary_size=12)

    def run(seed):
        tables = initial_tables(12, 5, seed=seed)
        for epoch in range(3):
            train_epoch(tables, *entries, lr=0.05, workers=1, seed=seed, epoch=epoch)
        return tables.vectors()

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.allclose(run(7), run(8))

"""GloVe's compiled AdaGrad trainer against an independent NumPy update, its loss, and its
determinism with one worker."""

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

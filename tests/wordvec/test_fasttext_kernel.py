"""The compiled fastText trainer: one skip-gram and one CBOW update against fastText's update
computed pair by pair in NumPy, every row of a word taking the whole gradient, and the same
vectors from one worker and a seed."""

import numpy as np
import pytest
import tensorflow as tf

from kmlm.wordvec import fasttext_kernel as kernel
from kmlm.wordvec.fasttext import FastTextSettings, train_fasttext
from tests.wordvec.test_fasttext import inflected_corpus


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _tables(seed, words=5, ngram_rows=6, dim=7, scale=0.3):
    rng = np.random.default_rng(seed)
    syn0 = (rng.standard_normal((words + ngram_rows, dim)) * scale).astype(np.float32)
    syn1 = (rng.standard_normal((words, dim)) * scale).astype(np.float32)
    return syn0, syn1


# Word w's rows: its own row w, then n-gram rows 5..10; word 0 lists row 7 twice, as fastText
# keeps a repeated n-gram (or two n-grams hashed to one bucket).
SUBWORDS = np.array([[0, 5, 7, 7, 9], [1, 6, 8, -1, -1], [2, 5, 10, -1, -1], [3, -1, -1, -1, -1],
                     [4, 9, 10, 6, -1]])


def _rows(word):
    return [r for r in SUBWORDS[word] if r >= 0]


def _fasttext_pair(syn0, syn1, input_rows, outputs, lr):
    """fastText's `Model::update` for one input (the mean of `input_rows`) and its outputs (the
    true word, then negatives), in float64: each output row moves as it is scored, then every
    input row, once per time it is listed, by the whole input gradient. Returns the loss."""
    hidden = syn0[input_rows].mean(axis=0)
    gradient = np.zeros_like(hidden)
    loss = 0.0
    for k, o in enumerate(outputs):
        label = 1.0 if k == 0 else 0.0
        score = hidden @ syn1[o]
        loss += np.logaddexp(0, -score if label else score)
        g = lr * (label - _sigmoid(score))
        gradient += g * syn1[o]
        syn1[o] += g * hidden
    for r in input_rows:
        syn0[r] += gradient
    return loss


def test_skipgram_step_is_fasttexts_update_pair_by_pair():
    syn0, syn1 = _tables(0)
    outputs = np.array([[1, 3, 4], [2, 0, 3], [4, 1, 2]], np.int32)  # context words, each with its negatives
    expected0, expected1 = syn0.astype(np.float64), syn1.astype(np.float64)
    # The target predicts each context word from its own rows' mean, recomputed before each pair.
    expected_loss = sum(_fasttext_pair(expected0, expected1, _rows(0), pair, 0.2) for pair in outputs)

    starts, rows, gains = kernel.word_rows(SUBWORDS)
    loss = kernel.skipgram_step(syn0, syn1, rows[starts[0]:starts[1]], gains[0], outputs, 0.2)
    np.testing.assert_allclose(syn0, expected0, atol=1e-5)
    np.testing.assert_allclose(syn1, expected1, atol=1e-5)
    assert loss == pytest.approx(expected_loss, rel=1e-4)
    untouched = [r for r in range(len(syn0)) if r not in _rows(0)]
    np.testing.assert_array_equal(syn0[untouched], _tables(0)[0][untouched])


def test_cbow_step_is_fasttexts_update_of_all_the_context_words_rows():
    syn0, syn1 = _tables(1)
    contexts, outputs = np.array([1, 3, 4], np.int32), np.array([2, 0, 4], np.int32)
    expected0, expected1 = syn0.astype(np.float64), syn1.astype(np.float64)
    # One mean over every row of every context word (gensim's and fastText's), not a mean of means.
    all_rows = [r for word in contexts for r in _rows(word)]
    expected_loss = _fasttext_pair(expected0, expected1, all_rows, outputs, 0.1)

    starts, rows, _ = kernel.word_rows(SUBWORDS)
    loss = kernel.cbow_step(syn0, syn1, starts, rows, contexts, outputs, 0.1)
    np.testing.assert_allclose(syn0, expected0, atol=1e-6)
    np.testing.assert_allclose(syn1, expected1, atol=1e-6)
    assert loss == pytest.approx(expected_loss, rel=1e-4)


def test_every_row_of_a_word_takes_the_whole_gradient():
    syn0, syn1 = _tables(2)
    before0, before1 = syn0.copy(), syn1.copy()
    starts, rows, gains = kernel.word_rows(SUBWORDS)
    word_rows = rows[starts[1]:starts[2]]  # word 1: rows 1, 6, 8, each listed once
    kernel.skipgram_step(syn0, syn1, word_rows, gains[1], np.array([[3, 0]], np.int32), 0.5)
    hidden = before0[word_rows].mean(axis=0)
    g = 0.5 * (np.array([1.0, 0.0]) - _sigmoid(before1[[3, 0]] @ hidden))
    gradient = g @ before1[[3, 0]]  # the gradient of the mean itself, not a third of it
    for r in word_rows:
        np.testing.assert_allclose(syn0[r] - before0[r], gradient, atol=1e-6)
    np.testing.assert_allclose(syn0[word_rows].mean(axis=0) - hidden, gradient, atol=1e-6)


def test_rows_listed_twice_move_twice_and_their_mean_by_the_gain():
    starts, rows, gains = kernel.word_rows(SUBWORDS)
    assert rows[starts[0]:starts[1]].tolist() == [0, 5, 7, 7, 9]
    assert gains.tolist() == [pytest.approx((1 + 1 + 4 + 1) / 5), 1.0, 1.0, 1.0, 1.0]
    syn0, syn1 = _tables(3)
    before = syn0.copy()
    kernel.skipgram_step(syn0, syn1, rows[starts[0]:starts[1]], gains[0], np.array([[2, 1]], np.int32), 0.5)
    change = syn0[0] - before[0]
    np.testing.assert_allclose(syn0[7] - before[7], 2 * change, atol=1e-6)
    np.testing.assert_allclose(syn0[[5, 9]] - before[[5, 9]], [change, change], atol=1e-6)


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_one_worker_and_a_seed_give_the_same_vectors(model):
    documents = tf.data.Dataset.from_tensor_slices(inflected_corpus(1000))
    settings = FastTextSettings(model=model, dim=16, window=3, min_count=1, epochs=3, buckets=2000, workers=1, seed=3)
    first, second = (train_fasttext(documents, settings) for _ in range(2))
    np.testing.assert_array_equal(first.vectors.word_rows, second.vectors.word_rows)
    np.testing.assert_array_equal(first.vectors.ngram_rows, second.vectors.ngram_rows)
    np.testing.assert_array_equal(first.output_rows, second.output_rows)
    other = train_fasttext(documents, FastTextSettings(**{**vars(settings), "seed": 4}))
    assert not np.allclose(first.vectors.word_rows, other.vectors.word_rows)
    assert first.history["loss"][-1] < first.history["loss"][0]

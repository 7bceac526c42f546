"""The compiled CPU trainer of fastText (skip-gram and CBOW with negative sampling).

fastText is word2vec whose input vector of a word is the mean of several rows of the input
table: the word's own row and a row per character n-gram (`word_rows`). The trainer is
`kmlm.wordvec.word2vec_kernel`'s (subsampling, reduced windows, negatives from the alias
table, linear learning-rate decay, Hogwild workers without the GIL, word2vec's generator);
only the updates differ, and they are fastText's:

```
skip-gram, target w at i:  h = mean(syn0[rows(w)])
    for each context word c of i:  h against syn1[c] (label 1) and K fresh negatives (label 0)
                                   h += e,  total += e   (e: the input gradient of this pair)
    syn0[r] += total for every row r of w
CBOW, target w:            h = mean of syn0 over the rows of all the context words together
                           h against syn1[w] and K negatives; every one of those rows += e
```

Every row gets the whole gradient e, not its share of the mean, as fastText and gensim move
them. fastText (and gensim) recompute the target's mean before each context word and move
its rows after each; since every row moves by the same e, the mean moves by exactly e (more
where a row is listed twice: `word_rows`' mean gain), so the trainer keeps h and adds the
context words' gradients to the rows once per target: the same update, with one gather and
one scatter per target instead of one per pair.

Example:
>>> starts, rows, gains = word_rows(np.array([[0, 2, -1], [1, 2, 3]]))
>>> syn0 = np.array([[0.2, 0.0], [0.0, 0.2], [0.2, 0.2], [0.3, -0.1]], np.float32)
>>> syn1 = np.array([[0.5, 0.5], [0.0, 0.0]], np.float32)
>>> loss = skipgram_step(  # word 0 predicts word 1 (label 1), word 0 the negative (label 0)
...     syn0, syn1, rows[starts[0]:starts[1]], gains[0], np.array([[1, 0]], np.int32), 1.0)
>>> [round(float(x), 3) for x in syn1[1]]  # the context word's output row moved by g * h
[0.1, 0.05]
>>> [round(float(x), 3) for x in syn0[0] - [0.2, 0.0]], [round(float(x), 3) for x in syn0[2] - [0.2, 0.2]]
([-0.269, -0.269], [-0.269, -0.269])
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kmlm.wordvec.word2vec_kernel import (
    PIECE_WORDS, add_to_rows, cbow_update, draw_outputs, mean_of_rows, run_spans, score_outputs, subsample,
    window_words,
)

_KERNEL = dict(nogil=True, fastmath=True, cache=True)


def word_rows(subwords) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of each word, from a [V, L] matrix padded with -1 (`fasttext.subword_matrix`),
    as one flat array: word w's rows are `rows[starts[w]:starts[w + 1]]`; and how far the mean
    of each word's rows moves when every one of its rows gets a change e: e times 1, or more
    where a row repeats (it gets e once per time it is listed, as fastText adds it).

    Returns:
        (starts [V + 1] int64, rows int32, mean_gains [V] float32).

    Example:
    >>> starts, rows, gains = word_rows(np.array([[0, 5, 5], [1, -1, -1]]))
    >>> starts.tolist(), rows.tolist(), [round(float(g), 3) for g in gains]  # (x0 + 2 x5) / 3 moves by 5 e / 3
    ([0, 3, 4], [0, 5, 5, 1], [1.667, 1.0])
    """
    subwords = np.asarray(subwords)
    present = subwords >= 0
    sizes = present.sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    gains = np.ones(len(subwords), np.float32)
    ordered = np.sort(np.where(present, subwords, -1 - np.arange(subwords.shape[1])), axis=1)
    for w in np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1)):  # words with a repeated row
        _, times = np.unique(subwords[w][present[w]], return_counts=True)
        gains[w] = (times ** 2).sum() / sizes[w]
    return starts, subwords[present].astype(np.int32), gains


@njit(**_KERNEL)
def _skipgram_update(syn0, syn1, rows, begin, end, gain, outputs, stride, counts, m, lr, hidden, neu1e, total):
    """The target whose rows are `rows[begin:end]` (`gain`: its `word_rows` mean gain) against
    each context word a < m: the output rows `outputs[a * stride:][:counts[a]]` (the context
    word, then its negatives)."""
    dim = syn0.shape[1]
    mean_of_rows(syn0, rows, begin, end, hidden)
    for d in range(dim):
        total[d] = 0.0
    loss = np.float32(0.0)
    for a in range(m):
        for d in range(dim):
            neu1e[d] = 0.0
        loss += score_outputs(syn1, hidden, outputs, a * stride, counts[a], lr, neu1e)
        for d in range(dim):
            hidden[d] += gain * neu1e[d]
            total[d] += neu1e[d]
    add_to_rows(syn0, rows, begin, end, total)
    return loss


@njit(**_KERNEL)
def _gather_rows(starts, rows, words, m, gathered):
    """Writes the rows of `words[:m]` one word after another into `gathered`; returns how many."""
    n = 0
    for a in range(m):
        w = words[a]
        for r in range(starts[w], starts[w + 1]):
            gathered[n] = rows[r]
            n += 1
    return n


@njit(**_KERNEL)
def skipgram_step(syn0, syn1, rows, gain, outputs, lr):
    """One skip-gram target: the mean of the rows `rows` of syn0 (`gain`: their `word_rows` mean
    gain) against the output rows of each context word, `outputs[a]` ([m, 1 + K]: the context
    word, label 1, then its negatives, label 0). Returns the summed logistic loss."""
    dim = syn0.shape[1]
    m, stride = outputs.shape
    buffers = (np.empty(dim, np.float32), np.empty(dim, np.float32), np.empty(dim, np.float32))
    return _skipgram_update(syn0, syn1, rows, 0, rows.shape[0], np.float32(gain), outputs.ravel(), stride,
                            np.full(m, stride, np.int64), m, lr, *buffers)


@njit(**_KERNEL)
def cbow_step(syn0, syn1, starts, rows, contexts, outputs, lr):
    """One CBOW target: the mean of all the rows of the context words `contexts` (`word_rows`'
    `starts`, `rows`) against the output rows `outputs` (the target, then negatives). Returns
    the summed logistic loss."""
    dim = syn0.shape[1]
    gathered = np.empty(starts[-1] * contexts.shape[0], np.int32)
    n = _gather_rows(starts, rows, contexts, contexts.shape[0], gathered)
    return cbow_update(syn0, syn1, gathered, n, outputs, outputs.shape[0], lr, np.empty(dim, np.float32),
                       np.empty(dim, np.float32))


@njit(**_KERNEL)
def _train_piece(syn0, syn1, words, accept, alias, starts, rows, gains, cbow, window, negatives, lr, state, buffers):
    """Trains every target of one subsampled piece of a document; returns (loss, examples, state)."""
    contexts, outputs, counts, gathered, hidden, neu1e, total = buffers
    loss = 0.0
    examples = 0
    for i in range(words.shape[0]):
        m, state = window_words(words, i, window, contexts, state)
        if m == 0:
            continue
        target = words[i]
        if cbow:
            k_out, state = draw_outputs(accept, alias, target, negatives, outputs, 0, state)
            n = _gather_rows(starts, rows, contexts, m, gathered)
            loss += cbow_update(syn0, syn1, gathered, n, outputs, k_out, lr, hidden, neu1e)
            examples += 1
        else:
            for a in range(m):  # fastText draws fresh negatives for every context word
                counts[a], state = draw_outputs(accept, alias, contexts[a], negatives, outputs, a * (1 + negatives),
                                                state)
            loss += _skipgram_update(syn0, syn1, rows, starts[target], starts[target + 1], gains[target], outputs,
                                     1 + negatives, counts, m, lr, hidden, neu1e, total)
            examples += m
    return loss, examples, state


@njit(**_KERNEL)
def train_span(syn0, syn1, ids, span, keep, accept, alias, starts, rows, gains, cbow, window, negatives, lr_begin,
               lr_end, seed):
    """Trains the documents `span[0]..span[-1]` of the id stream `ids` for one epoch, the
    learning rate going linearly from `lr_begin` to `lr_end` over the span's words.

    Args:
        syn0: [V + buckets, D] float32 input table (word rows, then n-gram rows), in place.
        syn1: [V, D] float32 output table, in place.
        ids, span, keep, accept, alias, cbow, window, negatives, seed: as
            `word2vec_kernel.train_span` (`span` is its `starts`).
        starts, rows, gains: each word's rows of syn0 and their mean gain (`word_rows`).

    Returns:
        (summed logistic loss, examples trained): a (target, context) pair in skip-gram, a
        target in CBOW.
    """
    state = np.uint64(seed)
    span_words = max(1, span[-1] - span[0])
    most_rows = 0
    for w in range(starts.shape[0] - 1):
        most_rows = max(most_rows, starts[w + 1] - starts[w])
    dim = syn0.shape[1]
    piece = np.empty(PIECE_WORDS, dtype=np.int32)
    buffers = (np.empty(2 * window, np.int32), np.empty(2 * window * (1 + negatives), np.int32),
               np.empty(2 * window, np.int64), np.empty(2 * window * most_rows, np.int32),
               np.empty(dim, np.float32), np.empty(dim, np.float32), np.empty(dim, np.float32))
    loss = 0.0
    examples = 0
    for document in range(span.shape[0] - 1):
        begin = span[document]
        while begin < span[document + 1]:
            end = min(begin + PIECE_WORDS, span[document + 1])
            lr = lr_begin + (lr_end - lr_begin) * ((begin - span[0]) / span_words)
            n, state = subsample(ids, begin, end, keep, piece, state)
            piece_loss, piece_examples, state = _train_piece(syn0, syn1, piece[:n], accept, alias, starts, rows, gains,
                                                             cbow, window, negatives, lr, state, buffers)
            loss += piece_loss
            examples += piece_examples
            begin = end
    return loss, examples


def train_epoch(syn0, syn1, ids, spans, keep, negatives_table, subwords, *, workers, cbow, window, negatives, lr_begin,
                lr_end, seed, epoch):
    """One epoch of `train_span` over `spans` on `workers` threads (`word2vec_kernel.run_spans`);
    `subwords` is `word_rows`' (starts, rows, gains). Returns (summed loss, examples)."""

    def train(span, begin, end, span_seed):
        return train_span(syn0, syn1, ids, span, keep, *negatives_table, *subwords, cbow, window, negatives, begin,
                          end, np.uint64(span_seed))

    return run_spans(train, spans, workers=workers, lr_begin=lr_begin, lr_end=lr_end, seed=seed, epoch=epoch)

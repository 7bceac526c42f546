"""The compiled CPU trainer of word2vec with negative sampling (skip-gram and CBOW).

One Numba-compiled function trains a span of documents for one epoch: it subsamples the
frequent words, draws each target's reduced window and its negatives, and applies the SGD
updates in place. Workers train disjoint spans at the same time on the same tables without
locks (Hogwild), each in a thread that the compiled code runs without the GIL, taking the next
span of the corpus as it finishes one.

Skip-gram shares one draw of K negatives among all the context words of a target window, as
Intel's HogBatch does (Ji et al. 2016): the window's scores are one [m, 1 + K] matrix product
of the m context rows with the output rows of the target and its negatives, so those output
rows are read and written once per window instead of once per pair:

```
X = syn0[contexts]  [m, D]      Y = syn1[target, negatives]  [1 + K, D]
G = lr * (labels - sigmoid(X Y^T))   [m, 1 + K]   (labels: 1 for the target, 0 for negatives)
syn0[contexts] += G Y               syn1[target, negatives] += G^T X
```

CBOW is word2vec's: the mean h of the context rows scores the target and K negatives; the
output rows move by g h and every context row by the whole sum of g * output row.

Randomness is word2vec's linear congruential generator, seeded per worker and epoch, so one
worker with a seed gives the same vectors on every run.

Example:
>>> syn0 = np.array([[0.1, 0.2], [0.3, -0.1], [0.0, 0.4]], np.float32)
>>> syn1 = np.zeros((3, 2), np.float32)
>>> float(skipgram_step(syn0, syn1, np.array([0, 1]), np.array([2, 1]), 0.5, step_scratch(1, 2)))
2.772588...
>>> [round(float(x), 3) for x in syn1[2]]  # the target's output row moved towards both context rows
[0.1, 0.025]
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit

# Words in one piece of a document: windows never cross pieces (word2vec: 1000, gensim: 10000).
PIECE_WORDS = 10_000
_LCG_MULTIPLIER = np.uint64(25214903917)
_LCG_INCREMENT = np.uint64(11)
_KERNEL = dict(nogil=True, fastmath=True, cache=True)


@njit(**_KERNEL)
def next_random(state):
    return state * _LCG_MULTIPLIER + _LCG_INCREMENT


# sigmoid and softplus as tables over [-_MAX_SCORE, _MAX_SCORE], read with linear interpolation
# (error under 1e-6, where a libm exp and log1p per score would take half the time of an
# update); beyond the range sigmoid is 0 or 1 and softplus(x) is max(x, 0), as word2vec
# clips scores beyond +-6.
_MAX_SCORE = 12.0
_TABLE_STEPS = 6144
_TABLE_POINTS = np.linspace(-_MAX_SCORE, _MAX_SCORE, _TABLE_STEPS + 1)
_SIGMOID = (1.0 / (1.0 + np.exp(-_TABLE_POINTS))).astype(np.float32)
_SOFTPLUS = np.logaddexp(0.0, _TABLE_POINTS).astype(np.float32)
_STEPS_PER_UNIT = _TABLE_STEPS / (2 * _MAX_SCORE)


@njit(**_KERNEL)
def _interpolate(table, x):
    """table at x, for -_MAX_SCORE < x < _MAX_SCORE."""
    position = np.float32((x + _MAX_SCORE) * _STEPS_PER_UNIT)
    i = min(np.int64(position), _TABLE_STEPS - 1)
    fraction = position - np.float32(i)
    return table[i] + fraction * (table[i + 1] - table[i])


@njit(**_KERNEL)
def below(state, n):
    """A number in 0..n-1 from the top 32 bits of `state` (a multiply and a shift, not a division)."""
    return ((state >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)


@njit(**_KERNEL)
def logistic(score, label):
    """(label - sigmoid(score), the logistic loss of `score` for `label`)."""
    if score >= _MAX_SCORE:
        sigmoid = np.float32(1.0)
    elif score <= -_MAX_SCORE:
        sigmoid = np.float32(0.0)
    else:
        sigmoid = _interpolate(_SIGMOID, score)
    x = -score if label > 0 else score  # the loss is softplus(x)
    if x >= _MAX_SCORE:
        loss = np.float32(x)
    elif x <= -_MAX_SCORE:
        loss = np.float32(0.0)
    else:
        loss = _interpolate(_SOFTPLUS, x)
    return np.float32(label) - sigmoid, loss


def step_scratch(negatives: int, dim: int) -> tuple:
    """The scratch buffers of `skipgram_step` and `cbow_step` for up to 1 + `negatives` outputs."""
    return (np.empty((1 + negatives, dim), np.float32), np.empty((1 + negatives, dim), np.float32),
            np.empty(dim, np.float32), np.empty(dim, np.float32))


# The updates index the tables directly (no row views, no slices): a view in a loop costs
# Numba a reference count each time, several times the arithmetic of a row of 100.


@njit(**_KERNEL)
def _skipgram_update(syn0, syn1, contexts, m, outputs, k_out, lr, old_outputs, output_change, neu1e):
    dim = syn0.shape[1]
    lr = np.float32(lr)
    for k in range(k_out):
        o = outputs[k]
        for d in range(dim):
            old_outputs[k, d] = syn1[o, d]
            output_change[k, d] = 0.0
    loss = np.float32(0.0)
    for a in range(m):
        c = contexts[a]
        for d in range(dim):
            neu1e[d] = 0.0
        for k in range(k_out):
            score = np.float32(0.0)
            for d in range(dim):
                score += syn0[c, d] * old_outputs[k, d]
            g, pair_loss = logistic(score, 1.0 if k == 0 else 0.0)
            loss += pair_loss
            g *= lr
            for d in range(dim):
                neu1e[d] += g * old_outputs[k, d]
                output_change[k, d] += g * syn0[c, d]
        for d in range(dim):
            syn0[c, d] += neu1e[d]
    for k in range(k_out):
        o = outputs[k]
        for d in range(dim):
            syn1[o, d] += output_change[k, d]
    return loss


# The row helpers are inlined into their callers: a call passing several arrays costs as much as
# the arithmetic of a CBOW update (measured: CBOW 10% slower without inlining).


@njit(**_KERNEL, inline="always")
def mean_of_rows(table, rows, begin, end, hidden):
    """hidden = the mean of the rows `rows[begin:end]` of `table`."""
    dim = table.shape[1]
    for d in range(dim):
        hidden[d] = 0.0
    for a in range(begin, end):
        r = rows[a]
        for d in range(dim):
            hidden[d] += table[r, d]
    inverse = np.float32(1.0 / max(1, end - begin))
    for d in range(dim):
        hidden[d] *= inverse


@njit(**_KERNEL, inline="always")
def add_to_rows(table, rows, begin, end, change):
    """Adds `change` to each of the rows `rows[begin:end]` of `table` (a row listed twice, twice)."""
    dim = table.shape[1]
    for a in range(begin, end):
        r = rows[a]
        for d in range(dim):
            table[r, d] += change[d]


@njit(**_KERNEL, inline="always")
def score_outputs(syn1, hidden, outputs, first, k_out, lr, neu1e):
    """Scores `hidden` against the output rows `outputs[first:first + k_out]` (the first
    labelled 1, the rest 0): each output row moves by g * hidden and neu1e gains g * the row it
    had. Returns the summed logistic loss."""
    dim = syn1.shape[1]
    lr = np.float32(lr)
    loss = np.float32(0.0)
    for k in range(k_out):
        o = outputs[first + k]
        score = np.float32(0.0)
        for d in range(dim):
            score += hidden[d] * syn1[o, d]
        g, pair_loss = logistic(score, 1.0 if k == 0 else 0.0)
        loss += pair_loss
        g *= lr
        for d in range(dim):
            neu1e[d] += g * syn1[o, d]
            syn1[o, d] += g * hidden[d]
    return loss


@njit(**_KERNEL)
def cbow_update(syn0, syn1, contexts, m, outputs, k_out, lr, hidden, neu1e):
    """The mean of the rows `contexts[:m]` of syn0 against the output rows `outputs[:k_out]`;
    every context row moves by the whole input gradient. Returns the summed logistic loss."""
    mean_of_rows(syn0, contexts, 0, m, hidden)
    for d in range(syn0.shape[1]):
        neu1e[d] = 0.0
    loss = score_outputs(syn1, hidden, outputs, 0, k_out, lr, neu1e)
    add_to_rows(syn0, contexts, 0, m, neu1e)
    return loss


@njit(**_KERNEL)
def skipgram_step(syn0, syn1, contexts, outputs, lr, scratch):
    """One HogBatch update: the context rows `contexts` of syn0 against the output rows
    `outputs` of syn1 (the target first, label 1, then negatives, label 0). Returns the
    summed logistic loss. `scratch` is from `step_scratch`."""
    old_outputs, output_change, neu1e, _ = scratch
    return _skipgram_update(syn0, syn1, contexts, contexts.shape[0], outputs, outputs.shape[0], lr, old_outputs,
                            output_change, neu1e)


@njit(**_KERNEL)
def cbow_step(syn0, syn1, contexts, outputs, lr, scratch):
    """One CBOW update: the mean of the context rows of syn0 against the output rows `outputs`
    of syn1 (the target first, then negatives); every context row moves by the whole input
    gradient, as word2vec and gensim move them. Returns the summed logistic loss."""
    return cbow_update(syn0, syn1, contexts, contexts.shape[0], outputs, outputs.shape[0], lr, scratch[3],
                        scratch[2])


@njit(**_KERNEL)
def draw_negative(accept, alias, state):
    """A word drawn from the alias table (`alias_table`); returns (word, state)."""
    state = next_random(state)
    word = np.int32(below(state, accept.shape[0]))
    state = next_random(state)
    if np.float32((state >> np.uint64(40)) & np.uint64(0xFFFFFF)) >= accept[word] * np.float32(16777216.0):
        word = alias[word]
    return word, state


@njit(**_KERNEL)
def draw_negatives(accept, alias, n, seed):
    """`n` words drawn from the alias table as the trainer draws negatives (for checking it).

    Example:
    >>> draw_negatives(*alias_table([0.0, 1.0]), 3, np.uint64(7)).tolist()
    [1, 1, 1]
    """
    state = np.uint64(seed)
    words = np.empty(n, dtype=np.int32)
    for i in range(n):
        words[i], state = draw_negative(accept, alias, state)
    return words


@njit(**_KERNEL, inline="always")
def window_words(words, i, window, contexts, state):
    """Copies the words around `words[i]` inside a reduced window (1..window, drawn) into
    `contexts`; returns (how many, state)."""
    state = next_random(state)
    reach = window - np.int64(below(state, window))
    m = 0
    for j in range(max(0, i - reach), min(words.shape[0], i + reach + 1)):
        if j != i:
            contexts[m] = words[j]
            m += 1
    return m, state


@njit(**_KERNEL, inline="always")
def draw_outputs(accept, alias, word, negatives, outputs, first, state):
    """outputs[first:] = `word`, then `negatives` draws from the alias table less those that
    drew `word` (word2vec and gensim skip them); returns (how many outputs, state)."""
    outputs[first] = word
    k_out = 1
    for _ in range(negatives):
        negative, state = draw_negative(accept, alias, state)
        if negative != word:
            outputs[first + k_out] = negative
            k_out += 1
    return k_out, state


@njit(**_KERNEL)
def _train_piece(syn0, syn1, words, accept, alias, cbow, window, negatives, lr, state, contexts, outputs, scratch):
    """Trains every target of one subsampled piece of a document; returns (loss, examples, state)."""
    old_outputs, output_change, neu1e, hidden = scratch
    n = words.shape[0]
    loss = 0.0
    examples = 0
    for i in range(n):
        m, state = window_words(words, i, window, contexts, state)
        if m == 0:
            continue
        k_out, state = draw_outputs(accept, alias, words[i], negatives, outputs, 0, state)
        if cbow:
            loss += cbow_update(syn0, syn1, contexts, m, outputs, k_out, lr, hidden, neu1e)
            examples += 1
        else:
            loss += _skipgram_update(syn0, syn1, contexts, m, outputs, k_out, lr, old_outputs, output_change, neu1e)
            examples += m
    return loss, examples, state


@njit(**_KERNEL, inline="always")
def subsample(ids, begin, end, keep, piece, state):
    """Copies the words of `ids[begin:end]` that frequent-word subsampling keeps (word w with
    probability keep[w]) into `piece`; returns (how many, state)."""
    n = 0
    for p in range(begin, end):
        word = ids[p]
        state = next_random(state)
        if keep[word] >= 1.0 or keep[word] * 65536.0 > np.float64((state >> np.uint64(16)) & np.uint64(0xFFFF)):
            piece[n] = word
            n += 1
    return n, state


@njit(**_KERNEL)
def train_span(syn0, syn1, ids, starts, keep, accept, alias, cbow, window, negatives, lr_begin, lr_end, seed):
    """Trains the documents `starts[0]..starts[-1]` of the id stream `ids` for one epoch, the
    learning rate going linearly from `lr_begin` to `lr_end` over the span's words.

    Args:
        syn0, syn1: [V, D] float32 input and output tables, updated in place.
        ids: [N] int32 word ids of the corpus, documents one after another.
        starts: int64 offsets into `ids` of the span's documents, then the span's end.
        keep: [V] float32 probability of keeping each word (frequent-word subsampling).
        accept, alias: the alias table of the negatives' distribution (`alias_table`).
        cbow: CBOW if true, else skip-gram.
        window, negatives: largest window and negatives per target.
        seed: uint64 seed of this span's subsampling, windows and negatives.

    Returns:
        (summed logistic loss, examples trained): an example is a (context, target) pair in
        skip-gram and a target in CBOW.
    """
    state = np.uint64(seed)
    span_words = max(1, starts[-1] - starts[0])
    piece = np.empty(PIECE_WORDS, dtype=np.int32)
    contexts = np.empty(2 * window, dtype=np.int32)
    outputs = np.empty(1 + negatives, dtype=np.int32)
    dim = syn0.shape[1]
    scratch = (np.empty((1 + negatives, dim), np.float32), np.empty((1 + negatives, dim), np.float32),
               np.empty(dim, np.float32), np.empty(dim, np.float32))
    loss = 0.0
    examples = 0
    for document in range(starts.shape[0] - 1):
        begin = starts[document]
        while begin < starts[document + 1]:
            end = min(begin + PIECE_WORDS, starts[document + 1])
            lr = lr_begin + (lr_end - lr_begin) * ((begin - starts[0]) / span_words)
            n, state = subsample(ids, begin, end, keep, piece, state)
            piece_loss, piece_examples, state = _train_piece(
                syn0, syn1, piece[:n], accept, alias, cbow, window, negatives, lr, state, contexts, outputs, scratch
            )
            loss += piece_loss
            examples += piece_examples
            begin = end
    return loss, examples


def alias_table(weights) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of the distribution proportional to `weights`: draw a word i
    uniformly, keep it with probability accept[i], else take alias[i]. A draw is exact and reads
    8 bytes of a table of V entries, which stays in cache where word2vec's 10^8-entry table
    (or a 10^7 one) costs a memory access per negative.

    Returns:
        (accept [V] float32, alias [V] int32).

    Example:
    >>> accept, alias = alias_table([3.0, 1.0])
    >>> accept.tolist(), alias.tolist()
    ([1.0, 0.5], [0, 0])
    """
    weights = np.asarray(weights, dtype=np.float64)
    scaled = weights * (len(weights) / weights.sum())
    accept = np.ones(len(weights), dtype=np.float64)
    alias = np.arange(len(weights), dtype=np.int32)
    small = [i for i in range(len(weights)) if scaled[i] < 1.0]
    large = [i for i in range(len(weights)) if scaled[i] >= 1.0]
    while small and large:
        under, over = small.pop(), large.pop()
        accept[under], alias[under] = scaled[under], over
        scaled[over] -= 1.0 - scaled[under]
        (small if scaled[over] < 1.0 else large).append(over)
    return accept.astype(np.float32), alias


def split_spans(starts: np.ndarray, parts: int) -> list[np.ndarray]:
    """Splits the document offsets `starts` ([n + 1]) into up to `parts` runs of whole documents
    with about the same number of words; each run keeps its end offset.

    Example:
    >>> [s.tolist() for s in split_spans(np.array([0, 2, 3, 9, 10]), 2)]
    [[0, 2, 3, 9], [9, 10]]
    """
    total = starts[-1] - starts[0]
    cuts = np.searchsorted(starts, starts[0] + total * np.arange(1, parts) / parts)
    bounds = np.unique(np.concatenate([[0], cuts, [len(starts) - 1]]))
    return [starts[a : b + 1] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def span_seed(seed: int, epoch: int, span: int) -> int:
    """The seed of one span in one epoch: distinct for every (seed, epoch, span)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, span]).generate_state(2, np.uint64)[0])


def train_epoch(syn0, syn1, ids, spans, keep, negatives_table, *, workers, cbow, window, negatives, lr_begin, lr_end,
                seed, epoch):
    """One epoch of `train_span` over `spans` (`run_spans`). Returns (summed loss, examples)."""

    def train(span, begin, end, span_seed):
        return train_span(syn0, syn1, ids, span, keep, *negatives_table, cbow, window, negatives, begin, end,
                          np.uint64(span_seed))

    return run_spans(train, spans, workers=workers, lr_begin=lr_begin, lr_end=lr_end, seed=seed, epoch=epoch)


def run_spans(train, spans, *, workers, lr_begin, lr_end, seed, epoch):
    """One epoch over `spans` (from `split_spans`, in order of the corpus): `workers` threads take
    the next span as they finish one and call `train(span, lr_begin, lr_end, seed)` of it, all
    updating the same tables at once, so a thread that the machine slows down does not hold the
    others up. A span's learning rate and seed depend on its place alone, so one worker gives the
    same result on every run. Returns the sums of the (loss, examples) that `train` returns."""
    first, total = spans[0][0], max(1, spans[-1][-1] - spans[0][0])
    results = [None] * len(spans)
    taken = iter(range(len(spans)))
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                index = next(taken, None)
            if index is None:
                return
            span = spans[index]
            begin, end = ((lr_begin + (lr_end - lr_begin) * (offset - first) / total) for offset in (span[0], span[-1]))
            results[index] = train(span, begin, end, span_seed(seed, epoch, index))

    threads = [threading.Thread(target=work) for _ in range(1, workers)]
    for thread in threads:
        thread.start()
    work()
    for thread in threads:
        thread.join()
    return sum(r[0] for r in results), sum(r[1] for r in results)

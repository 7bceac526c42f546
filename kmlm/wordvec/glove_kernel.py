"""The compiled CPU trainer of GloVe: AdaGrad over the non-zero co-occurrences.

One Numba-compiled function trains a run of co-occurrence entries in the order given. For an
entry (i, j, X_ij) with weight f = f(X_ij) it applies GloVe's update (Pennington et al. 2014;
the reference `glove.c`), the AdaGrad step scaled by the squared steps accumulated before it:

```
e = w_i . w~_j + b_i + b~_j - log X_ij        loss += f e^2 / 2        g = lr f e
w_i  -= g w~_j / sqrt(G_i)     G_i  += (g w~_j)^2      (elementwise, G starts at 1)
w~_j -= g w_i  / sqrt(G~_j)    G~_j += (g w_i)^2       (both with the rows before the step)
b_i  -= g / sqrt(H_i)          H_i  += g^2,  and the same for b~_j
```

An epoch shuffles the entries and hands each worker a contiguous part of the shuffled order;
the workers update the same tables at once without locks (Hogwild), each in a thread that the
compiled code runs without the GIL. With one worker a seed gives the same tables every run.

Example:
>>> tables = initial_tables(3, 2, seed=0)
>>> entries = np.array([0, 1]), np.array([1, 2]), np.log([2.0, 5.0]), np.array([0.1, 0.3])
>>> first = train_epoch(tables, *entries, lr=0.05, workers=1, seed=0, epoch=0)
>>> second = train_epoch(tables, *entries, lr=0.05, workers=1, seed=0, epoch=1)
>>> bool(second < first)
True
"""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
from numba import njit


@dataclasses.dataclass
class GloveTables:
    """GloVe's parameters and their AdaGrad accumulators, all float64 as in `glove.c`.

    Attributes:
        word, context: [V, D] word vectors w and context vectors w~.
        word_bias, context_bias: [V] biases b and b~.
        word_squares, context_squares, word_bias_squares, context_bias_squares: the summed
            squared steps of each parameter (AdaGrad's G), starting at 1.
    """

    word: np.ndarray
    context: np.ndarray
    word_bias: np.ndarray
    context_bias: np.ndarray
    word_squares: np.ndarray
    context_squares: np.ndarray
    word_bias_squares: np.ndarray
    context_bias_squares: np.ndarray

    def vectors(self) -> np.ndarray:
        """w + w~, GloVe's default output."""
        return self.word + self.context


def initial_tables(vocabulary_size: int, dim: int, seed: int = 0) -> GloveTables:
    """`glove.c`'s start: vectors and biases uniform in +-0.5 / dim, accumulators 1."""
    rng = np.random.default_rng(seed)
    spread = 0.5 / dim
    word, context = (rng.uniform(-spread, spread, (vocabulary_size, dim)) for _ in range(2))
    word_bias, context_bias = (rng.uniform(-spread, spread, vocabulary_size) for _ in range(2))
    return GloveTables(word, context, word_bias, context_bias, np.ones_like(word), np.ones_like(context),
                       np.ones(vocabulary_size), np.ones(vocabulary_size))


@njit(nogil=True, fastmath=True, cache=True)
def train_entries(word, context, word_bias, context_bias, word_squares, context_squares, word_bias_squares,
                  context_bias_squares, rows, cols, log_counts, weights, order, lr):
    """Applies the AdaGrad update of the entries `order[0], order[1], ...` (indices into
    `rows`, `cols`, `log_counts`, `weights`) to the tables in place; returns the summed
    weighted loss f e^2 / 2 of the entries, each taken before its own update."""
    dim = word.shape[1]
    loss = 0.0
    for n in range(order.shape[0]):
        entry = order[n]
        i, j = rows[entry], cols[entry]
        error = word_bias[i] + context_bias[j] - log_counts[entry]
        for d in range(dim):
            error += word[i, d] * context[j, d]
        weighted = weights[entry] * error
        loss += 0.5 * weighted * error
        step = lr * weighted
        for d in range(dim):
            word_step = step * context[j, d]
            context_step = step * word[i, d]
            word[i, d] -= word_step / math.sqrt(word_squares[i, d])
            context[j, d] -= context_step / math.sqrt(context_squares[j, d])
            word_squares[i, d] += word_step * word_step
            context_squares[j, d] += context_step * context_step
        word_bias[i] -= step / math.sqrt(word_bias_squares[i])
        context_bias[j] -= step / math.sqrt(context_bias_squares[j])
        word_bias_squares[i] += step * step
        context_bias_squares[j] += step * step
    return loss


def _tables_arguments(tables: GloveTables) -> tuple:
    return (tables.word, tables.context, tables.word_bias, tables.context_bias, tables.word_squares,
            tables.context_squares, tables.word_bias_squares, tables.context_bias_squares)


def epoch_order(entries: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of one epoch: a permutation of 0..entries-1 fixed by (seed, epoch)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch]).permutation(entries).astype(np.int64)


def train_epoch(tables: GloveTables, rows, cols, log_counts, weights, *, lr, workers, seed, epoch) -> float:
    """One epoch over all entries in a shuffled order, `workers` threads each training a
    contiguous part of it on the shared tables. Returns the mean loss f e^2 / 2 of an entry
    (`glove.c` prints the same)."""
    order = epoch_order(len(rows), seed, epoch)
    parts = np.array_split(order, max(1, min(workers, len(order))))
    losses = [0.0] * len(parts)

    def work(index):
        losses[index] = train_entries(*_tables_arguments(tables), rows, cols, log_counts, weights, parts[index], lr)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(1, len(parts))]
    for thread in threads:
        thread.start()
    work(0)
    for thread in threads:
        thread.join()
    return sum(losses) / max(1, len(order))


def compile_kernel(tables: GloveTables, rows, cols, log_counts, weights):
    """Compiles (or loads from Numba's cache) `train_entries` for these array types, so that the
    first epoch's entries/s is training alone."""
    train_entries(*_tables_arguments(tables), rows, cols, log_counts, weights, np.zeros(0, np.int64), 0.0)

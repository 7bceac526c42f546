"""GloVe: word vectors fitted to the logarithm of distance-weighted co-occurrence counts
(Pennington, Socher & Manning 2014), trained in compiled CPU code.

Counting follows GloVe's `cooccur`: words outside the vocabulary are removed first, then
every pair of words at distance d <= window inside a document adds 1/d to X[i, j] (and to
X[j, i] with `symmetric=True`). The model minimises

    sum_ij f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 / 2,   f(x) = min(1, (x / x_max)^alpha)

over the non-zero X_ij with `glove.c`'s AdaGrad (`kmlm.wordvec.glove_kernel`: the entries
shuffled every epoch, `workers` threads updating the tables at once), and the word vectors
are w + w~.

Example:
(Trains on a corpus file, so not run as a test; tests/wordvec trains on small text.)
>>> result = train_glove(load_documents("corpus.txt"), GloveSettings(dim=50, epochs=20))  # doctest: +SKIP
>>> result.vectors.most_similar("paris", top_n=3)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from kmlm.wordvec import glove_kernel
from kmlm.wordvec.vectors import WordVectors, write_vectors_directory
from kmlm.pipelines.segmentation import check_segmenter
from kmlm.wordvec.words import build_vocabulary, count_words, known_word_ids, word_id_table

SETTINGS_FILE = "glove.json"
# Tokens counted together: bounds the memory of one counting step.
_DOCUMENTS_PER_CHUNK = 1024


@dataclasses.dataclass
class GloveSettings:
    """The settings of a GloVe run (the `kmlm glove` flags).

    Attributes:
        dim: vector size.
        window: largest distance between co-occurring words.
        min_count: words seen fewer times are removed before counting.
        symmetric: count pairs in both directions (GloVe's default).
        distance_weighting: a pair at distance d adds 1/d (else 1).
        x_max, alpha: the weighting function f.
        epochs: passes over the non-zero co-occurrences, shuffled every epoch.
        learning_rate: AdaGrad's initial step size (`glove.c`'s eta, 0.05).
        seed: seed of initialisation and shuffling.
        segmenter: None, or "jieba": Chinese words are words, not characters (`split_words`).
        workers: training threads (0: one per CPU core); with one worker a seed gives the
            same vectors on every run.
    """

    dim: int = 100
    window: int = 10
    min_count: int = 5
    symmetric: bool = True
    distance_weighting: bool = True
    x_max: float = 100.0
    alpha: float = 0.75
    epochs: int = 25
    learning_rate: float = 0.05
    seed: int = 0
    segmenter: str | None = None
    workers: int = 0

    def validate(self):
        check_segmenter(self.segmenter)
        for name in ("dim", "window", "min_count", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.x_max <= 0 or self.alpha <= 0 or self.learning_rate <= 0:
            raise ValueError(
                f"x_max={self.x_max}, alpha={self.alpha} and learning_rate={self.learning_rate} must be positive"
            )
        if self.workers < 0:
            raise ValueError(f"workers={self.workers} must be >= 0 (0: one per CPU core)")


def cooccurrence_counts(documents, vocabulary, window=10, symmetric=True, distance_weighting=True, segmenter=None):
    """Counts distance-weighted co-occurrences.

    Args:
        documents: a tf.data dataset of `tf.string` documents (words by
            `kmlm.wordvec.words.split_words`).
        vocabulary: the words to count; others are removed before windowing.
        window: largest distance d counted.
        symmetric: also count (context, target).
        distance_weighting: add 1/d instead of 1.
        segmenter: the segmenter of `split_words` (None: none).

    Returns:
        (rows, cols, values): the non-zero entries of X, sorted by (row, col); rows and cols
        int32 word ids, values float64.
    """
    size = len(vocabulary)
    table = word_id_table(vocabulary)
    chunks = documents.batch(_DOCUMENTS_PER_CHUNK).map(lambda texts: known_word_ids(texts, table, segmenter)).prefetch(2)
    keys_parts, value_parts = [], []
    for values, row_ids in chunks.as_numpy_iterator():
        keys, weights = [], []
        for distance in range(1, window + 1):
            same = row_ids[distance:] == row_ids[:-distance]
            left, right = values[:-distance][same].astype(np.int64), values[distance:][same].astype(np.int64)
            weight = 1.0 / distance if distance_weighting else 1.0
            keys.append(left * size + right)
            weights.append(np.full(len(left), weight))
            if symmetric:
                keys.append(right * size + left)
                weights.append(np.full(len(left), weight))
        keys_parts.append(np.concatenate(keys))
        value_parts.append(np.concatenate(weights))
        if sum(len(k) for k in keys_parts) > 1 << 24:  # fold into one sorted array now and then
            folded_keys, folded_values = _sum_by_key(keys_parts, value_parts)
            keys_parts, value_parts = [folded_keys], [folded_values]
    if not keys_parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float64)
    keys, values = _sum_by_key(keys_parts, value_parts)
    return (keys // size).astype(np.int32), (keys % size).astype(np.int32), values


def _sum_by_key(keys_parts, value_parts):
    keys = np.concatenate(keys_parts)
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=np.concatenate(value_parts), minlength=len(unique))


def glove_weights(x, x_max=100.0, alpha=0.75):
    """GloVe's weighting f(x) = min(1, (x / x_max)^alpha)."""
    return np.minimum(1.0, (np.asarray(x, dtype=np.float64) / x_max) ** alpha)


@dataclasses.dataclass
class GloveResult:
    """What `train_glove` returns.

    Attributes:
        vectors: w + w~ as `WordVectors` (with counts).
        tables: the trained `glove_kernel.GloveTables` (w, w~, biases, accumulators).
        pairs: the number of non-zero co-occurrences.
        entries_per_second: per-epoch training throughput in co-occurrences per second.
        history: {"loss": the mean f e^2 / 2 of an entry, per epoch}.
    """

    vectors: WordVectors
    tables: glove_kernel.GloveTables
    pairs: int
    entries_per_second: list
    history: dict


def train_glove(documents: tf.data.Dataset, settings: GloveSettings | None = None, verbose=0) -> GloveResult:
    """Counts co-occurrences in `documents` and fits GloVe to them (`fit_glove`); with
    `verbose`, prints the counts and every epoch's loss and entries/s."""
    settings = settings or GloveSettings()
    settings.validate()
    start = time.time()
    vocabulary, frequencies = build_vocabulary(count_words(documents, settings.segmenter), settings.min_count)
    rows, cols, values = cooccurrence_counts(
        documents, vocabulary, settings.window, settings.symmetric, settings.distance_weighting, settings.segmenter
    )
    if len(values) == 0:
        raise ValueError("no two vocabulary words occur within the window; give a larger corpus or lower --min-count")
    if verbose:
        print(f"{len(vocabulary):,} words, {len(values):,} non-zero co-occurrences ({time.time() - start:.1f}s)", flush=True)
    tables, rates, losses = fit_glove(len(vocabulary), rows, cols, values, settings, verbose)
    vectors = WordVectors(vocabulary, tables.vectors(), counts=frequencies)
    return GloveResult(vectors=vectors, tables=tables, pairs=len(values), entries_per_second=rates,
                       history={"loss": losses})


def fit_glove(vocabulary_size, rows, cols, values, settings: GloveSettings, verbose=0):
    """Fits GloVe's tables to the co-occurrences (rows, cols, values) for `settings.epochs`
    epochs. Returns (tables, entries/s per epoch, mean loss per epoch)."""
    tables = glove_kernel.initial_tables(vocabulary_size, settings.dim, settings.seed)
    entries = (rows.astype(np.int32), cols.astype(np.int32), np.log(values),
               glove_weights(values, settings.x_max, settings.alpha))
    glove_kernel.compile_kernel(tables, *entries)
    workers = settings.workers or os.cpu_count() or 1
    rates, losses = [], []
    for epoch in range(settings.epochs):
        begin = time.perf_counter()
        losses.append(glove_kernel.train_epoch(tables, *entries, lr=settings.learning_rate, workers=workers,
                                               seed=settings.seed, epoch=epoch))
        rates.append(len(values) / (time.perf_counter() - begin))
        if verbose:
            print(f"epoch {epoch + 1}/{settings.epochs}: loss {losses[-1]:.4f}, {rates[-1]:,.0f} co-occurrences/s",
                  flush=True)
    return tables, rates, losses


def save_glove_run(out, result: GloveResult, settings: GloveSettings, corpus=None, format="word2vec"):
    """Writes `vectors.txt` (word2vec text format, or GloVe's with format="glove"),
    `vocab.txt` ("word count" lines) and `glove.json` (settings, losses and co-occurrences/s)
    into `out`."""
    record = {"cooccurrences": result.pairs, "loss": result.history.get("loss", []),
              "cooccurrences_per_second": result.entries_per_second}
    write_vectors_directory(out, result.vectors, SETTINGS_FILE, settings=settings, corpus=corpus, extra=record,
                            format=format)

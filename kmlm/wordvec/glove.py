"""GloVe: word vectors fitted to the logarithm of distance-weighted co-occurrence counts
(Pennington, Socher & Manning 2014), trained with Keras.

Counting follows GloVe's `cooccur`: words outside the vocabulary are removed first, then
every pair of words at distance d <= window inside a document adds 1/d to X[i, j] (and to
X[j, i] with `symmetric=True`). The model minimises

    sum_ij f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2,   f(x) = min(1, (x / x_max)^alpha)

over the non-zero X_ij with AdaGrad, and the word vectors are w + w~.

Example:
(Trains on a corpus file, so not run as a test; tests/wordvec trains on small text.)
>>> result = train_glove(load_documents("corpus.txt"), GloveSettings(dim=50, epochs=20))  # doctest: +SKIP
>>> result.vectors.most_similar("paris", top_n=3)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from kmlm.training import tf_data_fit
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
        epochs: passes over the non-zero co-occurrences.
        batch_size: co-occurrences per step.
        learning_rate: AdaGrad step size.
        seed: seed of initialisation and shuffling.
        segmenter: None, or "jieba": Chinese words are words, not characters (`split_words`).
    """

    dim: int = 100
    window: int = 10
    min_count: int = 5
    symmetric: bool = True
    distance_weighting: bool = True
    x_max: float = 100.0
    alpha: float = 0.75
    epochs: int = 25
    batch_size: int = 256
    learning_rate: float = 0.1
    seed: int = 0
    segmenter: str | None = None

    def validate(self):
        check_segmenter(self.segmenter)
        for name in ("dim", "window", "min_count", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.x_max <= 0 or self.alpha <= 0 or self.learning_rate <= 0:
            raise ValueError(
                f"x_max={self.x_max}, alpha={self.alpha} and learning_rate={self.learning_rate} must be positive"
            )


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


@keras.saving.register_keras_serializable(package="kmlm")
class Glove(keras.Model):
    """GloVe's bilinear model: inputs `rows`, `cols` [B] int32, output
    w_rows . w~_cols + b_rows + b~_cols [B].

    Example:
    >>> Glove(100, 16)({"rows": tf.constant([1]), "cols": tf.constant([2])}).shape
    TensorShape([1])
    """

    def __init__(self, vocabulary_size, dim, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.dim = dim
        self.seed = seed
        # GloVe's initialisation: uniform in +-0.5 / dim for vectors and biases.
        def init(offset):
            return keras.initializers.RandomUniform(-0.5 / dim, 0.5 / dim, seed=seed + offset)

        self.word_embedding = keras.layers.Embedding(vocabulary_size, dim, embeddings_initializer=init(0), name="word")
        self.context_embedding = keras.layers.Embedding(
            vocabulary_size, dim, embeddings_initializer=init(1), name="context"
        )
        self.word_bias = keras.layers.Embedding(vocabulary_size, 1, embeddings_initializer=init(2), name="word_bias")
        self.context_bias = keras.layers.Embedding(
            vocabulary_size, 1, embeddings_initializer=init(3), name="context_bias"
        )

    def call(self, inputs):
        rows, cols = inputs["rows"], inputs["cols"]
        dot = tf.reduce_sum(self.word_embedding(rows) * self.context_embedding(cols), axis=-1)
        return dot + self.word_bias(rows)[..., 0] + self.context_bias(cols)[..., 0]

    def word_vectors(self):
        """w + w~, GloVe's default output."""
        return self.word_embedding.embeddings.numpy() + self.context_embedding.embeddings.numpy()

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary_size=self.vocabulary_size, dim=self.dim, seed=self.seed)
        return config


@dataclasses.dataclass
class GloveResult:
    """What `train_glove` returns: `vectors` (`WordVectors` with counts), the Keras `model`,
    the number of non-zero co-occurrences `pairs`, and the Keras `history` dict."""

    vectors: WordVectors
    model: Glove
    pairs: int
    history: dict


def train_glove(documents: tf.data.Dataset, settings: GloveSettings | None = None, verbose=0) -> GloveResult:
    """Counts co-occurrences in `documents` and fits GloVe to them with `model.fit`."""
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
    examples = (
        tf.data.Dataset.from_tensor_slices(
            (
                {"rows": rows, "cols": cols},
                np.log(values).astype(np.float32),
                glove_weights(values, settings.x_max, settings.alpha).astype(np.float32),
            )
        )
        .shuffle(len(values), seed=settings.seed, reshuffle_each_iteration=True)
        .batch(settings.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    keras.utils.set_random_seed(settings.seed)
    model = Glove(len(vocabulary), settings.dim, seed=settings.seed, name="glove")
    model.compile(optimizer=keras.optimizers.Adagrad(settings.learning_rate), loss="mean_squared_error")
    with tf_data_fit():
        history = model.fit(examples, epochs=settings.epochs, verbose=verbose)
    vectors = WordVectors(vocabulary, model.word_vectors(), counts=frequencies)
    return GloveResult(vectors=vectors, model=model, pairs=len(values), history=history.history)


def save_glove_run(out, result: GloveResult, settings: GloveSettings, corpus=None, format="word2vec"):
    """Writes `vectors.txt` (word2vec text format, or GloVe's with format="glove"),
    `vocab.txt` ("word count" lines) and `glove.json` (settings and losses) into `out`."""
    record = {"cooccurrences": result.pairs, "loss": result.history.get("loss", [])}
    write_vectors_directory(out, result.vectors, SETTINGS_FILE, settings=settings, corpus=corpus, extra=record,
                            format=format)

"""Word2Vec: skip-gram and CBOW with negative sampling (or hierarchical softmax).

Negative sampling trains in compiled CPU code (`kmlm.wordvec.word2vec_kernel`): the corpus
is turned into word ids once, then every epoch subsamples, draws windows and negatives and
updates the tables in place, one thread per worker (`kmlm.wordvec.fasttext` trains the
same way, in `kmlm.wordvec.fasttext_kernel`). Hierarchical softmax trains with `model.fit`
on a tf.data pipeline that makes the training examples in the graph, per chunk of documents:

```
documents ──> words (lowercase, split on non-letters, every CJK character a word)
  ──> ids (words under --min-count dropped) ──> frequent-word subsampling
  ──> (target, context) pairs inside a random reduced window (1..W), never across documents
  ──> fixed batches of pairs ──> K negatives per pair from the unigram^0.75 table
```

Randomness is stateless and seeded by the chunk/batch index, so a seed gives the same
examples on every run.

Example:
(Trains on a corpus file, so not run as a test; tests/wordvec trains on small text.)
>>> settings = Word2VecSettings(model="skipgram", dim=50, window=5, negatives=5, epochs=3)  # doctest: +SKIP
>>> result = train_word2vec(load_documents("corpus.txt"), settings)  # doctest: +SKIP
>>> result.vectors.most_similar("king", top_n=3)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import time

import keras
import numpy as np
import tensorflow as tf

from kmlm.training import tf_data_fit
from kmlm.wordvec import word2vec_kernel
from kmlm.wordvec.vectors import WordVectors, write_vectors_directory
from kmlm.pipelines.segmentation import check_segmenter
from kmlm.wordvec.words import build_vocabulary, count_words, known_word_ids, word_id_table

MODELS = ("skipgram", "cbow")
SETTINGS_FILE = "word2vec.json"
# Documents tokenized together in one tf.data element.
_DOCUMENTS_PER_CHUNK = 64
# Words of one span that a worker of the compiled trainer takes at a time.
_WORDS_PER_SPAN = 50_000


@dataclasses.dataclass
class Word2VecSettings:
    """The settings of a word2vec run (the `kmlm word2vec` flags).

    Attributes:
        model: "skipgram" (predict each context word from the target word) or "cbow"
            (predict the target word from the mean of its context words).
        dim: vector size.
        window: largest distance between a target and a context word; each target draws its
            own window in 1..window, so near words count more (as word2vec does).
        negatives: negative samples per example; 0 with `hierarchical_softmax=True`.
        hierarchical_softmax: predict words along their Huffman-tree path instead of
            negative sampling.
        min_count: words seen fewer times are dropped from the corpus.
        subsample: threshold t of frequent-word subsampling (0 disables it).
        epochs: passes over the corpus.
        batch_size: examples per training step of `model.fit` (hierarchical softmax).
        learning_rate: SGD step size at the start; it decays linearly to 1e-4 of itself.
        table_size: entries of the negative-sampling table of the tf.data examples
            (`word2vec_examples`); the compiled trainers draw negatives exactly from an
            alias table instead.
        seed: seed of initialisation, subsampling, windows and negatives.
        segmenter: None, or "jieba": Chinese words are words, not characters (`split_words`).
        workers: threads training at once with negative sampling (0: one per CPU core); with
            one worker a seed gives the same vectors on every run.
    """

    model: str = "skipgram"
    dim: int = 100
    window: int = 5
    negatives: int = 5
    hierarchical_softmax: bool = False
    min_count: int = 5
    subsample: float = 1e-3
    epochs: int = 5
    batch_size: int = 1024
    learning_rate: float = 0.025
    table_size: int = 10_000_000
    seed: int = 0
    segmenter: str | None = None
    workers: int = 0

    def validate(self):
        check_segmenter(self.segmenter)
        if self.model not in MODELS:
            raise ValueError(f"unknown word2vec model {self.model!r}; choose one of {', '.join(MODELS)}")
        for name in ("dim", "window", "min_count", "epochs", "batch_size", "table_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.negatives < 0:
            raise ValueError(f"negatives={self.negatives} must be >= 0")
        if self.negatives == 0 and not self.hierarchical_softmax:
            raise ValueError("negatives=0 needs hierarchical softmax; give --negatives >= 1 or --hs")
        if self.negatives > 0 and self.hierarchical_softmax:
            raise ValueError("choose negative sampling or hierarchical softmax, not both; give --negatives 0 with --hs")
        if self.subsample < 0:
            raise ValueError(f"subsample={self.subsample} must be >= 0 (0 disables subsampling)")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be positive")
        if self.workers < 0:
            raise ValueError(f"workers={self.workers} must be >= 0 (0: one per CPU core)")


# --------------------------------------------------------------------------- word statistics


def sampling_table(counts: np.ndarray, size: int, power: float = 0.75) -> np.ndarray:
    """The negative-sampling table: word i fills a share count_i^power / sum_j count_j^power
    of the `size` entries, so a uniform entry is a draw from the smoothed unigram
    distribution (word2vec's table)."""
    weights = np.asarray(counts, dtype=np.float64) ** power
    cumulative = np.cumsum(weights) / weights.sum()
    # Entry e goes to the word whose cumulative interval holds the entry's midpoint.
    table = np.searchsorted(cumulative, (np.arange(size) + 0.5) / size, side="right")
    return np.minimum(table, len(counts) - 1).astype(np.int32)


def keep_probabilities(counts: np.ndarray, subsample: float) -> np.ndarray:
    """Frequent-word subsampling as word2vec does it: a word of corpus frequency
    f = count / total is kept with probability (sqrt(f / t) + 1) * t / f, capped at 1.
    `subsample` t <= 0 keeps every word."""
    counts = np.asarray(counts, dtype=np.float64)
    if subsample <= 0:
        return np.ones(len(counts), dtype=np.float32)
    frequency = counts / counts.sum()
    keep = (np.sqrt(frequency / subsample) + 1.0) * subsample / frequency
    return np.minimum(keep, 1.0).astype(np.float32)


def huffman_paths(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Huffman tree over the words, as hierarchical softmax needs it.

    Returns:
        (nodes, codes, lengths): nodes [V, L] int32, the inner nodes (0..V-2) on the path from
        the root to each word; codes [V, L] int32, the branch (0/1) taken at each; lengths
        [V] int32, the path lengths. Rows are padded with 0 after their length.
    """
    vocabulary_size = len(counts)
    if vocabulary_size < 2:
        raise ValueError("hierarchical softmax needs at least 2 words in the vocabulary")
    heap = [(int(n), i) for i, n in enumerate(counts)]
    heapq.heapify(heap)
    parent = np.zeros(2 * vocabulary_size - 1, dtype=np.int64)
    branch = np.zeros(2 * vocabulary_size - 1, dtype=np.int32)
    next_node = vocabulary_size
    while len(heap) > 1:
        n_a, a = heapq.heappop(heap)
        n_b, b = heapq.heappop(heap)
        parent[a], branch[a] = next_node, 0
        parent[b], branch[b] = next_node, 1
        heapq.heappush(heap, (n_a + n_b, next_node))
        next_node += 1
    root = next_node - 1
    paths = []
    for word in range(vocabulary_size):
        nodes, codes, node = [], [], word
        while node != root:
            nodes.append(parent[node] - vocabulary_size)
            codes.append(branch[node])
            node = parent[node]
        paths.append((nodes[::-1], codes[::-1]))
    depth = max(len(nodes) for nodes, _ in paths)
    nodes_out = np.zeros((vocabulary_size, depth), dtype=np.int32)
    codes_out = np.zeros((vocabulary_size, depth), dtype=np.int32)
    lengths = np.zeros(vocabulary_size, dtype=np.int32)
    for word, (nodes, codes) in enumerate(paths):
        nodes_out[word, : len(nodes)] = nodes
        codes_out[word, : len(codes)] = codes
        lengths[word] = len(nodes)
    return nodes_out, codes_out, lengths


# --------------------------------------------------------------------------- examples


def _subsample(values, row_ids, keep_probability, seed):
    keep = tf.random.stateless_uniform(tf.shape(values), seed) < tf.gather(keep_probability, values)
    return tf.boolean_mask(values, keep), tf.boolean_mask(row_ids, keep)


def _window_offsets(window):
    return [o for o in range(-window, window + 1) if o != 0]


def _context_matrix(values, row_ids, window, seed):
    """For every word of the flat stream, the ids of its context words at offsets
    -W..-1, 1..W ([n, 2W], -1 where the offset leaves the document or the word's reduced
    window)."""
    n = tf.shape(values)[0]
    reduced = tf.random.stateless_uniform([n], seed, minval=1, maxval=window + 1, dtype=tf.int32)
    positions = tf.range(n)
    columns = []
    for offset in _window_offsets(window):
        other = positions + offset
        inside = (other >= 0) & (other < n)
        other = tf.clip_by_value(other, 0, tf.maximum(n - 1, 0))
        valid = inside & (tf.gather(row_ids, other) == row_ids) & (abs(offset) <= reduced)
        columns.append(tf.where(valid, tf.gather(values, other), -1))
    return tf.stack(columns, axis=1) if columns else tf.zeros([n, 0], tf.int32)


def _tree_outputs(counts):
    """The output side of hierarchical softmax: a word's Huffman path, its branches as labels
    and the path's padding masked out."""
    nodes, codes, lengths = (tf.constant(a) for a in huffman_paths(counts))
    depth = int(nodes.shape[1])

    def output_side(index, input_ids, word):
        path_mask = tf.sequence_mask(tf.gather(lengths, word), depth, dtype=tf.float32)
        labels = 1.0 - tf.cast(tf.gather(codes, word), tf.float32)
        return {"input_ids": input_ids, "output_ids": tf.gather(nodes, word)}, labels, path_mask

    return output_side


def _negative_outputs(counts, settings):
    """The output side of negative sampling: the true word (label 1), then K words drawn
    from the unigram^0.75 table (label 0), seeded by the batch index."""
    negatives_table = tf.constant(sampling_table(counts, settings.table_size))
    k, seed = settings.negatives, settings.seed

    def output_side(index, input_ids, word):
        draws = tf.random.stateless_uniform(
            [tf.shape(word)[0], k], tf.stack([seed + 1, index]), maxval=settings.table_size, dtype=tf.int32
        )
        output_ids = tf.concat([word[:, None], tf.gather(negatives_table, draws)], axis=1)
        labels = tf.concat([tf.ones_like(word, tf.float32)[:, None], tf.zeros([tf.shape(word)[0], k])], axis=1)
        return {"input_ids": input_ids, "output_ids": output_ids}, labels, tf.ones_like(labels)

    return output_side


def word2vec_examples(
    documents: tf.data.Dataset,
    vocabulary: list[str],
    counts: np.ndarray,
    settings: Word2VecSettings,
    shuffle: bool = True,
) -> tf.data.Dataset:
    """The training examples of `settings.model` as a tf.data pipeline.

    Returns:
        A dataset of `(inputs, labels, weights)` batches of `settings.batch_size` examples:
        inputs `{"input_ids": [B, C], "output_ids": [B, M]}` int32 (C = 1 for skip-gram,
        2W for CBOW with -1 padding; M = 1 + K for negative sampling: the true word then K
        negatives, or the Huffman path length for hierarchical softmax); labels [B, M] float32
        (1 for the true word / the branch word2vec assigns); weights [B, M] float32 (0 for
        path padding).
    """
    settings.validate()
    table = word_id_table(vocabulary)
    keep_probability = tf.constant(keep_probabilities(counts, settings.subsample))
    window = settings.window
    seed = settings.seed
    skipgram = settings.model == "skipgram"

    def chunk_examples(index, texts):
        values, row_ids = known_word_ids(texts, table, settings.segmenter)
        values, row_ids = _subsample(values, row_ids, keep_probability, tf.stack([seed, 2 * index]))
        contexts = _context_matrix(values, row_ids, window, tf.stack([seed, 2 * index + 1]))
        if skipgram:
            targets = tf.broadcast_to(values[:, None], tf.shape(contexts))
            valid = contexts >= 0
            return tf.boolean_mask(targets, valid)[:, None], tf.boolean_mask(contexts, valid)
        has_context = tf.reduce_any(contexts >= 0, axis=1)
        return tf.boolean_mask(contexts, has_context), tf.boolean_mask(values, has_context)

    output_side = _tree_outputs(counts) if settings.hierarchical_softmax else _negative_outputs(counts, settings)
    if shuffle:
        documents = documents.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    chunks = documents.batch(_DOCUMENTS_PER_CHUNK).enumerate()
    examples = chunks.map(
        lambda i, texts: chunk_examples(tf.cast(i, tf.int32), texts), num_parallel_calls=tf.data.AUTOTUNE
    )
    examples = examples.rebatch(settings.batch_size, drop_remainder=False).enumerate()
    examples = examples.map(
        lambda i, pair: output_side(tf.cast(i, tf.int32), *pair), num_parallel_calls=tf.data.AUTOTUNE
    )
    return examples.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- model


@keras.saving.register_keras_serializable(package="kmlm")
class Word2Vec(keras.Model):
    """Word2vec as a Keras model: the mean of the input vectors of `input_ids` (one target
    word for skip-gram, the context words for CBOW; -1 is padding) scored by a dot product
    against the output vectors of `output_ids`. Outputs logits [B, M].

    Args:
        vocabulary_size: number of words V.
        dim: vector size.
        output_size: rows of the output table (V for negative sampling, V - 1 inner
            nodes for hierarchical softmax).
        seed: initialisation seed.

    Example:
    >>> model = Word2Vec(1000, 50, 1000)
    >>> model({"input_ids": tf.constant([[3]]), "output_ids": tf.constant([[7, 1, 2]])}).shape
    TensorShape([1, 3])
    """

    def __init__(self, vocabulary_size, dim, output_size, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.dim = dim
        self.output_size = output_size
        self.seed = seed
        # word2vec.c's initialisation: input vectors uniform in +-0.5 / dim, zero output vectors.
        spread = 0.5 / dim
        self.input_embedding = keras.layers.Embedding(
            vocabulary_size,
            dim,
            embeddings_initializer=keras.initializers.RandomUniform(-spread, spread, seed=seed),
            name="input_embedding",
        )
        self.output_embedding = keras.layers.Embedding(
            output_size, dim, embeddings_initializer="zeros", name="output_embedding"
        )

    def call(self, inputs):
        input_ids = inputs["input_ids"]
        present = input_ids >= 0
        vectors = self.input_embedding(tf.maximum(input_ids, 0))
        weights = tf.cast(present, vectors.dtype)[..., None]
        summed = tf.reduce_sum(vectors * weights, axis=1)
        hidden = summed / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
        outputs = self.output_embedding(inputs["output_ids"])
        return tf.einsum("bd,bmd->bm", hidden, outputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size, dim=self.dim, output_size=self.output_size, seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="kmlm")
class SigmoidLossSum(keras.losses.Loss):
    """word2vec's objective: the logistic losses of every output word (true word, negatives
    or tree branches) summed over the batch, so an SGD step moves each pair as word2vec's
    own update would."""

    def __init__(self, name="sigmoid_loss_sum", **kwargs):
        kwargs.setdefault("reduction", "sum")
        super().__init__(name=name, **kwargs)

    def call(self, labels, logits):
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, logits.dtype), logits=logits)


class _WordsPerSecond(keras.callbacks.Callback):
    """Prints the corpus words processed per second after every epoch."""

    def __init__(self, words_per_epoch, verbose):
        super().__init__()
        self.words_per_epoch = words_per_epoch
        self.verbose = verbose
        self.rates = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        rate = self.words_per_epoch / (time.perf_counter() - self.start)
        self.rates.append(rate)
        if self.verbose:
            print(f"epoch {epoch + 1}: {rate:,.0f} words/s", flush=True)


@dataclasses.dataclass
class Word2VecResult:
    """What `train_word2vec` returns.

    Attributes:
        vectors: the input vectors as `WordVectors` (with counts).
        model: the trained `Word2Vec` Keras model.
        words_per_second: per-epoch training throughput in corpus words
            (before subsampling) per second.
        history: the Keras `History.history` dict.
    """

    vectors: WordVectors
    model: Word2Vec
    words_per_second: list
    history: dict


def train_word2vec(documents: tf.data.Dataset, settings: Word2VecSettings | None = None, verbose=0) -> Word2VecResult:
    """Trains word2vec on a dataset of documents.

    Args:
        documents: `tf.string` documents (e.g. from `kmlm.pipelines.load_documents`).
        settings: `Word2VecSettings`.
        verbose: Keras progress-bar mode; also prints vocabulary size and words/s when true.

    Returns:
        A `Word2VecResult`.
    """
    settings = settings or Word2VecSettings()
    settings.validate()
    vocabulary, frequencies = corpus_vocabulary(documents, settings, verbose)
    output_size = len(vocabulary) - 1 if settings.hierarchical_softmax else len(vocabulary)
    keras.utils.set_random_seed(settings.seed)
    model = Word2Vec(len(vocabulary), settings.dim, output_size, seed=settings.seed, name=f"word2vec_{settings.model}")
    if settings.hierarchical_softmax:
        result = fit_word2vec(model, documents, vocabulary, frequencies, settings, verbose)
    else:
        result = train_negative_sampling(model, documents, vocabulary, frequencies, settings, verbose)
    result.vectors = WordVectors(vocabulary, model.input_embedding.embeddings.numpy(), counts=frequencies)
    return result


def corpus_ids(documents: tf.data.Dataset, vocabulary, segmenter=None) -> tuple[np.ndarray, np.ndarray]:
    """The corpus as one stream of vocabulary ids (`known_word_ids`: other words removed).

    Returns:
        (ids, starts): ids [N] int32, documents one after another; starts [n + 1] int64, the
        offset of each document in `ids`, then N.

    Example:
    >>> ids, starts = corpus_ids(tf.data.Dataset.from_tensor_slices(["a x b", "x", "b"]), ["a", "b"])
    >>> ids.tolist(), starts.tolist()
    ([0, 1, 1], [0, 2, 2, 3])
    """
    table = word_id_table(vocabulary)
    batches = documents.batch(1024).map(lambda texts: (tf.size(texts), *known_word_ids(texts, table, segmenter)))
    ids, lengths = [], []
    for size, values, rows in batches.prefetch(2).as_numpy_iterator():
        ids.append(values)
        lengths.append(np.bincount(rows, minlength=size))
    ids = np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32)
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    return ids, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def train_negative_sampling(model: Word2Vec, documents, vocabulary, frequencies, settings: Word2VecSettings,
                            verbose=0) -> Word2VecResult:
    """Trains the tables of `model` with negative sampling in `kmlm.wordvec.word2vec_kernel`,
    `settings.workers` threads at once, the learning rate decaying linearly to 1e-4 of itself
    over the run.

    Returns:
        A `Word2VecResult` (`history["loss"]`: the mean logistic loss of an example, target and
        negatives summed, per epoch); the caller fills in `vectors`.
    """
    model({"input_ids": tf.zeros([1, 1], tf.int32), "output_ids": tf.zeros([1, 1], tf.int32)})  # builds the tables
    # gensim's and fastText's start, uniform in +-1/dim: word2vec.c's +-0.5/dim leaves words that
    # few updates reach near one shared direction (mean cosine between unrelated words up to 0.9).
    spread = 1.0 / settings.dim
    syn0 = np.random.default_rng(settings.seed).uniform(-spread, spread, (len(vocabulary), settings.dim))
    syn0 = syn0.astype(np.float32)
    syn1 = np.zeros_like(syn0)
    rates, losses = negative_sampling_epochs(syn0, syn1, documents, vocabulary, frequencies, settings,
                                             word2vec_kernel.train_epoch, _compile_kernel, verbose)
    model.input_embedding.embeddings.assign(syn0)
    model.output_embedding.embeddings.assign(syn1)
    return Word2VecResult(vectors=None, model=model, words_per_second=rates, history={"loss": losses})


def negative_sampling_epochs(syn0, syn1, documents, vocabulary, frequencies, settings, train_epoch, compile_kernel,
                             verbose=0):
    """The epoch loop that word2vec's and fastText's compiled trainers share: the corpus as word
    ids cut into spans, subsampling and negative tables, one warm-up call, then `settings.epochs`
    calls of `train_epoch` with the learning rate decaying linearly to 1e-4 of itself.

    Args:
        syn0, syn1: the input and output tables, float32, updated in place.
        documents, vocabulary, frequencies: the corpus and its kept words with their counts.
        settings: `Word2VecSettings` (or a subclass): workers, model, window, negatives,
            subsample, seed, epochs, learning_rate, segmenter.
        train_epoch: `train_epoch(syn0, syn1, ids, spans, keep, table, lr_begin=, lr_end=,
            epoch=, workers=, cbow=, window=, negatives=, seed=)` -> (loss sum, examples).
        compile_kernel: `compile_kernel(syn0, ids, keep, table, options)`, called once first, so
            that the first epoch's words/s is training alone.
        verbose: when true, prints each epoch's loss and words/s.

    Returns:
        (words/s per epoch, mean loss of an example per epoch).
    """
    ids, starts = corpus_ids(documents, vocabulary, settings.segmenter)
    workers = settings.workers or os.cpu_count() or 1
    spans = word2vec_kernel.split_spans(starts, max(4 * workers, len(ids) // _WORDS_PER_SPAN))
    keep = keep_probabilities(frequencies, settings.subsample)
    table = word2vec_kernel.alias_table(np.asarray(frequencies, np.float64) ** 0.75)
    options = dict(workers=workers, cbow=settings.model == "cbow", window=settings.window, negatives=settings.negatives,
                   seed=settings.seed)
    compile_kernel(syn0, ids, keep, table, options)
    words = int(len(ids))
    rates, losses = [], []
    for epoch in range(settings.epochs):
        lr_begin, lr_end = (settings.learning_rate * (1 - (1 - 1e-4) * e / settings.epochs) for e in (epoch, epoch + 1))
        start = time.perf_counter()
        loss, examples = train_epoch(syn0, syn1, ids, spans, keep, table, lr_begin=lr_begin, lr_end=lr_end,
                                     epoch=epoch, **options)
        rates.append(words / (time.perf_counter() - start))
        losses.append(loss / max(examples, 1))
        if verbose:
            print(f"epoch {epoch + 1}/{settings.epochs}: loss {losses[-1]:.4f}, {rates[-1]:,.0f} words/s", flush=True)
    return rates, losses


def _compile_kernel(syn0, ids, keep, table, options):
    """Compiles (or loads from Numba's cache) the kernel for these array types, so that the
    first epoch's words/s is training alone."""
    tiny = np.zeros((2, syn0.shape[1]), np.float32)
    word2vec_kernel.train_span(tiny, tiny.copy(), ids[:0], np.zeros(1, np.int64), keep[:2], *table,
                               options["cbow"], options["window"], options["negatives"], 0.0, 0.0, np.uint64(0))


def corpus_vocabulary(documents: tf.data.Dataset, settings: Word2VecSettings, verbose=0):
    """The words seen at least `settings.min_count` times and their counts (`build_vocabulary`)."""
    counts = count_words(documents, settings.segmenter)
    vocabulary, frequencies = build_vocabulary(counts, settings.min_count)
    if verbose:
        print(
            f"{len(vocabulary):,} words seen >= {settings.min_count} times "
            f"({int(frequencies.sum()):,} of {sum(counts.values()):,} corpus words)",
            flush=True,
        )
    return vocabulary, frequencies


def fit_word2vec(model: Word2Vec, documents, vocabulary, frequencies, settings: Word2VecSettings, verbose=0):
    """Fits `model` with SGD on the examples of `settings` (hierarchical softmax), the
    learning rate decaying linearly to 1e-4 of itself over the run.

    Returns:
        A `Word2VecResult` whose `vectors` the caller fills in from the trained model.
    """
    examples = word2vec_examples(documents, vocabulary, frequencies, settings)
    steps = sum(1 for _ in examples)  # one pass also warms the tf.data graph
    schedule = keras.optimizers.schedules.PolynomialDecay(
        settings.learning_rate, max(1, steps * settings.epochs), settings.learning_rate * 1e-4
    )
    model.compile(
        optimizer=keras.optimizers.SGD(schedule),
        loss=SigmoidLossSum(),
        jit_compile="auto",
    )
    speed = _WordsPerSecond(int(frequencies.sum()), verbose)
    # The pass above counted the steps: with them, the schedule ends exactly at the last step.
    with tf_data_fit():
        history = model.fit(
            examples.repeat(), steps_per_epoch=steps, epochs=settings.epochs, callbacks=[speed], verbose=verbose
        )
    return Word2VecResult(vectors=None, model=model, words_per_second=speed.rates, history=history.history)


def save_word2vec_run(out: str, result: Word2VecResult, settings: Word2VecSettings, corpus: str | None = None):
    """Writes `vectors.txt` (word2vec text format), `vocab.txt` ("word count" lines, most
    frequent first) and `word2vec.json` (settings and throughput) into `out`."""
    record = {"words_per_second": result.words_per_second, "loss": result.history.get("loss", [])}
    write_vectors_directory(out, result.vectors, SETTINGS_FILE, settings=settings, corpus=corpus, extra=record)


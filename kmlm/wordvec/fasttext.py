"""FastText: word2vec (skip-gram or CBOW, negative sampling) whose input vector of a word is
the mean of the word's own row and the rows of its hashed character n-grams.

Training reuses word2vec's example pipeline and fit (`kmlm.wordvec.word2vec`); only the
input side differs:

```
word id ──> [word row, V + bucket of each n-gram of <word>] (-1 padded, a constant table)
  ──> mean of those input rows (skip-gram: of the target; CBOW: of every context word's rows)
  ──> dot with the output rows of the true word and K negatives ──> logistic loss
```

The n-grams and buckets are fastText's (`kmlm.wordvec.subwords`), and the input table is laid
out as fastText's (V word rows, then the bucket rows), so the trained model is written as a
Facebook `.bin` (`kmlm.wordvec.fasttext_bin`) that gensim and fastText load, and any word,
seen or not, gets a vector from its n-grams.

Example:
(Trains on a corpus file, so not run as a test; tests/wordvec trains on small text.)
>>> settings = FastTextSettings(model="skipgram", dim=50, min_n=3, max_n=6, buckets=100_000)  # doctest: +SKIP
>>> result = train_fasttext(load_documents("corpus.txt"), settings)  # doctest: +SKIP
>>> result.vectors.most_similar("walkings", top_n=3)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from kmlm.wordvec.fasttext_bin import FastTextArgs, save_fasttext_bin
from kmlm.wordvec.subwords import SubwordVectors, subword_rows
from kmlm.wordvec.vectors import write_vectors_directory
from kmlm.wordvec.word2vec import Word2Vec, Word2VecSettings, corpus_vocabulary, fit_word2vec

SETTINGS_FILE = "fasttext.json"
VECTORS_FILE = "vectors.vec"
MODEL_FILE = "model.bin"


@dataclasses.dataclass
class FastTextSettings(Word2VecSettings):
    """The settings of a fastText run (the `kmlm fasttext` flags): word2vec's, with negative
    sampling only, plus the character n-grams.

    Attributes:
        min_n, max_n: n-gram lengths in characters, counting the `<` `>` boundary markers
            (max_n 0: no n-grams, plain word2vec written as a `.bin`).
        buckets: rows of the hashed n-gram table (fastText's -bucket).
        learning_rate: fastText's default 0.05.

    word2vec's `workers` is inherited but unused (fastText trains with `model.fit`, not the
    compiled negative-sampling trainer), so `fasttext.json` does not record it.
    """

    learning_rate: float = 0.05
    min_n: int = 3
    max_n: int = 6
    buckets: int = 200_000

    def validate(self):
        super().validate()
        if self.hierarchical_softmax:
            raise ValueError("fasttext trains with negative sampling only; give --negatives >= 1 without --hs")
        if self.max_n != 0 and not 1 <= self.min_n <= self.max_n:
            raise ValueError(f"--min-n {self.min_n} --max-n {self.max_n}: need 1 <= min-n <= max-n "
                             "(or --max-n 0 for no n-grams)")
        if self.max_n < 0:
            raise ValueError(f"--max-n {self.max_n} must be >= 0 (0: no n-grams)")
        if self.buckets < 1 and self.max_n > 0:
            raise ValueError(f"--buckets {self.buckets} must be at least 1 when words have n-grams")


# The settings fasttext.json records: all of FastTextSettings but the unused `workers`.
_RECORDED_FIELDS = [field.name for field in dataclasses.fields(FastTextSettings) if field.name != "workers"]
_RecordedSettings = dataclasses.make_dataclass("RecordedFastTextSettings", _RECORDED_FIELDS)


def subword_matrix(vocabulary, min_n, max_n, buckets) -> np.ndarray:
    """Each word's rows of the input table: its own row i, then V + the bucket of each of its
    n-grams (repeats kept, as fastText keeps them), padded with -1.

    Returns:
        [V, L] int32, L the most rows of any word.

    Example:
    >>> subword_matrix(["ab", "b"], 3, 3, 10).tolist()
    [[0, 10, 8], [1, 5, -1]]
    """
    ids, splits = subword_rows(vocabulary, min_n, max_n, buckets) if max_n > 0 and buckets > 0 else (
        np.zeros(0, np.int64), np.zeros(len(vocabulary) + 1, np.int64))
    sizes = np.diff(splits)
    matrix = np.full((len(vocabulary), 1 + int(sizes.max(initial=0))), -1, dtype=np.int64)
    matrix[:, 0] = np.arange(len(vocabulary))
    owners = np.repeat(np.arange(len(vocabulary)), sizes)
    matrix[owners, 1 + np.arange(len(ids)) - np.repeat(splits[:-1], sizes)] = len(vocabulary) + ids
    return matrix.astype(np.int32)


@keras.saving.register_keras_serializable(package="kmlm")
class FastText(Word2Vec):
    """`Word2Vec` whose inputs are words made of their rows in `subwords` (`subword_matrix`):
    the input table has V word rows and `buckets` n-gram rows, the hidden vector is the mean
    of all the rows of the input words.

    Args:
        subwords: [V, L] int32 rows of each word (-1 padding).
        buckets: n-gram rows after the V word rows.
        dim, seed: as `Word2Vec`; the output table has a row per word.

    Example:
    >>> model = FastText(subword_matrix(["ab", "b"], 3, 3, 10), 10, 8)
    >>> model({"input_ids": tf.constant([[1]]), "output_ids": tf.constant([[0, 1]])}).shape
    TensorShape([1, 2])
    """

    def __init__(self, subwords, buckets, dim, seed=0, **kwargs):
        subwords = np.asarray(subwords, dtype=np.int32)
        for name in ("vocabulary_size", "output_size", "input_size"):
            kwargs.pop(name, None)  # from a saved config: they follow from subwords and buckets
        vocabulary_size = subwords.shape[0]
        super().__init__(vocabulary_size, dim, vocabulary_size, seed=seed, input_size=vocabulary_size + buckets,
                         **kwargs)
        self.buckets = buckets
        self.subwords = tf.constant(subwords)

    whole_gradient_per_row = True
    # fastText's own: uniform in +-1/dim. With word2vec's +-0.5/dim, a word (the mean of its
    # row and its n-gram rows) starts with a random part too small to tell words apart early.
    initial_spread = 1.0

    def input_rows(self, input_ids):
        rows = tf.gather(self.subwords, tf.maximum(input_ids, 0))  # [B, C, L]
        rows = tf.where(input_ids[..., None] >= 0, rows, -1)
        return tf.reshape(rows, [tf.shape(input_ids)[0], -1])

    def get_config(self):
        config = super().get_config()
        config.update(subwords=self.subwords.numpy().tolist(), buckets=self.buckets)
        return config


@dataclasses.dataclass
class FastTextResult:
    """What `train_fasttext` returns.

    Attributes:
        vectors: `SubwordVectors` (with counts) of the trained input table.
        output_rows: [V, D] the output (context) vectors.
        model: the trained `FastText` Keras model.
        words_per_second: per-epoch throughput in corpus words (before subsampling) per second.
        history: the Keras `History.history` dict.
    """

    vectors: SubwordVectors
    output_rows: np.ndarray
    model: FastText
    words_per_second: list
    history: dict


def train_fasttext(documents: tf.data.Dataset, settings: FastTextSettings | None = None, verbose=0) -> FastTextResult:
    """Trains fastText word vectors on a dataset of documents.

    Args:
        documents: `tf.string` documents (e.g. from `kmlm.pipelines.load_documents`).
        settings: `FastTextSettings`.
        verbose: Keras progress-bar mode; also prints vocabulary size and words/s when true.

    Returns:
        A `FastTextResult`.
    """
    settings = settings or FastTextSettings()
    settings.validate()
    vocabulary, frequencies = corpus_vocabulary(documents, settings, verbose)
    buckets = settings.buckets if settings.max_n > 0 else 0
    keras.utils.set_random_seed(settings.seed)
    subwords = subword_matrix(vocabulary, settings.min_n, settings.max_n, buckets)
    model = FastText(subwords, buckets, settings.dim, seed=settings.seed, name=f"fasttext_{settings.model}")
    # One XLA step (gather of every word's rows, dot, sigmoid, scatter-add): 1.7-1.8x the words/s of
    # the step without XLA (second epoch, jieba-segmented Debian Reference zh-cn, dim 30, shared 2 cores).
    result = fit_word2vec(model, documents, vocabulary, frequencies, settings, verbose, jit_compile=True)
    table = model.input_embedding.embeddings.numpy()
    vectors = SubwordVectors(vocabulary, table[: len(vocabulary)], table[len(vocabulary):], settings.min_n,
                             settings.max_n, counts=frequencies)
    return FastTextResult(vectors=vectors, output_rows=model.output_embedding.embeddings.numpy(), model=model,
                          words_per_second=result.words_per_second, history=result.history)


def fasttext_args(settings: FastTextSettings) -> FastTextArgs:
    """The arguments a `.bin` records, from the settings of the run."""
    return FastTextArgs(model=settings.model, loss="ns", window=settings.window, epochs=settings.epochs,
                        min_count=settings.min_count, negatives=settings.negatives, subsample=settings.subsample)


def save_fasttext_run(out: str, result: FastTextResult, settings: FastTextSettings, corpus: str | None = None):
    """Writes `vectors.vec` (word2vec text format, the vocabulary's full vectors), `model.bin`
    (Facebook fastText binary: word and n-gram rows, output rows), `vocab.txt` ("word count"
    lines) and `fasttext.json` (settings and throughput) into `out`."""
    record = {"words_per_second": result.words_per_second, "loss": result.history.get("loss", []),
              "model_file": MODEL_FILE}
    recorded = _RecordedSettings(**{name: getattr(settings, name) for name in _RECORDED_FIELDS})
    write_vectors_directory(out, result.vectors, SETTINGS_FILE, settings=recorded, corpus=corpus, extra=record,
                            vectors_file=VECTORS_FILE)
    save_fasttext_bin(os.path.join(out, MODEL_FILE), result.vectors, result.output_rows, fasttext_args(settings))

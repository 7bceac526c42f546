"""FastText: word2vec (skip-gram or CBOW, negative sampling) whose input vector of a word is
the mean of the word's own row and the rows of its hashed character n-grams.

Training is compiled CPU code (`kmlm.wordvec.fasttext_kernel`) on word2vec's corpus ids,
vocabulary, subsampling, windows, negatives and Hogwild workers (`kmlm.wordvec.word2vec`);
only the input side differs:

```
word id ──> [word row, V + bucket of each n-gram of <word>] (`subword_matrix`, a constant table)
  ──> mean of those input rows (skip-gram: of the target; CBOW: of every context word's rows)
  ──> dot with the output rows of the true word and K negatives ──> logistic loss
  ──> every one of those input rows moves by the whole gradient of the mean (fastText's update)
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

import numpy as np
import tensorflow as tf

from kmlm.wordvec import fasttext_kernel
from kmlm.wordvec.fasttext_bin import FastTextArgs, save_fasttext_bin
from kmlm.wordvec.subwords import SubwordVectors, subword_rows
from kmlm.wordvec.vectors import write_vectors_directory
from kmlm.wordvec.word2vec import Word2VecSettings, corpus_vocabulary, negative_sampling_epochs

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

    word2vec's `batch_size` and `table_size` (of its `model.fit` path) are inherited but
    unused: the compiled trainer takes one example at a time and draws negatives from an
    alias table, so `fasttext.json` does not record them.
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


# The settings fasttext.json records: all of FastTextSettings but the unused `batch_size` and `table_size`.
_RECORDED_FIELDS = [field.name for field in dataclasses.fields(FastTextSettings)
                    if field.name not in ("batch_size", "table_size")]
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


def initial_rows(rows: int, dim: int, seed: int) -> np.ndarray:
    """The input table at the start: `rows` rows uniform in +-1/dim, as fastText and gensim's
    FastText start every word and n-gram row. (With word2vec.c's +-0.5/dim, a word, the mean of
    its row and its n-gram rows, starts with a random part too small to tell words apart early.)

    Example:
    >>> table = initial_rows(3, 4, seed=0)
    >>> table.shape, table.dtype.name, bool(abs(table).max() <= 1 / 4)
    ((3, 4), 'float32', True)
    """
    uniform = np.random.default_rng(seed).random((rows, dim), dtype=np.float32)
    return (uniform * 2 - 1) * np.float32(1.0 / dim)


@dataclasses.dataclass
class FastTextResult:
    """What `train_fasttext` returns.

    Attributes:
        vectors: `SubwordVectors` (with counts) of the trained input table.
        output_rows: [V, D] the output (context) vectors.
        words_per_second: per-epoch throughput in corpus words (before subsampling) per second.
        history: {"loss": the mean logistic loss of an example (true word and negatives summed)
            per epoch}.
    """

    vectors: SubwordVectors
    output_rows: np.ndarray
    words_per_second: list
    history: dict


def train_fasttext(documents: tf.data.Dataset, settings: FastTextSettings | None = None, verbose=0) -> FastTextResult:
    """Trains fastText word vectors on a dataset of documents, `settings.workers` threads at
    once, the learning rate decaying linearly to 1e-4 of itself over the run.

    Args:
        documents: `tf.string` documents (e.g. from `kmlm.pipelines.load_documents`).
        settings: `FastTextSettings`.
        verbose: when true, prints the vocabulary size and each epoch's loss and words/s.

    Returns:
        A `FastTextResult`.
    """
    settings = settings or FastTextSettings()
    settings.validate()
    vocabulary, frequencies = corpus_vocabulary(documents, settings, verbose)
    buckets = settings.buckets if settings.max_n > 0 else 0
    subwords = fasttext_kernel.word_rows(subword_matrix(vocabulary, settings.min_n, settings.max_n, buckets))
    syn0 = initial_rows(len(vocabulary) + buckets, settings.dim, settings.seed)
    syn1 = np.zeros((len(vocabulary), settings.dim), np.float32)

    def train_epoch(syn0, syn1, ids, spans, keep, table, **options):
        return fasttext_kernel.train_epoch(syn0, syn1, ids, spans, keep, table, subwords, **options)

    rates, losses = negative_sampling_epochs(syn0, syn1, documents, vocabulary, frequencies, settings, train_epoch,
                                             _compile_kernel, verbose)
    vectors = SubwordVectors(vocabulary, syn0[: len(vocabulary)], syn0[len(vocabulary):], settings.min_n,
                             settings.max_n, counts=frequencies)
    return FastTextResult(vectors=vectors, output_rows=syn1, words_per_second=rates, history={"loss": losses})


def _compile_kernel(syn0, ids, keep, table, options):
    """Compiles (or loads from Numba's cache) the kernel for these array types, so that the
    first epoch's words/s is training alone."""
    tiny = np.zeros((2, syn0.shape[1]), np.float32)
    subwords = fasttext_kernel.word_rows(np.zeros((2, 1), np.int32))
    fasttext_kernel.train_span(tiny, tiny.copy(), ids[:0], np.zeros(1, np.int64), keep[:2], *table, *subwords,
                               options["cbow"], options["window"], options["negatives"], 0.0, 0.0, np.uint64(0))


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

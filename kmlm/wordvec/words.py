"""Words for the word-vector trainers: splitting text into words in the graph, counting
them, the vocabulary of the frequent ones, and looking their ids up.

word2vec and GloVe read a corpus the same way, so their vectors cover the same words:

```
documents ──> words (lowercase, split on non-letters, every CJK character a word)
  ──> counts ──> vocabulary (words seen >= min_count times, most frequent first) ──> ids
```

With a segmenter (`segmenter="jieba"`, `kmlm.pipelines.segmentation`), the Chinese words it
finds (two or more Han characters) are words instead of their characters; other text splits
as without one.

Example:
>>> documents = tf.data.Dataset.from_tensor_slices(["the cat sat", "the dog"])
>>> build_vocabulary(count_words(documents), min_count=2)
(['the'], array([2]))
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kmlm.pipelines.segmentation import segment_texts

# Characters written without spaces between words: each one is a word of its own.
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}"


def split_words(texts: tf.Tensor, segmenter: str | None = None) -> tf.RaggedTensor:
    """Splits strings into words in the graph: lowercase, split on every character that is
    not a letter (or combining mark), and make every CJK character a word, except the
    characters of a Chinese word that `segmenter` finds.

    Args:
        texts: a [N] `tf.string` tensor.
        segmenter: None, or a name from `kmlm.pipelines.segmentation.SEGMENTERS`.

    Returns:
        A [N, (words)] ragged `tf.string` tensor.

    Example:
    >>> split_words(tf.constant(["Don't panic, 世界!"])).to_list()
    [[b'don', b't', b'panic', b'\\xe4\\xb8\\x96', b'\\xe7\\x95\\x8c']]
    >>> [w.decode() for w in split_words(tf.constant(["我爱北京"]), "jieba").to_list()[0]]
    ['我', '爱', '北京']
    """
    if segmenter is None:
        return _split_on_non_letters(texts)
    pieces = segment_texts(texts, segmenter)  # Chinese words at the odd places of each row
    flat = pieces.flat_values
    count = tf.size(flat, out_type=tf.int64)
    index = tf.range(count)
    is_word = tf.math.floormod(index - tf.gather(pieces.row_splits, pieces.value_rowids()), 2) == 1
    split = _split_on_non_letters(flat)
    whole = tf.RaggedTensor.from_tensor(flat[:, None])
    # Row i of the result: the Chinese word itself, or piece i split as without a segmenter.
    per_piece = tf.gather(tf.concat([split, whole], axis=0), tf.where(is_word, count + index, index))
    return tf.RaggedTensor.from_row_splits(per_piece, pieces.row_splits).merge_dims(1, 2)


def _split_on_non_letters(texts: tf.Tensor) -> tf.RaggedTensor:
    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, f"([{_CJK}])", r" \1 ")
    texts = tf.strings.regex_replace(texts, r"[^\p{L}\p{M}]+", " ")
    return tf.strings.split(tf.strings.strip(texts))


def count_words(documents: tf.data.Dataset, segmenter: str | None = None) -> dict[str, int]:
    """Counts the words (`split_words`, with `segmenter`) of a dataset of documents.

    Example:
    >>> count_words(tf.data.Dataset.from_tensor_slices(["a b a"]))
    {'a': 2, 'b': 1}
    """
    counts: dict[str, int] = {}
    chunks = documents.batch(1024).map(lambda texts: split_words(texts, segmenter).flat_values)
    for words in chunks.prefetch(2).as_numpy_iterator():
        unique, frequency = np.unique(words, return_counts=True)
        for word, n in zip(unique.tolist(), frequency.tolist()):
            counts[word] = counts.get(word, 0) + n
    return {word.decode("utf-8"): n for word, n in counts.items()}


def build_vocabulary(counts: dict[str, int], min_count: int) -> tuple[list[str], np.ndarray]:
    """Words seen at least `min_count` times, most frequent first (ties alphabetical),
    and their counts.

    Example:
    >>> build_vocabulary({"b": 3, "a": 3, "c": 1}, min_count=2)
    (['a', 'b'], array([3, 3]))
    """
    kept = sorted(((n, w) for w, n in counts.items() if n >= min_count), key=lambda x: (-x[0], x[1]))
    if not kept:
        most = max(counts.values(), default=0)
        raise ValueError(
            f"no word occurs --min-count {min_count} times (the most frequent occurs {most} times); "
            "lower --min-count or give a larger corpus"
        )
    return [w for _, w in kept], np.array([n for n, _ in kept], dtype=np.int64)


def word_id_table(vocabulary) -> tf.lookup.StaticHashTable:
    """A lookup table from the words of `vocabulary` to their row (int32), -1 for others."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(vocabulary)), tf.range(len(vocabulary), dtype=tf.int32)),
        default_value=-1,
    )


def known_word_ids(
    texts: tf.Tensor, table: tf.lookup.StaticHashTable, segmenter: str | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """The ids of the vocabulary words of `texts` (`split_words`, with `segmenter`), flat and
    in order, with the index of the text each came from; words outside the vocabulary are
    removed (so windows span them).

    Returns:
        (ids, text_index): two [n] int32 tensors.

    Example:
    >>> ids, rows = known_word_ids(tf.constant(["a x b", "b"]), word_id_table(["a", "b"]))
    >>> ids.numpy().tolist(), rows.numpy().tolist()
    ([0, 1, 1], [0, 0, 1])
    """
    ids = tf.ragged.map_flat_values(table.lookup, split_words(texts, segmenter))
    known = ids.flat_values >= 0
    return tf.boolean_mask(ids.flat_values, known), tf.boolean_mask(tf.cast(ids.value_rowids(), tf.int32), known)

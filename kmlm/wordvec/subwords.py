"""Character n-grams as fastText builds them, and word vectors made of them.

A word is wrapped in boundary markers, `<word>`, and every run of min_n..max_n characters
of the wrapped form is an n-gram (the whole `<word>` too, when it is short enough). Each
n-gram is hashed with 32-bit FNV-1a over its UTF-8 bytes, each byte sign-extended first as
fastText's `char` arithmetic does, and the hash modulo the bucket count picks its row. A word
in the vocabulary is the mean of its own row and its n-gram rows; any other word is the mean
of its n-gram rows, so a word never seen in training still gets a vector.

Example:
>>> [ngram.decode() for ngram in character_ngrams("where", 3, 3)]
['<wh', 'whe', 'her', 'ere', 're>']
>>> int(ngram_hashes([b"<wh"])[0])
1048167652
"""

from __future__ import annotations

import numpy as np

from kmlm.wordvec.vectors import WordVectors

BEGIN_OF_WORD, END_OF_WORD = "<", ">"
_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619


def character_ngrams(word: str, min_n: int, max_n: int) -> list[bytes]:
    """The character n-grams of `<word>` with min_n..max_n characters, as UTF-8 bytes, in
    fastText's order (by start, then by length). Lone boundary markers are not n-grams.

    Example:
    >>> [ngram.decode() for ngram in character_ngrams("été", 4, 5)]
    ['<été', '<été>', 'été>']
    """
    wrapped = (BEGIN_OF_WORD + word + END_OF_WORD).encode("utf-8")
    # Byte offsets where a character starts (UTF-8 continuation bytes are 10xxxxxx), and the end.
    starts = [i for i, byte in enumerate(wrapped) if byte & 0xC0 != 0x80] + [len(wrapped)]
    characters = len(starts) - 1
    ngrams = []
    for first in range(characters):
        for n in range(max(min_n, 1), max_n + 1):
            last = first + n
            if last > characters:
                break
            if n == 1 and (first == 0 or last == characters):
                continue
            ngrams.append(wrapped[starts[first] : starts[last]])
    return ngrams


def ngram_hashes(ngrams: list[bytes]) -> np.ndarray:
    """fastText's hash of each byte string: FNV-1a (32 bits) over bytes read as signed chars.

    Returns:
        [len(ngrams)] uint32 array.
    """
    if not ngrams:
        return np.zeros(0, dtype=np.uint32)
    lengths = np.fromiter((len(g) for g in ngrams), dtype=np.int64, count=len(ngrams))
    # All n-grams side by side in one [N, longest] byte matrix, hashed column by column.
    matrix = np.zeros((len(ngrams), int(lengths.max())), dtype=np.uint8)
    flat = np.frombuffer(b"".join(ngrams), dtype=np.uint8)
    rows = np.repeat(np.arange(len(ngrams)), lengths)
    columns = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    matrix[rows, columns] = flat
    # A byte >= 0x80 becomes a negative char, whose uint32 form has the top 24 bits set.
    signed = matrix.view(np.int8).astype(np.int64) & 0xFFFFFFFF
    hashes = np.full(len(ngrams), _FNV_OFFSET, dtype=np.int64)
    for column in range(matrix.shape[1]):
        inside = column < lengths
        updated = ((hashes ^ signed[:, column]) * _FNV_PRIME) & 0xFFFFFFFF
        hashes = np.where(inside, updated, hashes)
    return hashes.astype(np.uint32)


def ngram_buckets(word: str, min_n: int, max_n: int, buckets: int) -> np.ndarray:
    """The bucket (row of the n-gram table) of each n-gram of `word`, repeats kept.

    Example:
    >>> ngram_buckets("where", 3, 3, 1000).tolist()
    [652, 941, 420, 33, 498]
    """
    return (ngram_hashes(character_ngrams(word, min_n, max_n)) % np.uint32(buckets)).astype(np.int64)


def subword_rows(words, min_n: int, max_n: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """The n-gram buckets of many words at once, as a ragged table.

    Returns:
        (buckets, splits): int64 arrays; word i's buckets are `buckets[splits[i]:splits[i + 1]]`.
    """
    per_word = [character_ngrams(word, min_n, max_n) for word in words]
    splits = np.zeros(len(per_word) + 1, dtype=np.int64)
    splits[1:] = np.cumsum([len(ngrams) for ngrams in per_word])
    flat = [ngram for ngrams in per_word for ngram in ngrams]
    return (ngram_hashes(flat) % np.uint32(buckets)).astype(np.int64), splits


def distinct_ngrams(words, min_n: int, max_n: int) -> int:
    """How many different n-grams the words have (sizes the bucket table)."""
    return len({ngram for word in words for ngram in character_ngrams(word, min_n, max_n)})


class SubwordVectors(WordVectors):
    """fastText vectors: a row per vocabulary word plus a table of hashed n-gram rows.

    `vectors` (and so the text files, neighbours among the vocabulary and evaluations) holds
    the vocabulary words' full vectors, the mean of the word's row and its n-gram rows;
    `vector(word)`, `most_similar`, `similarity` and `analogy` also accept words outside the
    vocabulary, as the mean of their n-gram rows (as fastText and gensim compute them).

    Args:
        words: the vocabulary, in row order.
        word_rows: [V, D] the words' own rows.
        ngram_rows: [buckets, D] the n-gram table.
        min_n, max_n: n-gram lengths in characters.
        counts: optional [V] corpus counts.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> vectors = SubwordVectors(["walk", "talk"], rng.normal(size=(2, 8)), rng.normal(size=(100, 8)), 3, 6)
    >>> vectors.vector("walking").shape
    (8,)
    >>> vectors.most_similar("walked", top_n=1)[0][0]
    'walk'
    """

    def __init__(self, words, word_rows, ngram_rows, min_n, max_n, counts=None):
        self.word_rows = np.asarray(word_rows, dtype=np.float32)
        self.ngram_rows = np.asarray(ngram_rows, dtype=np.float32)
        self.min_n, self.max_n = int(min_n), int(max_n)
        if self.word_rows.ndim != 2 or self.ngram_rows.ndim != 2 or self.word_rows.shape[1] != self.ngram_rows.shape[1]:
            raise ValueError(
                f"word rows {self.word_rows.shape} and n-gram rows {self.ngram_rows.shape} must be [V, D] and [B, D]"
            )
        if self.min_n < 0 or self.max_n < 0:
            raise ValueError(f"n-gram lengths min_n={min_n}, max_n={max_n} must be >= 0 (max_n 0: no n-grams)")
        words = [str(w) for w in words]
        super().__init__(words, self._full_vectors(words), counts=counts)

    @property
    def buckets(self):
        return self.ngram_rows.shape[0]

    def _full_vectors(self, words):
        """Each vocabulary word's mean of its own row and its n-gram rows."""
        ids, splits = subword_rows(words, self.min_n, self.max_n, max(self.buckets, 1))
        sums = self.word_rows.astype(np.float64)
        if self.buckets and len(ids):
            owners = np.repeat(np.arange(len(words)), np.diff(splits))
            for start in range(0, len(ids), 1 << 20):  # bounded memory for large models
                np.add.at(sums, owners[start : start + (1 << 20)], self.ngram_rows[ids[start : start + (1 << 20)]])
        sizes = 1 + (np.diff(splits) if self.buckets else np.zeros(len(words), dtype=np.int64))
        return (sums / np.reshape(sizes, (-1, 1))).astype(np.float32)

    def ngram_vector(self, word):
        """The mean of the n-gram rows of `word`, whether or not it is in the vocabulary."""
        ids = ngram_buckets(word, self.min_n, self.max_n, self.buckets) if self.buckets else []
        if len(ids) == 0:
            raise KeyError(
                f"word {word!r} is not in the vocabulary and has no character n-grams of {self.min_n}..{self.max_n} "
                "characters to build a vector from"
            )
        return self.ngram_rows[ids].astype(np.float64).mean(axis=0).astype(np.float32)

    def vector(self, word):
        """The vector of any word: its full vector when in the vocabulary, else its n-grams' mean."""
        if word in self.index:
            return self.vectors[self.index[word]]
        return self.ngram_vector(word)

    def has_vector(self, word):
        """True for vocabulary words and for any other word with at least one n-gram."""
        return word in self.index or (self.buckets > 0 and len(character_ngrams(word, self.min_n, self.max_n)) > 0)

    def restricted(self, limit):
        """The first `limit` vocabulary words with the whole n-gram table."""
        counts = None if self.counts is None else self.counts[:limit]
        return SubwordVectors(self.words[:limit], self.word_rows[:limit], self.ngram_rows, self.min_n, self.max_n,
                              counts=counts)

    def __repr__(self):
        return (f"SubwordVectors({len(self)} words, {self.buckets} n-gram buckets of {self.min_n}..{self.max_n} "
                f"characters, dim {self.dim})")

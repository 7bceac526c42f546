"""Chinese word segmentation for whole-word masking and word vectors.

Chinese is written without spaces, and the WordPiece tokenizer makes every CJK character a
token (as Chinese BERT does). A segmenter finds the words: with `segmenter="jieba"`, the
characters of one word are masked together (Chinese BERT-wwm) while the model's tokens stay
single characters, and word vectors are vectors of words instead of characters.

A *Chinese word* here is a segmenter word of two or more Han characters (U+4E00..U+9FD5,
jieba's own class); everything else keeps the rules it has without a segmenter (English
`##` pieces, punctuation, every other CJK character a word of its own), so text without
Chinese words is tokenized and masked exactly as without a segmenter.

Segmentation runs in Python (jieba is a Python library) inside the tf.data pipeline, through
`tf.py_function` on batches of documents; tokenization, packing and masking stay in the graph.

Example:
    >>> chinese_word_pieces("我爱北京天安门 ok", "jieba")
    ['我爱', '北京', '', '天安门', ' ok']
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable

import tensorflow as tf

SEGMENTERS = ("jieba",)

# Han characters as jieba defines them; each one is also a token of its own in the tokenizer.
_HAN_WORD = re.compile("[\u4e00-\u9fd5]{2,}")
_LOCK = threading.Lock()


def check_segmenter(segmenter: str | None) -> None:
    """Raises a ValueError unless `segmenter` is None (no segmentation) or in `SEGMENTERS`.

    Example:
        >>> check_segmenter("jieba")
        >>> check_segmenter(None)
    """
    if segmenter is not None and segmenter not in SEGMENTERS:
        raise ValueError(
            f"unknown segmenter {segmenter!r}; use one of {', '.join(SEGMENTERS)} "
            "(or none: no segmentation)"
        )


@functools.lru_cache(maxsize=None)
def word_cutter(segmenter: str) -> Callable[[str], list[str]]:
    """The function that cuts a text into the segmenter's words (which concatenate to it).

    The dictionary loads on first use, without jieba's "Building prefix dict" log lines.

    Example:
        >>> word_cutter("jieba")("我爱北京")
        ['我', '爱', '北京']
    """
    check_segmenter(segmenter)
    if segmenter is None:
        raise ValueError("no segmenter given; use one of " + ", ".join(SEGMENTERS))
    import jieba

    tokenizer = jieba.Tokenizer()
    with _LOCK:
        level = jieba.default_logger.level
        jieba.setLogLevel(logging.ERROR)  # jieba logs its dictionary loading at INFO
        try:
            tokenizer.initialize()
        finally:
            jieba.setLogLevel(level)
    return tokenizer.lcut


def chinese_word_pieces(text: str, segmenter: str) -> list[str]:
    """Cuts `text` into `[other, word, other, word, ..., other]`: the Chinese words of the
    segmenter (two or more Han characters) at the odd places, the text between them (maybe
    empty) at the even places. The pieces concatenate to `text`.

    Example:
        >>> chinese_word_pieces("用Python写代码", "jieba")
        ['用Python写', '代码', '']
    """
    pieces, other = [], []
    for word in word_cutter(segmenter)(text):
        if _HAN_WORD.fullmatch(word):
            pieces += ["".join(other), word]
            other = []
        else:
            other.append(word)
    pieces.append("".join(other))
    return pieces


def segment_texts(texts: tf.Tensor, segmenter: str) -> tf.RaggedTensor:
    """`chinese_word_pieces` of a [N] `tf.string` tensor, in the graph (a `tf.py_function`).

    Returns:
        A [N, (pieces)] ragged `tf.string` tensor; every row has an odd number of pieces,
        the Chinese words at the odd places.

    Example:
        >>> segment_texts(tf.constant(["北京很大"]), "jieba").to_list()[0][1].decode()
        '北京'
    """
    check_segmenter(segmenter)
    word_cutter(segmenter)  # load the dictionary here, not in a tf.data thread

    def cut(batch):
        rows = [chinese_word_pieces(text.decode("utf-8", "replace"), segmenter)
                for text in batch.numpy().tolist()]
        flat = [piece.encode("utf-8") for row in rows for piece in row]
        return tf.constant(flat, tf.string, shape=[len(flat)]), tf.constant([len(r) for r in rows], tf.int64)

    texts = tf.convert_to_tensor(texts, tf.string)
    pieces, lengths = tf.py_function(cut, [texts], (tf.string, tf.int64))
    pieces.set_shape([None])
    lengths.set_shape(texts.shape)
    return tf.RaggedTensor.from_row_lengths(pieces, lengths)


def tokenize_words(tokenizer, texts: tf.Tensor, segmenter: str) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """Tokenizes texts and marks the tokens that continue a Chinese word.

    The token ids are those of `tokenizer.tokenize(texts)`: pieces are cut only next to Han
    characters, where the tokenizer cuts anyway.

    Args:
        tokenizer: The WordPiece tokenizer (`make_tokenizer`).
        texts: A [N] `tf.string` tensor.
        segmenter: A name from `SEGMENTERS`.

    Returns:
        `(token_ids, continues_word)`: [N, (tokens)] ragged int32 tensors; `continues_word`
        is 1 on a character that continues the Chinese word of the token before it.

    Example:
        >>> from kmlm.pipelines.tokenizer import make_tokenizer
        >>> from kmlm.pipelines.vocabulary import SPECIAL_TOKENS
        >>> tokenizer = make_tokenizer(list(SPECIAL_TOKENS) + list("北京很大"))  # 北京 / 很大
        >>> ids, continues = tokenize_words(tokenizer, tf.constant(["北京很大"]), "jieba")
        >>> continues.to_list()
        [[0, 1, 0, 1]]
    """
    pieces = segment_texts(texts, segmenter)
    tokens = tokenizer.tokenize(pieces.flat_values)  # [pieces, (tokens)]
    if isinstance(tokens, list):  # eagerly, keras-hub hands back Python lists
        tokens = tf.ragged.constant(tokens, tf.int32, ragged_rank=1, inner_shape=())
    elif not isinstance(tokens, tf.RaggedTensor):  # equal lengths may come back dense
        tokens = tf.RaggedTensor.from_tensor(tokens)
    tokens = tf.cast(tokens, tf.int32)
    in_word = tf.math.floormod(tf.range(tf.size(pieces.flat_values, out_type=tf.int64))
                               - tf.gather(pieces.row_splits, pieces.value_rowids()), 2) == 1
    index = tf.range(tf.size(tokens.flat_values, out_type=tf.int64)) - tf.gather(
        tokens.row_splits, tokens.value_rowids())
    continues = tf.cast(tf.gather(in_word, tokens.value_rowids()) & (index > 0), tf.int32)
    per_text = tf.RaggedTensor.from_row_splits(tokens, pieces.row_splits)
    return per_text.merge_dims(1, 2), per_text.with_flat_values(continues).merge_dims(1, 2)

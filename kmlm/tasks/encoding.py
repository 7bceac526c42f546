"""In-graph encoding of task inputs: raw strings or words -> `token_ids`, `segment_ids`,
`document_ids`. The training datasets and the serving signatures share these functions, so
a served model sees exactly what it was trained on.

Texts become `[CLS] a [SEP]` or, for pairs, `[CLS] a [SEP] b [SEP]` with segment ids 0 then
1. A pair longer than `seq_len` is cut longest-first: the shorter text keeps all its pieces
when it fits in half the budget, and the longer one gets the rest.

Words (tagging) are tokenized one by one; `word_positions` [B, W] is the position of each
word's first piece (the piece that carries the word's tag), or -1 for a word that has no
piece or falls beyond `seq_len`.
"""

import tensorflow as tf


def _edges(rows, ids):
    return tf.fill([rows, 1], tf.constant(ids.cls, tf.int32)), tf.fill([rows, 1], tf.constant(ids.sep, tf.int32))


def _keep_first(ragged, counts):
    """Keeps the first counts[i] items of row i of a ragged [B, None] tensor."""
    positions = tf.ragged.range(ragged.row_lengths())
    return tf.ragged.boolean_mask(ragged, positions < tf.expand_dims(counts, 1))


def text_rows(tokenizer, ids, text, text_pair=None, *, seq_len):
    """Ragged [B, None] token and segment ids of texts (and optional second texts).

    Args:
        tokenizer: the run's WordPiece tokenizer.
        ids: the vocabulary's `SpecialIds`.
        text: string tensor [B].
        text_pair: string tensor [B] or None.
        seq_len: the longest row, [CLS]/[SEP] included.
    """
    rows = tf.shape(text)[0]
    cls, sep = _edges(rows, ids)
    first = tf.cast(tokenizer.tokenize(text), tf.int32)
    if text_pair is None:
        tokens = tf.concat([cls, first[:, : seq_len - 2], sep], axis=1)
        return tokens, tf.zeros_like(tokens)
    second = tf.cast(tokenizer.tokenize(text_pair), tf.int32)
    budget = tf.constant(seq_len - 3, tf.int64)
    first_length, second_length = first.row_lengths(), second.row_lengths()
    keep_first = tf.minimum(first_length, tf.maximum(budget - budget // 2, budget - second_length))
    keep_second = tf.minimum(second_length, budget - keep_first)
    part_a = tf.concat([cls, _keep_first(first, keep_first), sep], axis=1)
    part_b = tf.concat([_keep_first(second, keep_second), sep], axis=1)
    tokens = tf.concat([part_a, part_b], axis=1)
    segments = tf.concat([tf.zeros_like(part_a), tf.ones_like(part_b)], axis=1)
    return tokens, segments


def word_rows(tokenizer, ids, words, *, seq_len):
    """Ragged token ids [B, None] of sentences given as words, and `word_positions` [B, W]
    (dense, -1 where a word has no piece inside the row).

    Args:
        tokenizer: the run's WordPiece tokenizer.
        ids: the vocabulary's `SpecialIds`.
        words: ragged string tensor [B, W].
        seq_len: the longest row, [CLS]/[SEP] included.
    """
    rows = words.nrows()
    pieces = tf.cast(tokenizer.tokenize(words.flat_values), tf.int32)  # [all words, P]
    counts = pieces.row_lengths()  # pieces per word
    # Start of each word inside its sentence: running count minus the sentence's offset.
    running = tf.concat([tf.zeros([1], counts.dtype), tf.cumsum(counts)], axis=0)
    word_row = words.value_rowids()
    sentence_offset = tf.gather(running, tf.gather(words.row_splits, word_row))
    starts = running[:-1] - sentence_offset
    fits = (counts > 0) & (starts < seq_len - 2)
    positions = tf.where(fits, starts + 1, -1)  # +1 for [CLS]
    word_positions = tf.cast(
        words.with_flat_values(positions).to_tensor(default_value=-1), tf.int32
    )
    sentence_pieces = tf.RaggedTensor.from_row_splits(pieces, words.row_splits).merge_dims(1, 2)
    cls, sep = _edges(tf.cast(rows, tf.int32), ids)
    tokens = tf.concat([cls, sentence_pieces[:, : seq_len - 2], sep], axis=1)
    return tokens, word_positions


def to_dense(tokens, segments, ids, length):
    """Pads ragged rows to [B, length]: `token_ids`, `segment_ids`, `document_ids`
    (1 on real tokens, 0 on padding)."""
    rows = tokens.nrows()
    shape = tf.stack([tf.cast(rows, tf.int64), tf.cast(length, tf.int64)])
    token_ids = tokens.to_tensor(default_value=ids.pad, shape=shape)
    segment_ids = segments.to_tensor(default_value=0, shape=shape)
    document_ids = tf.cast(tf.sequence_mask(tokens.row_lengths(), tf.cast(length, tf.int64)), tf.int32)
    return {"token_ids": token_ids, "segment_ids": segment_ids, "document_ids": document_ids}


def bucket_length(tokens, seq_len, multiple=32):
    """The batch's padded length: its longest row rounded up to `multiple`, at most seq_len;
    few distinct shapes keep XLA recompilation rare while short batches stay short."""
    longest = tf.cast(tf.reduce_max(tokens.row_lengths()), tf.int32)
    return tf.minimum(seq_len, (longest + multiple - 1) // multiple * multiple)

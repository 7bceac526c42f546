"""Turn a batch of tokenized documents into fixed-length rows: packed, or one per row.

Both functions are pure tensor functions (no Python loop over tokens), so they run inside
`tf.data.Dataset.map` on a batch of documents and return dense int32 tensors:

* `token_ids` [R, seq_len]: WordPiece ids, 0 on padding;
* `segment_ids` [R, seq_len]: all 0 (single-segment pretraining);
* `document_ids` [R, seq_len]: the documents of a row numbered 1, 2, ...; 0 on padding.
"""

from __future__ import annotations

import tensorflow as tf

MIN_SEQ_LEN = 8


def check_seq_len(seq_len: int) -> None:
    """Raises a ValueError unless `seq_len` is an int of at least `MIN_SEQ_LEN`.

    Example:
        >>> check_seq_len(128)
    """
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < MIN_SEQ_LEN:
        raise ValueError(
            f"seq_len={seq_len!r} is too short; use an integer of at least {MIN_SEQ_LEN} "
            "(e.g. --seq-len 128)"
        )


def pack_documents(
    token_ids: tf.RaggedTensor,
    seq_len: int,
    *,
    cls_id: int,
    sep_id: int,
    pad_id: int = 0,
) -> dict[str, tf.Tensor]:
    """Packs documents back to back into rows of `seq_len` tokens.

    Each non-empty document becomes `[CLS] tokens [SEP]`; these segments are concatenated
    into one stream that is cut into rows, so a long document simply continues in the
    next row and no token is dropped. Only the last row is padded. Within a row the
    documents present are numbered 1, 2, 3, ... from the left (a document continued from
    the previous row is 1), which lets attention stay inside each document. Documents
    with no tokens are dropped.

    Args:
        token_ids: int32 `tf.RaggedTensor` [N, None], one tokenized document per row.
        seq_len: Row length S, at least 8.
        cls_id: Id of `[CLS]`.
        sep_id: Id of `[SEP]`.
        pad_id: Id written on padding (0 in kmlm vocabularies).

    Returns:
        A dict of int32 [R, S] tensors `token_ids`, `segment_ids` and `document_ids`, with
        R = ceil(total segment length / S).

    Raises:
        ValueError: If `seq_len` is too small or `token_ids` is not a ragged matrix.

    Example:
        >>> docs = tf.ragged.constant([[7, 8, 9], [10]], dtype=tf.int32)
        >>> rows = pack_documents(docs, 8, cls_id=2, sep_id=3)
        >>> rows["token_ids"].numpy().tolist()
        [[2, 7, 8, 9, 3, 2, 10, 3]]
        >>> rows["document_ids"].numpy().tolist()
        [[1, 1, 1, 1, 1, 2, 2, 2]]
    """
    segments = _documents_between_specials(token_ids, seq_len, cls_id, sep_id)
    stream = segments.flat_values
    # The index (in this batch) of the document each stream token belongs to.
    owner = tf.cast(segments.value_rowids(), tf.int32)
    padding = -tf.size(stream) % seq_len
    token_rows = tf.reshape(
        tf.concat([stream, tf.fill([padding], tf.cast(pad_id, tf.int32))], 0), [-1, seq_len]
    )
    owner_rows = tf.reshape(tf.concat([owner, tf.fill([padding], -1)], 0), [-1, seq_len])
    document_ids = tf.where(owner_rows >= 0, owner_rows - owner_rows[:, :1] + 1, 0)
    return {
        "token_ids": token_rows,
        "segment_ids": tf.zeros_like(token_rows),
        "document_ids": document_ids,
    }


def pad_documents(
    token_ids: tf.RaggedTensor,
    seq_len: int,
    *,
    cls_id: int,
    sep_id: int,
    pad_id: int = 0,
) -> dict[str, tf.Tensor]:
    """Puts each document in a row of its own: `[CLS] tokens[:S-2] [SEP]`, then padding.

    This is the classic BERT layout, kept to measure what packing saves; tokens beyond
    `seq_len - 2` are dropped. Documents with no tokens are dropped.

    Args:
        token_ids: int32 `tf.RaggedTensor` [N, None], one tokenized document per row.
        seq_len: Row length S, at least 8.
        cls_id: Id of `[CLS]`.
        sep_id: Id of `[SEP]`.
        pad_id: Id written on padding (0 in kmlm vocabularies).

    Returns:
        A dict of int32 [R, S] tensors `token_ids`, `segment_ids` and `document_ids`
        (1 on real tokens, 0 on padding), R the number of non-empty documents.

    Raises:
        ValueError: If `seq_len` is too small or `token_ids` is not a ragged matrix.

    Example:
        >>> docs = tf.ragged.constant([[7, 8, 9]], dtype=tf.int32)
        >>> pad_documents(docs, 8, cls_id=2, sep_id=3)["token_ids"].numpy().tolist()
        [[2, 7, 8, 9, 3, 0, 0, 0]]
    """
    segments = _documents_between_specials(token_ids, seq_len, cls_id, sep_id, seq_len - 2)
    rows = segments.to_tensor(default_value=tf.cast(pad_id, tf.int32), shape=[None, seq_len])
    document_ids = tf.sequence_mask(segments.row_lengths(), seq_len, dtype=tf.int32)
    return {"token_ids": rows, "segment_ids": tf.zeros_like(rows), "document_ids": document_ids}


def _documents_between_specials(
    token_ids: tf.RaggedTensor, seq_len: int, cls_id: int, sep_id: int, keep: int | None = None
) -> tf.RaggedTensor:
    """Drops empty documents and returns `[CLS] doc[:keep] [SEP]` for each of the rest."""
    check_seq_len(seq_len)
    if not isinstance(token_ids, tf.RaggedTensor) or token_ids.ragged_rank != 1:
        raise ValueError(
            "token_ids must be a tf.RaggedTensor [documents, None], got "
            f"{type(token_ids).__name__} of shape {token_ids.shape}; tokenize a batch of "
            "documents first"
        )
    token_ids = tf.cast(token_ids, tf.int32)
    token_ids = tf.ragged.boolean_mask(token_ids, token_ids.row_lengths() > 0)
    if keep is not None:
        token_ids = token_ids[:, :keep]
    ends = tf.ones([token_ids.nrows(), 1], tf.int32)
    return tf.concat(
        [ends * tf.cast(cls_id, tf.int32), token_ids, ends * tf.cast(sep_id, tf.int32)], axis=1
    )

"""The whole input pipeline: documents in, masked `(x, y, sample_weight)` batches out."""

from __future__ import annotations

import tensorflow as tf

from kmlm.pipelines.masking import Masker, MaskingConfig
from kmlm.pipelines.packing import check_seq_len, pack_documents, pad_documents
from kmlm.pipelines.segmentation import tokenize_words
from kmlm.pipelines.tokenizer import make_tokenizer, special_ids
from kmlm.pipelines.vocabulary import resolve_vocabulary


def mlm_dataset(
    documents: tf.data.Dataset,
    vocabulary: list[str] | str,
    *,
    seq_len: int = 128,
    batch_size: int = 32,
    masking: MaskingConfig = MaskingConfig(),
    lowercase: bool = True,
    packing: bool = True,
    shuffle_buffer: int = 2048,
    repeat: bool = True,
    deterministic_eval: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    tokenize_batch: int = 256,
    shuffle_seed: int | None = None,
    start_batch: int = 0,
) -> tf.data.Dataset:
    """Builds the masked language modeling input pipeline.

    Stages: shard and shuffle documents -> batch `tokenize_batch` documents -> tokenize
    in the graph (with `masking.segmenter`, Chinese words are found in Python first and
    their characters marked `continues_word`) -> `pack_documents` (or `pad_documents` with `packing=False`) -> unbatch
    rows -> shuffle rows -> batch `batch_size` rows -> number the batches -> mask each
    batch with a `Masker` seeded by `(masking.seed, batch number)` -> prefetch.

    Training mode shuffles (documents, then rows) and repeats forever; it drops a last
    partial batch. With `deterministic_eval=True` nothing is shuffled or repeated, the
    batch numbers (and so the masks) restart at 0 on every pass, and the last partial
    batch is filled up with all-padding rows (weight 0) instead of dropped, so every
    pass, in every run, sees the same batches and the same masks.

    Args:
        documents: Scalar `tf.string` documents, e.g. from `load_documents`.
        vocabulary: The tokens in id order, or a vocabulary file path.
        seq_len: Row length S.
        batch_size: Rows per batch B.
        masking: A `MaskingConfig`.
        lowercase: Whether the tokenizer lowercases (must match the vocabulary).
        packing: Pack documents back to back (True) or one document per row (False).
        shuffle_buffer: Size of the document and row shuffle buffers (training only).
        repeat: Repeat the documents forever (training only).
        deterministic_eval: Evaluation mode, see above.
        input_context: A `tf.distribute.InputContext`; documents are sharded by its
            `input_pipeline_id` (do not also shard in `load_documents`).
        tokenize_batch: How many documents are tokenized and packed together.
        shuffle_seed: Seed of the shuffles; `None` (default) uses `masking.seed`.
        start_batch: Training only: begin at this batch of the stream, with the masks it
            would have had (a resumed run continues where it stopped). The batches before
            it are read and packed but not masked.

    Returns:
        A dataset of `(features, mask_ids, mask_weights)` as `Masker` returns them, with
        static shapes [B, S] and [B, P]: the `(x, y, sample_weight)` that `model.fit`
        takes.

    Raises:
        ValueError: For a bad `seq_len`, `batch_size`, `tokenize_batch`, `shuffle_buffer`
            or vocabulary.

    Example:
        >>> docs = load_documents("builtin:python-docs")  # doctest: +SKIP
        >>> vocab = learn_vocabulary(docs, 8192)  # doctest: +SKIP
        >>> x, y, w = next(iter(mlm_dataset(docs, vocab)))  # doctest: +SKIP
        >>> x["token_ids"].shape, y.shape  # doctest: +SKIP
        (TensorShape([32, 128]), TensorShape([32, 24]))
    """
    check_seq_len(seq_len)
    for name, value in (("batch_size", batch_size), ("tokenize_batch", tokenize_batch),
                        ("shuffle_buffer", shuffle_buffer)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    vocabulary = resolve_vocabulary(vocabulary)
    tokenizer = make_tokenizer(vocabulary, lowercase=lowercase)
    ids = special_ids(vocabulary)
    masker = Masker(vocabulary, masking, seq_len)
    arrange = pack_documents if packing else pad_documents
    seed = masking.seed if shuffle_seed is None else shuffle_seed
    training = not deterministic_eval

    # Nothing here branches on tensors; skipping AutoGraph's rewrite of keras-hub's
    # tokenizer saves seconds of tracing per pipeline.
    @tf.autograph.experimental.do_not_convert
    def to_rows(texts):
        if masking.segmenter is None:
            return arrange(tokenizer.tokenize(texts), seq_len, cls_id=ids.cls, sep_id=ids.sep,
                           pad_id=ids.pad)
        # The word marks are laid out exactly as the tokens (same lengths), 0 on specials.
        token_ids, continues_word = tokenize_words(tokenizer, texts, masking.segmenter)
        rows = arrange(token_ids, seq_len, cls_id=ids.cls, sep_id=ids.sep, pad_id=ids.pad)
        marks = arrange(continues_word, seq_len, cls_id=0, sep_id=0, pad_id=0)
        return {**rows, "continues_word": marks["token_ids"]}

    if input_context is not None:
        documents = documents.shard(
            input_context.num_input_pipelines, input_context.input_pipeline_id
        )
    if training:
        documents = documents.shuffle(shuffle_buffer, seed=seed)
        if repeat:
            documents = documents.repeat()
    rows = (
        documents.batch(tokenize_batch)
        .map(to_rows, num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
    )
    if training:
        batches = rows.shuffle(shuffle_buffer, seed=seed).batch(batch_size, drop_remainder=True)
    else:
        batches = rows.batch(batch_size).map(
            tf.autograph.experimental.do_not_convert(lambda batch: _fill_batch(batch, batch_size))
        )
    if not isinstance(start_batch, int) or start_batch < 0 or (start_batch and not training):
        raise ValueError(f"start_batch={start_batch!r} must be a non-negative integer (and 0 in evaluation mode)")
    return (
        batches.enumerate()
        .skip(start_batch)
        .map(tf.autograph.experimental.do_not_convert(lambda step, batch: masker(batch, step)),
             num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _fill_batch(batch: dict[str, tf.Tensor], batch_size: int) -> dict[str, tf.Tensor]:
    """Pads a partial batch with all-padding rows (document_ids 0) up to `batch_size`."""
    missing = batch_size - tf.shape(batch["token_ids"])[0]

    def fill(rows):
        rows = tf.pad(rows, [[0, missing], [0, 0]])
        return tf.ensure_shape(rows, [batch_size, rows.shape[1]])

    return {name: fill(rows) for name, rows in batch.items()}

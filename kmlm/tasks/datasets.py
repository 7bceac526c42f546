"""tf.data pipelines of task examples: shuffle raw examples, batch, tokenize in-graph, pad
each batch to its own bucketed length (a multiple of 32, at most `seq_len`)."""

import numpy as np
import tensorflow as tf

from kmlm.tasks.encoding import bucket_length, text_rows, to_dense, word_rows

IGNORED = -1  # label of pieces that carry no tag (continuations, specials, padding)


def _shuffled(dataset, count, shuffle, seed):
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return dataset


def text_dataset(examples, tokenizer, ids, *, seq_len, batch_size, label_ids=None, targets=None,
                 shuffle=False, seed=0):
    """Batches of (features, target) for classification/pairs, or features alone.

    Args:
        examples: `TaskExamples` with texts (and text_pairs for pairs).
        tokenizer, ids: the run's tokenizer and `SpecialIds`.
        seq_len: longest row.
        batch_size: rows per batch.
        label_ids: int class ids per example (classification), or None.
        targets: float targets per example (regression), or None.
        shuffle: reshuffle the examples every epoch.
        seed: shuffle seed.
    """
    columns = {"text": tf.constant(examples.texts, tf.string)}
    pair = examples.text_pairs is not None and examples.task == "pair"
    if pair:
        columns["text_pair"] = tf.constant(examples.text_pairs, tf.string)
    target = None
    if label_ids is not None:
        target = tf.constant(np.asarray(label_ids, np.int32))
    elif targets is not None:
        target = tf.constant(np.asarray(targets, np.float32))
    dataset = tf.data.Dataset.from_tensor_slices(columns if target is None else (columns, target))
    dataset = _shuffled(dataset, len(examples.texts), shuffle, seed).batch(batch_size)

    def encode(batch, target=None):
        tokens, segments = text_rows(tokenizer, ids, batch["text"], batch.get("text_pair"), seq_len=seq_len)
        features = to_dense(tokens, segments, ids, bucket_length(tokens, seq_len))
        return features if target is None else (features, target)

    return dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def tag_dataset(examples, tokenizer, ids, *, seq_len, batch_size, tag_index=None, shuffle=False, seed=0,
                with_positions=False):
    """Batches of (features, piece_labels, piece_weights) for tagging: each word's tag id sits
    at its first piece with weight 1; all other positions have label -1 and weight 0. With
    `with_positions=True` the features also hold `word_positions` [B, W] (for evaluation).
    Without `tag_index`, batches are features alone."""
    words = tf.ragged.constant(examples.tokens, dtype=tf.string, ragged_rank=1) if examples.tokens else None
    columns = {"words": words}
    if tag_index is not None:
        columns["tags"] = tf.ragged.constant(
            [[tag_index[t] for t in row] for row in examples.tags], dtype=tf.int32, ragged_rank=1
        )
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    dataset = _shuffled(dataset, len(examples.tokens), shuffle, seed).ragged_batch(batch_size)

    def encode(batch):
        tokens, positions = word_rows(tokenizer, ids, batch["words"], seq_len=seq_len)
        length = bucket_length(tokens, seq_len)
        features = to_dense(tokens, tf.zeros_like(tokens), ids, length)
        if with_positions:
            features["word_positions"] = positions
        if "tags" not in batch:
            return features
        tags = batch["tags"].to_tensor(default_value=IGNORED, shape=tf.shape(positions, out_type=tf.int64))
        has_piece = positions >= 0
        rows = tf.broadcast_to(tf.range(tf.shape(positions)[0])[:, None], tf.shape(positions))
        indices = tf.stack([tf.boolean_mask(rows, has_piece), tf.boolean_mask(positions, has_piece)], axis=1)
        shape = tf.shape(features["token_ids"])
        labels = tf.tensor_scatter_nd_update(tf.fill(shape, IGNORED), indices, tf.boolean_mask(tags, has_piece))
        weights = tf.tensor_scatter_nd_update(tf.zeros(shape, tf.float32), indices,
                                              tf.ones(tf.shape(indices)[:1], tf.float32))
        return features, tf.maximum(labels, 0), weights

    return dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def pair_dataset(examples, tokenizer, ids, *, seq_len, batch_size, targets=None, contrastive=False,
                 shuffle=False, seed=0, drop_remainder=False):
    """Batches for the two-tower similarity trainer: features `a_*` (texts) and `b_*`
    (text_pairs), each side encoded alone; target the score (regression) or, contrastive,
    the index of each row's positive (its own row)."""
    columns = {"a": tf.constant(examples.texts, tf.string), "b": tf.constant(examples.text_pairs, tf.string)}
    if targets is not None and not contrastive:
        columns["target"] = tf.constant(np.asarray(targets, np.float32))
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    dataset = _shuffled(dataset, len(examples.texts), shuffle, seed)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def encode(batch):
        features = {}
        for side in ("a", "b"):
            tokens, segments = text_rows(tokenizer, ids, batch[side], seq_len=seq_len)
            for name, value in to_dense(tokens, segments, ids, bucket_length(tokens, seq_len)).items():
                features[f"{side}_{name}"] = value
        if contrastive:
            return features, tf.range(tf.shape(batch["a"])[0])
        return (features, batch["target"]) if "target" in batch else features

    return dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

"""Export a run directory as a SavedModel that TensorFlow Serving loads and serves.

```
BASE_DIR/<version>/saved_model.pb                         tag "serve", three signatures
BASE_DIR/<version>/variables/                             the weights
BASE_DIR/<version>/assets.extra/tf_serving_warmup_requests  one PredictionLog per signature
```

Signatures (method `tensorflow/serving/predict`, every output dense and named):

| name | inputs | outputs |
|---|---|---|
| `serving_default` | `token_ids`, `segment_ids`, `document_ids` [B, S] int32, `mask_positions` [B, M] int32 | `top_k_ids` [B, M, K] int32, `top_k_scores` [B, M, K] float32 |
| `fill_mask` | `text` [B] string | `top_k_tokens` [B, M, K] string, `top_k_ids`, `top_k_scores`, `mask_positions` [B, M] int32, `mask_count` [B] int32, `valid` [B, M] bool |
| `encode` | `text` [B] string | `pooled_embedding`, `cls_embedding` [B, H] float32 |

S (`seq_len`), M (`max_masks`) and K (`top_k`) are fixed at export time, so requests have
fixed shapes and TF Serving's request batching works. Special and reserved tokens
(`kmlm.pipelines.never_predicted`) are never predicted; scores are the softmax over the
remaining vocabulary, as `kmlm.FillMask` computes them. `pooled_embedding` is the mean over
real tokens as `kmlm.layers.SequencePooling` computes it (a row of padding only gives zeros).

A version is written under a temporary non-numeric name (TF Serving ignores it), audited,
given its warmup requests, and only then renamed to its number (`kmlm.serving.base`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from kmlm.layers import SequencePooling
from kmlm.pipelines import make_tokenizer, max_predictions_for, never_predicted, special_ids
from kmlm.serving.base import ExportModule, check_version_free

WARMUP_TEXT = "the [MASK] of a [MASK] ."


@dataclasses.dataclass
class Export:
    """What `export_run` wrote.

    Attributes:
        path: the version directory, `BASE_DIR/<version>`.
        version: the version number.
        seq_len: S, the fixed length of `serving_default` inputs and of tokenized text.
        max_masks: M, the [MASK] slots per text (and `mask_positions` width).
        top_k: K, the predictions per slot.
        ops: the audit's op types per signature, sorted.
    """

    path: str
    version: int
    seq_len: int
    max_masks: int
    top_k: int
    ops: dict


class ServingModule(ExportModule):
    """The exported masked LM: its three signatures over the model, each a plain
    `tf.function` (no XLA) that calls the Keras model in inference mode.

    Args:
        model: a `MaskedLMModel` (its `.encoder` serves `encode`).
        vocabulary: the tokens in id order.
        lowercase: whether the tokenizer lowercases (as in training).
        seq_len: S.
        max_masks: M.
        top_k: K.
        masked_lm: False for a run without a trained MLM head: `serving_default` then takes
            the three id inputs and returns the embeddings, and there is no `fill_mask`.

    Example:
    >>> import kmlm
    >>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "the", "cat", "sat", "on"]
    >>> config = kmlm.ModelConfig.from_preset("tiny", vocabulary_size=len(vocabulary))
    >>> module = ServingModule(kmlm.build_mlm_model(config), vocabulary, lowercase=True, seq_len=16,
    ...                        max_masks=2, top_k=4)
    >>> path, version, ops = module.write_version("serving/demo")
    >>> served = tf.saved_model.load(path).signatures["fill_mask"](text=tf.constant(["the cat [MASK] on"]))
    >>> served["mask_count"].numpy().tolist(), sorted(served["top_k_tokens"].numpy()[0, 0].tolist())
    ([1], [b'cat', b'on', b'sat', b'the'])
    """

    def __init__(self, model, vocabulary, *, lowercase, seq_len, max_masks, top_k, masked_lm=True):
        vocabulary = list(vocabulary)
        super().__init__(model, make_tokenizer(vocabulary, lowercase=lowercase), special_ids(vocabulary), seq_len,
                         name="kmlm_serving")
        self._masked_lm = bool(masked_lm)
        self._vocabulary = vocabulary
        self._max_masks = int(max_masks)
        self._top_k = int(top_k)
        self._keras.pooling = SequencePooling("mean")
        self._never_predicted = np.where(never_predicted(vocabulary), -np.inf, 0.0).astype(np.float32)

        ids = tf.TensorSpec([None, self._seq_len], tf.int32)
        text = tf.TensorSpec([None], tf.string, name="text")
        if self._masked_lm:
            mask_positions = tf.TensorSpec([None, self._max_masks], tf.int32)
            self.add_signature("serving_default", self._serving_default, ids, ids, ids, mask_positions)
            self.add_signature("fill_mask", self._fill_mask, text)
        else:  # a run without a trained MLM head serves embeddings only
            self.add_signature("serving_default", self._embed_ids, ids, ids, ids)
        self.add_signature("encode", self._encode, text)

    def warmup_requests(self):
        """One request per signature; the `serving_default` one is [CLS] [MASK] [SEP] with its
        [MASK] predicted."""
        ids = self.id_request([self._ids.cls, self._ids.mask, self._ids.sep])
        text = {"text": np.array([WARMUP_TEXT], object)}
        if not self._masked_lm:
            return [("serving_default", ids), ("encode", text)]
        mask_positions = np.zeros([1, self._max_masks], np.int32)
        mask_positions[0, 0] = 1
        return [("serving_default", {**ids, "mask_positions": mask_positions}), ("fill_mask", text),
                ("encode", text)]

    def _predict_top_k(self, features):
        logits = self._keras.model(features, training=False)
        scores = tf.nn.softmax(tf.cast(logits, tf.float32) + self._never_predicted, axis=-1)
        return tf.math.top_k(scores, k=self._top_k, sorted=True)

    def _serving_default(self, token_ids, segment_ids, document_ids, mask_positions):
        best = self._predict_top_k(
            {"token_ids": token_ids, "segment_ids": segment_ids, "document_ids": document_ids,
             "mask_positions": mask_positions}
        )
        return {"top_k_ids": best.indices, "top_k_scores": best.values}

    def _tokenize(self, text, truncate):
        """Tokenizes raw strings to [CLS] pieces [SEP]: token and document ids [B, width], width =
        the longest row rounded up to a multiple of 16, at most S."""
        pieces = self._keras.tokenizer.tokenize(tf.reshape(text, [-1]))
        if truncate:
            pieces = pieces[:, : self._seq_len - 2]
        else:
            tf.debugging.assert_less_equal(
                pieces.row_lengths() + 2,
                tf.cast(self._seq_len, pieces.row_splits.dtype),
                message=f"a text is longer than the seq_len={self._seq_len} tokens of this export "
                "([CLS] and [SEP] included); shorten it or export with a larger --seq-len",
            )
        rows = tf.shape(text)[0]
        cls = tf.fill([rows, 1], self._ids.cls)
        sep = tf.fill([rows, 1], self._ids.sep)
        ragged = tf.concat([cls, tf.cast(pieces, tf.int32), sep], axis=1)
        # Pad to the longest text of the request rounded up to 16, not to S: a short request
        # costs a short forward pass (outputs do not depend on the padding, which attention
        # never sees), and few distinct shapes reach the kernels.
        token_ids = ragged.to_tensor(default_value=self._ids.pad)
        longest = tf.shape(token_ids)[1]
        width = tf.minimum((longest + 15) // 16 * 16, self._seq_len)
        token_ids = tf.pad(token_ids, [[0, 0], [0, width - longest]], constant_values=self._ids.pad)
        lengths = tf.cast(ragged.row_lengths(), tf.int32)
        document_ids = tf.cast(tf.sequence_mask(lengths, width), tf.int32)
        return token_ids, document_ids

    def _fill_mask(self, text):
        token_ids, document_ids = self._tokenize(text, truncate=False)
        is_mask = tf.equal(token_ids, self._ids.mask)
        mask_count = tf.reduce_sum(tf.cast(is_mask, tf.int32), axis=1)
        tf.debugging.assert_less_equal(
            mask_count,
            self._max_masks,
            message=f"a text has more [MASK] tokens than the max_masks={self._max_masks} of this export; "
            "split it or export with a larger --max-masks",
        )
        # Positions of the [MASK] tokens, left-aligned in M slots; empty slots point at 0.
        columns = tf.broadcast_to(tf.range(tf.shape(token_ids)[1]), tf.shape(token_ids))
        positions = tf.ragged.boolean_mask(columns, is_mask)
        mask_positions = positions.to_tensor(default_value=0, shape=[None, self._max_masks])
        valid = tf.sequence_mask(mask_count, self._max_masks)
        best = self._predict_top_k(
            {"token_ids": token_ids, "segment_ids": tf.zeros_like(token_ids), "document_ids": document_ids,
             "mask_positions": mask_positions}
        )
        slot_valid = valid[:, :, tf.newaxis]
        top_k_ids = tf.where(slot_valid, best.indices, -1)
        top_k_scores = tf.where(slot_valid, best.values, 0.0)
        tokens = tf.gather(tf.constant(self._vocabulary), best.indices)
        top_k_tokens = tf.where(slot_valid, tokens, "")
        return {
            "top_k_tokens": top_k_tokens,
            "top_k_ids": top_k_ids,
            "top_k_scores": top_k_scores,
            "mask_positions": tf.where(valid, mask_positions, -1),
            "mask_count": mask_count,
            "valid": valid,
        }

    def _encode(self, text):
        token_ids, document_ids = self._tokenize(text, truncate=True)
        return self._embed_ids(token_ids, tf.zeros_like(token_ids), document_ids)

    def _embed_ids(self, token_ids, segment_ids, document_ids):
        sequence = self._keras.model.encoder(
            {"token_ids": token_ids, "segment_ids": segment_ids, "document_ids": document_ids},
            training=False,
        )
        sequence = tf.cast(sequence, tf.float32)
        # The layer's guarded mean: a row of padding only pools to zeros, not 0 / 0.
        pooled = self._keras.pooling(sequence, document_ids)
        return {"pooled_embedding": pooled, "cls_embedding": sequence[:, 0, :]}


def export_run(run_dir, base_dir, version=None, seq_len=None, top_k=5, max_masks=None, model_name=None):
    """Exports a run directory as a TensorFlow Serving SavedModel version.

    Args:
        run_dir: a directory written by `kmlm pretrain` (or a loaded `Run`).
        base_dir: the model's base directory, which holds one subdirectory per version.
        version: the version number (default: one more than the highest present, or 1).
        seq_len: S, the fixed sequence length (default: the run's training seq_len).
        top_k: K, predictions per [MASK].
        max_masks: M, [MASK] slots per text (default: the training P for this S).
        model_name: the name the warmup requests address (default: base_dir's name).

    Returns:
        An `Export`.

    Raises:
        ValueError: on a bad setting, an existing version, or a failed op audit.

    Example (needs the run directory of `kmlm pretrain --out runs/demo`, so tests skip it):
    >>> export_run("runs/demo", "serving/demo").path  # doctest: +SKIP
    'serving/demo/1'
    """
    from kmlm.run_directory import Run, load_run

    check_version_free(base_dir, version)
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    config = run.model_config
    seq_len = int(seq_len or run.config.data.seq_len)
    if not 3 <= seq_len <= config.max_position:
        raise ValueError(
            f"seq_len={seq_len} is outside [3, {config.max_position}]: the model's max_position is "
            f"{config.max_position}; export with --seq-len <= {config.max_position}"
        )
    predictable = int((~never_predicted(run.vocabulary)).sum())
    if not 1 <= int(top_k) <= predictable:
        raise ValueError(f"top_k={top_k} must be in [1, {predictable}] (the vocabulary's non-special tokens)")
    if max_masks is None:
        max_masks = max_predictions_for(seq_len, run.config.data.mask_rate)
    if not 1 <= int(max_masks) <= seq_len - 2:
        raise ValueError(f"max_masks={max_masks} must be in [1, {seq_len - 2}] (seq_len - 2)")

    module = ServingModule(run.model, run.vocabulary, lowercase=run.config.data.lowercase,
                           seq_len=seq_len, max_masks=int(max_masks), top_k=int(top_k),
                           masked_lm=run.has_masked_lm_head)
    final, version, ops = module.write_version(base_dir, version, model_name)
    return Export(path=final, version=version, seq_len=seq_len, max_masks=int(max_masks), top_k=int(top_k), ops=ops)

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
fixed shapes and TF Serving's request batching works. Special tokens are never predicted;
scores are the softmax over the remaining vocabulary, as `kmlm.FillMask` computes them.

A version is written under a temporary non-numeric name (TF Serving ignores it), audited,
given its warmup requests, and only then renamed to its number.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import types
import uuid

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from kmlm.serving.audit import audit_saved_model
from kmlm.pipelines import SPECIAL_TOKENS, make_tokenizer, max_predictions_for, special_ids
from kmlm.serving.client import grpc_predict_request

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
TEMP_PREFIX = ".kmlm-export-"
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


class ServingModule(tf.Module):
    """The exported object: the masked-LM model, the in-graph tokenizer and the three
    signature functions. Every function is a plain `tf.function` (no XLA) that calls the
    Keras model in inference mode.

    Args:
        model: a `MaskedLMModel` (its `.encoder` serves `encode`).
        vocabulary: the tokens in id order.
        lowercase: whether the tokenizer lowercases (as in training).
        seq_len: S.
        max_masks: M.
        top_k: K.
    """

    def __init__(self, model, vocabulary, *, lowercase, seq_len, max_masks, top_k, masked_lm=True):
        super().__init__(name="kmlm_serving")
        self._masked_lm = bool(masked_lm)
        # Track the model's tf.Variables themselves, not the Keras objects: a Keras variable
        # saves as a second copy that the TF1 session loader (TF Serving's) restores while the
        # graph reads the first, uninitialised one.
        self.model_variables = [weight.value for weight in model.weights]
        # A plain namespace is invisible to tracking, so neither Keras object is saved.
        self._keras = types.SimpleNamespace(model=model, tokenizer=make_tokenizer(vocabulary, lowercase=lowercase))
        self._vocabulary = list(vocabulary)
        self._ids = special_ids(self._vocabulary)
        self._seq_len = int(seq_len)
        self._max_masks = int(max_masks)
        self._top_k = int(top_k)
        never = np.zeros(len(vocabulary), np.float32)
        never[[i for i, token in enumerate(vocabulary) if token in SPECIAL_TOKENS]] = -np.inf
        self._never_predicted = never

        ids = tf.TensorSpec([None, self._seq_len], tf.int32)
        if self._masked_lm:
            self.serving_default = tf.function(
                self._serving_default,
                input_signature=[ids, ids, ids, tf.TensorSpec([None, self._max_masks], tf.int32)],
                jit_compile=False,
                autograph=False,
            )
        else:  # a run without a trained MLM head serves embeddings only
            self.serving_default = tf.function(
                self._embed_ids, input_signature=[ids, ids, ids], jit_compile=False, autograph=False
            )
        text = tf.TensorSpec([None], tf.string, name="text")
        if self._masked_lm:
            self.fill_mask = tf.function(self._fill_mask, input_signature=[text], jit_compile=False, autograph=False)
        self.encode = tf.function(self._encode, input_signature=[text], jit_compile=False, autograph=False)

    def signatures(self):
        """The concrete functions to save, by signature name."""
        signatures = {
            "serving_default": self.serving_default.get_concrete_function(),
            "encode": self.encode.get_concrete_function(),
        }
        if self._masked_lm:
            signatures["fill_mask"] = self.fill_mask.get_concrete_function()
        return signatures

    def warmup_requests(self):
        """One request per signature, as (signature name, {input name: array}) pairs; the
        `serving_default` one is [CLS] [MASK] [SEP] with its [MASK] predicted."""
        token_ids = np.full([1, self._seq_len], self._ids.pad, np.int32)
        token_ids[0, :3] = [self._ids.cls, self._ids.mask, self._ids.sep]
        document_ids = np.zeros([1, self._seq_len], np.int32)
        document_ids[0, :3] = 1
        mask_positions = np.zeros([1, self._max_masks], np.int32)
        mask_positions[0, 0] = 1
        ids = {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids), "document_ids": document_ids,
               "mask_positions": mask_positions}
        text = {"text": np.array([WARMUP_TEXT], object)}
        if not self._masked_lm:
            del ids["mask_positions"]
            return [("serving_default", ids), ("encode", text)]
        return [("serving_default", ids), ("fill_mask", text), ("encode", text)]

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
        weights = tf.cast(document_ids, tf.float32)[:, :, tf.newaxis]
        pooled = tf.reduce_sum(sequence * weights, axis=1) / tf.reduce_sum(weights, axis=1)
        return {"pooled_embedding": pooled, "cls_embedding": sequence[:, 0, :]}


def existing_versions(base_dir):
    """The version numbers present in `base_dir` (directories named by an integer)."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(
        int(name) for name in os.listdir(base_dir) if name.isdigit() and os.path.isdir(os.path.join(base_dir, name))
    )


def _remove_abandoned_exports(base_dir):
    """Removes temporary directories left by an export that was killed (its process is gone)."""
    for name in os.listdir(base_dir):
        if not name.startswith(TEMP_PREFIX):
            continue
        pid = name[len(TEMP_PREFIX):].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(os.path.join(base_dir, name), ignore_errors=True)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _version_exists_error(base_dir, version):
    present = existing_versions(base_dir)
    return ValueError(
        f"version {version} already exists in {base_dir!r}; versions are never overwritten: pass another "
        f"--version or leave it out to write version {max(present, default=0) + 1}"
    )


def write_warmup_requests(path, requests, model_name):
    """Writes `path/assets.extra/tf_serving_warmup_requests`: one PredictionLog per request.

    Args:
        path: the SavedModel directory.
        requests: (signature name, {input name: array}) pairs.
        model_name: the model name TF Serving serves the export under.
    """
    os.makedirs(os.path.join(path, WARMUP_DIR), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(path, WARMUP_DIR, WARMUP_FILE)) as writer:
        for signature, inputs in requests:
            request = grpc_predict_request(model_name, signature, inputs)
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def check_version_free(base_dir, version):
    """Refuses a bad or taken --version before any work is done."""
    if version is not None and (isinstance(version, bool) or int(version) < 1):
        raise ValueError(f"version={version!r} must be a positive integer")
    if version is not None and os.path.exists(os.path.join(base_dir, str(int(version)))):
        raise _version_exists_error(base_dir, int(version))


def write_version(module, base_dir, version=None, model_name=None):
    """Saves a serving module as version `version` of `base_dir`: written under a temporary
    name, op-audited, given its warmup requests, then renamed into place.

    Args:
        module: a `tf.Module` with `signatures()` and `warmup_requests()`.
        base_dir: the model's base directory.
        version: the version number (default: one more than the highest present, or 1).
        model_name: the name the warmup requests address (default: base_dir's name).

    Returns:
        (version directory, version number, the audit's op types per signature).
    """
    if os.path.exists(base_dir) and not os.path.isdir(base_dir):
        raise NotADirectoryError(f"--out {base_dir!r} is a file; pass a directory to hold the versions")
    os.makedirs(base_dir, exist_ok=True)
    _remove_abandoned_exports(base_dir)
    version = int(version) if version is not None else max(existing_versions(base_dir), default=0) + 1
    final = os.path.join(base_dir, str(version))
    if os.path.exists(final):
        raise _version_exists_error(base_dir, version)
    temp = os.path.join(base_dir, f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tf.saved_model.save(module, temp, signatures=module.signatures())
        ops = audit_saved_model(temp)
        write_warmup_requests(temp, module.warmup_requests(),
                              model_name or os.path.basename(os.path.normpath(os.path.abspath(base_dir))))
        if os.path.exists(final):  # another export took this number meanwhile
            raise _version_exists_error(base_dir, version)
        os.rename(temp, final)
    finally:
        if os.path.exists(temp):
            shutil.rmtree(temp, ignore_errors=True)
    return final, version, ops


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

    Example:
    >>> export_run("runs/demo", "serving/demo").path
    'serving/demo/1'
    """
    from kmlm.run_directory import Run, load_run

    check_version_free(base_dir, version)
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    config = run.model_config
    seq_len = int(seq_len or run.data.get("seq_len", 128))
    if not 3 <= seq_len <= config.max_position:
        raise ValueError(
            f"seq_len={seq_len} is outside [3, {config.max_position}]: the model's max_position is "
            f"{config.max_position}; export with --seq-len <= {config.max_position}"
        )
    predictable = sum(token not in SPECIAL_TOKENS for token in run.vocabulary)
    if not 1 <= int(top_k) <= predictable:
        raise ValueError(f"top_k={top_k} must be in [1, {predictable}] (the vocabulary's non-special tokens)")
    if max_masks is None:
        max_masks = max_predictions_for(seq_len, run.data.get("mask_rate", 0.15))
    if not 1 <= int(max_masks) <= seq_len - 2:
        raise ValueError(f"max_masks={max_masks} must be in [1, {seq_len - 2}] (seq_len - 2)")

    module = ServingModule(run.model, run.vocabulary, lowercase=run.data.get("lowercase", True),
                           seq_len=seq_len, max_masks=int(max_masks), top_k=int(top_k),
                           masked_lm=run.has_masked_lm_head)
    final, version, ops = write_version(module, base_dir, version, model_name)
    return Export(path=final, version=version, seq_len=seq_len, max_masks=int(max_masks), top_k=int(top_k), ops=ops)

"""Export a fine-tuned task model for TensorFlow Serving (the layout, version handling, op
audit and warmup requests of every export: `kmlm.serving.base`).

Signatures (all plain `tf.function`s, every output dense):

| task | `serving_default` (ids [B, S] int32) | `predict` (raw text) |
|---|---|---|
| classify | `scores` [B, C], `label_id` [B] | `text` [B] -> `label` [B] string, `label_id`, `score` [B], `scores` [B, C] |
| pair | same | `text`, `text_pair` [B] -> same |
| tag | `tag_ids` [B, S], `tag_scores` [B, S] | `text` [B] (words split on whitespace) -> `words`, `tags` [B, W] string, `tag_scores` [B, W], `word_count` [B] |
| similarity | `embedding` [B, H] | `text` [B] -> `embedding` [B, H]; signature `similarity`: `text`, `text_pair` -> `cosine` [B] |
| qa | `start_logits`, `end_logits` [B, S] | `question`, `context` [B] -> `answer` [B] string, `start`, `end` [B] int32 (character offsets in the context, end exclusive; -1 for no answer), `score` [B] |

W = S - 2 (a word needs at least one piece); padded words are "" with score 0. Words beyond
the row's capacity get tag "O". A qa context longer than one row is read in windows of S
tokens (`kmlm.tasks.qa`), as `kmlm predict` reads it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from kmlm.serving.base import ExportModule, check_version_free
from kmlm.tasks.encoding import text_rows, to_dense, word_rows
from kmlm.tasks.finetune import Tasker
from kmlm.tasks.qa import WindowSettings, best_spans, dense_windows, qa_windows

WARMUP_TEXTS = ("the first example text", "a second one")
WARMUP_QUESTIONS = ("what is the example?", "which one?")


@dataclasses.dataclass
class TaskExport:
    """What `export_task` wrote: the version directory, its number, S, the audit's ops."""

    path: str
    version: int
    seq_len: int
    ops: dict


class TaskServingModule(ExportModule):
    """The exported object of a fine-tuned model: the signature functions of its task.

    Args:
        tasker: a loaded `Tasker`.
        seq_len: S.

    Example (needs the output of `kmlm finetune --out runs/sentiment`, so tests skip it):
    >>> module = TaskServingModule(Tasker.load("runs/sentiment"), seq_len=64)  # doctest: +SKIP
    >>> sorted(module.signatures())  # doctest: +SKIP
    ['predict', 'serving_default']
    """

    def __init__(self, tasker, seq_len):
        super().__init__(tasker.model, tasker.tokenizer, tasker.ids, seq_len, name="kmlm_task_serving")
        self._info = tasker.info
        self._labels = list(tasker.info.labels)
        self._max_words = self._seq_len - 2
        ids = tf.TensorSpec([None, self._seq_len], tf.int32)
        text = tf.TensorSpec([None], tf.string, name="text")
        pair = tf.TensorSpec([None], tf.string, name="text_pair")
        self.add_signature("serving_default", self._serving_default, ids, ids, ids)
        task = tasker.info.task
        if task == "qa":
            info = tasker.info
            self._windows = WindowSettings(seq_len=self._seq_len, doc_stride=info.doc_stride,
                                           max_query_length=min(info.max_query_length, self._seq_len - 4))
            self.add_signature("predict", self._predict_answer, tf.TensorSpec([None], tf.string, name="question"),
                               tf.TensorSpec([None], tf.string, name="context"))
        elif task == "pair":
            self.add_signature("predict", self._predict_pair, text, pair)
        elif task == "classify":
            self.add_signature("predict", self._predict_text, text)
        elif task == "tag":
            self.add_signature("predict", self._predict_tags, text)
        else:
            self.add_signature("predict", self._predict_embedding, text)
            self.add_signature("similarity", self._similarity, text, pair)

    def warmup_requests(self):
        """One request per signature; the `serving_default` one is [CLS] [SEP]."""
        requests = [("serving_default", self.id_request([self._ids.cls, self._ids.sep]))]
        texts = np.array(WARMUP_TEXTS, object)
        two = {"text": texts, "text_pair": texts[::-1].copy()}
        if self._info.task == "qa":
            requests.append(("predict", {"question": np.array(WARMUP_QUESTIONS, object), "context": texts}))
        else:
            requests.append(("predict", two if self._info.task == "pair" else {"text": texts}))
        if self._info.task == "similarity":
            requests.append(("similarity", two))
        return requests

    def _model(self, features):
        return self._keras.model(features, training=False)

    def _classify(self, logits):
        scores = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        label_id = tf.argmax(scores, axis=-1, output_type=tf.int32)
        return scores, label_id

    def _serving_default(self, token_ids, segment_ids, document_ids):
        outputs = self._model({"token_ids": token_ids, "segment_ids": segment_ids, "document_ids": document_ids})
        if self._info.task in ("classify", "pair"):
            scores, label_id = self._classify(outputs)
            return {"scores": scores, "label_id": label_id}
        if self._info.task == "qa":
            return {"start_logits": outputs["start_logits"], "end_logits": outputs["end_logits"]}
        if self._info.task == "tag":
            scores = tf.nn.softmax(tf.cast(outputs, tf.float32), axis=-1)
            return {"tag_ids": tf.argmax(scores, axis=-1, output_type=tf.int32), "tag_scores": tf.reduce_max(scores, -1)}
        return {"embedding": tf.cast(outputs, tf.float32)}

    def _label_outputs(self, logits):
        scores, label_id = self._classify(logits)
        return {"label": tf.gather(tf.constant(self._labels), label_id), "label_id": label_id,
                "score": tf.reduce_max(scores, axis=-1), "scores": scores}

    def _encode_texts(self, text, text_pair=None):
        tokens, segments = text_rows(self._keras.tokenizer, self._ids, text, text_pair, seq_len=self._seq_len)
        return to_dense(tokens, segments, self._ids, self._seq_len)

    def _predict_text(self, text):
        return self._label_outputs(self._model(self._encode_texts(text)))

    def _predict_pair(self, text, text_pair):
        return self._label_outputs(self._model(self._encode_texts(text, text_pair)))

    def _predict_embedding(self, text):
        return {"embedding": tf.cast(self._model(self._encode_texts(text)), tf.float32)}

    def _similarity(self, text, text_pair):
        a = tf.math.l2_normalize(tf.cast(self._model(self._encode_texts(text)), tf.float32), axis=-1)
        b = tf.math.l2_normalize(tf.cast(self._model(self._encode_texts(text_pair)), tf.float32), axis=-1)
        return {"cosine": tf.reduce_sum(a * b, axis=-1)}

    def _predict_answer(self, question, context):
        windows = qa_windows(self._keras.tokenizer, self._ids, question, context, self._windows)
        features, starts, ends = dense_windows(windows, self._ids, self._seq_len)
        logits = self._model(features)
        found = best_spans(context, logits["start_logits"], logits["end_logits"], starts, ends, windows["example"],
                           max_answer_length=self._info.max_answer_length, null_threshold=self._info.null_threshold)
        return {name: found[name] for name in ("answer", "start", "end", "score")}

    def _predict_tags(self, text):
        words = tf.strings.split(text)[:, : self._max_words]
        tokens, positions = word_rows(self._keras.tokenizer, self._ids, words, seq_len=self._seq_len)
        features = to_dense(tokens, tf.zeros_like(tokens), self._ids, self._seq_len)
        scores = tf.nn.softmax(tf.cast(self._model(features), tf.float32), axis=-1)  # [B, S, T]
        best = tf.argmax(scores, axis=-1, output_type=tf.int32)
        best_score = tf.reduce_max(scores, axis=-1)
        word_count = tf.cast(words.row_lengths(), tf.int32)
        positions = tf.pad(positions, [[0, 0], [0, self._max_words - tf.shape(positions)[1]]], constant_values=-1)
        positions.set_shape([None, self._max_words])
        real = tf.sequence_mask(word_count, self._max_words)
        placed = positions >= 0
        at = tf.maximum(positions, 0)
        tag_ids = tf.gather(best, at, batch_dims=1)
        outside = self._labels.index("O") if "O" in self._labels else 0
        tag_ids = tf.where(placed, tag_ids, outside)
        tags = tf.where(real, tf.gather(tf.constant(self._labels), tag_ids), "")
        tag_scores = tf.where(real & placed, tf.gather(best_score, at, batch_dims=1), 0.0)
        padded_words = words.to_tensor(default_value="", shape=[None, self._max_words])
        return {"words": padded_words, "tags": tags, "tag_scores": tag_scores, "word_count": word_count}


def export_task(model_dir, base_dir, version=None, seq_len=None, model_name=None):
    """Exports a `kmlm finetune` output directory as a TensorFlow Serving version.

    Example (needs the output of `kmlm finetune --out runs/sentiment`, so tests skip it):
    >>> export_task("runs/sentiment", "serving/sentiment").path  # doctest: +SKIP
    'serving/sentiment/1'
    """
    check_version_free(base_dir, version)
    tasker = Tasker.load(model_dir)
    seq_len = int(seq_len or tasker.info.seq_len)
    if seq_len < 4:
        raise ValueError(f"seq_len={seq_len} is too short; use at least 4")
    module = TaskServingModule(tasker, seq_len)
    final, version, ops = module.write_version(base_dir, version, model_name)
    return TaskExport(path=final, version=version, seq_len=seq_len, ops=ops)

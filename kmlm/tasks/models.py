"""Task models on top of a pretrained `Encoder` (the same layers and weights, not a copy).

| builder | output |
|---|---|
| `build_classifier` | logits [B, C] from a tanh pooler on [CLS] (single texts and pairs) |
| `build_tagger` | logits [B, S, T] per token (the first piece of each word carries its tag) |
| `build_span_labeler` | `start_logits`, `end_logits` [B, S] of the answer span (question answering) |
| `build_sentence_encoder` | sentence vectors [B, H] (mean over real tokens, or [CLS]) |
| `build_similarity_trainer` | cosine of two sentence vectors [B], or in-batch scores [B, B] |

All take and return Keras functional models whose inputs are named `token_ids`,
`segment_ids`, `document_ids` (prefixed `a_`/`b_` for the two sides of a similarity pair).
"""

import keras
from keras import ops

from kmlm.layers import Pooler, SequencePooling
from kmlm.model import ENCODER_INPUTS, model_inputs


def _initializer(encoder):
    return keras.initializers.TruncatedNormal(stddev=encoder.config.initializer_range)


def build_classifier(encoder, num_classes, *, dropout=0.1, pooler_weights=None):
    """Sequence (or sequence-pair) classifier: [CLS] -> BERT pooler (`kmlm.layers.Pooler`,
    dense + tanh) -> dropout -> logits.

    Args:
        encoder: a kmlm `Encoder`; its weights are shared, so fine-tuning updates it.
        num_classes: C.
        dropout: dropout before the output layer.
        pooler_weights: optional (kernel [H, H], bias [H]) of a pretrained pooler
            (`Run.pooler_weights`).

    Example:
    >>> import numpy as np
    >>> from kmlm.config import ModelConfig
    >>> from kmlm.model import build_encoder
    >>> classifier = build_classifier(build_encoder(ModelConfig.from_preset("tiny", vocabulary_size=100)), 2)
    >>> ids = np.ones((3, 8), "int32")
    >>> tuple(classifier({"token_ids": ids, "segment_ids": 0 * ids, "document_ids": ids}).shape)
    (3, 2)
    """
    inputs = model_inputs(ENCODER_INPUTS)
    pooler = Pooler(initializer_range=encoder.config.initializer_range, name="pooler")
    pooled = pooler(encoder(inputs))
    if pooler_weights is not None:
        pooler.set_weights(list(pooler_weights))
    pooled = keras.layers.Dropout(dropout, name="dropout")(pooled)
    logits = keras.layers.Dense(num_classes, kernel_initializer=_initializer(encoder), dtype="float32",
                                name="logits")(pooled)
    return keras.Model(inputs, logits, name="classifier")


def build_tagger(encoder, num_tags, *, dropout=0.1):
    """Token classifier: every position's hidden state -> dropout -> tag logits [B, S, T]."""
    inputs = model_inputs(ENCODER_INPUTS)
    sequence = keras.layers.Dropout(dropout, name="dropout")(encoder(inputs))
    logits = keras.layers.Dense(num_tags, kernel_initializer=_initializer(encoder), dtype="float32",
                                name="tag_logits")(sequence)
    return keras.Model(inputs, logits, name="tagger")


@keras.saving.register_keras_serializable(package="kmlm")
class SpanLogits(keras.layers.Layer):
    """Splits per-token logits [B, S, 2] into start and end logits [B, S] each; padding
    (`document_ids` 0) gets a large negative logit, so it never wins and softmax ignores it."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, logits, document_ids):
        logits = ops.cast(logits, "float32")
        padding = ops.cast(ops.equal(document_ids, 0), "float32")[..., None] * -1e9
        logits = logits + padding
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}


def build_span_labeler(encoder, *, dropout=0.1):
    """Extractive question answering: every position's hidden state -> dropout -> Dense(2),
    the logits of the answer's start and end token; outputs `start_logits`, `end_logits`
    [B, S] (the windows and the answer search: `kmlm.tasks.qa`).

    Example:
    >>> import numpy as np
    >>> from kmlm.config import ModelConfig
    >>> from kmlm.model import build_encoder
    >>> labeler = build_span_labeler(build_encoder(ModelConfig.from_preset("tiny", vocabulary_size=100)))
    >>> ids = np.ones((3, 8), "int32")
    >>> {name: tuple(value.shape) for name, value in labeler({"token_ids": ids, "segment_ids": 0 * ids,
    ...                                                       "document_ids": ids}).items()}
    {'start_logits': (3, 8), 'end_logits': (3, 8)}
    """
    inputs = model_inputs(ENCODER_INPUTS)
    sequence = keras.layers.Dropout(dropout, name="dropout")(encoder(inputs))
    logits = keras.layers.Dense(2, kernel_initializer=_initializer(encoder), dtype="float32",
                                name="span_logits")(sequence)
    outputs = SpanLogits(name="span")(logits, inputs["document_ids"])
    return keras.Model(inputs, outputs, name="span_labeler")


def build_sentence_encoder(encoder, *, pooling="mean"):
    """Sentence vectors [B, H] float32: the mean of real tokens' hidden states (padding never
    counts) or the [CLS] hidden state."""
    inputs = model_inputs(ENCODER_INPUTS)
    vectors = SequencePooling(pooling, name="pooling")(encoder(inputs), inputs["document_ids"])
    return keras.Model(inputs, vectors, name="sentence_encoder")


class PairScores(keras.layers.Layer):
    """Cosine similarity of paired vectors [B], or with `in_batch=True` the scaled cosine of
    every a with every b [B, B] (row i's positive is column i, the others are negatives)."""

    def __init__(self, in_batch=False, scale=20.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.in_batch = bool(in_batch)
        self.scale = float(scale)

    def call(self, a, b):
        a = a / ops.maximum(ops.norm(a, axis=-1, keepdims=True), 1e-12)
        b = b / ops.maximum(ops.norm(b, axis=-1, keepdims=True), 1e-12)
        if self.in_batch:
            return self.scale * ops.matmul(a, ops.transpose(b))
        return ops.sum(a * b, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"in_batch": self.in_batch, "scale": self.scale})
        return config


def build_similarity_trainer(sentence_encoder, *, contrastive=False, scale=20.0):
    """Two-tower training model over one shared sentence encoder: inputs `a_*` and `b_*`;
    output the pair's cosine [B] (regress it on a score), or in-batch scores [B, B] for
    contrastive training with the other pairs of the batch as negatives."""
    a, b = model_inputs(ENCODER_INPUTS, prefix="a_"), model_inputs(ENCODER_INPUTS, prefix="b_")
    vector_a = sentence_encoder({name: a["a_" + name] for name in ENCODER_INPUTS})
    vector_b = sentence_encoder({name: b["b_" + name] for name in ENCODER_INPUTS})
    scores = PairScores(in_batch=contrastive, scale=scale, name="pair_scores")(vector_a, vector_b)
    return keras.Model({**a, **b}, scores, name="similarity_trainer")

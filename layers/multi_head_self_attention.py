"""Multi-head self-attention with a fused QKV projection and document masking."""

import math

import keras
from keras import ops

from kmlm.layers.hash_dropout import HashDropout
from kmlm.layers.initializers import truncated_normal
from kmlm.layers.projection import project


def document_attention_bias(document_ids, dtype="float32"):
    """Additive attention bias [B, 1, S, S] from `document_ids` [B, S].

    A query may attend to a key iff both carry the same non-zero document id; 0 marks
    padding. Blocked pairs get a large negative bias.
    """
    query_docs = ops.expand_dims(document_ids, 2)
    key_docs = ops.expand_dims(document_ids, 1)
    allowed = ops.logical_and(ops.equal(query_docs, key_docs), ops.not_equal(key_docs, 0))
    bias = ops.where(allowed, ops.zeros((), dtype), ops.full((), -1e9, dtype))
    return ops.expand_dims(bias, 1)


@keras.saving.register_keras_serializable(package="kmlm")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Self-attention over [B, S, H] whose keys are restricted to the query's document.

    Queries, keys and values come from one fused [H, 3H] projection (one matmul instead of
    three). Scores and softmax are computed in float32 under mixed precision.

    Args:
        num_heads: number of attention heads; must divide the input width.
        dropout: dropout on the attention probabilities.
        initializer_range: stddev of the truncated-normal kernel initializer.

    Call arguments:
        x: float tensor [B, S, H].
        document_ids: int tensor [B, S]; tokens attend only to tokens with the same
            non-zero id (0 = padding).
        attention_bias: optional precomputed additive bias [B, 1, S, S] (overrides
            `document_ids`); lets a stack of blocks share one bias.
        training: whether dropout is active.
        return_attention_scores: also return the attention probabilities.

    Returns:
        float tensor [B, S, H]; with `return_attention_scores`, the pair (output, float32
        probabilities [B, num_heads, S_query, S_key] before dropout; each row sums to 1).

    Example:
    >>> attn = MultiHeadSelfAttention(num_heads=2)
    >>> x = ops.ones((1, 4, 8))
    >>> tuple(attn(x, ops.convert_to_tensor([[1, 1, 2, 0]])).shape)
    (1, 4, 8)
    """

    def __init__(self, num_heads, dropout=0.1, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.initializer_range = float(initializer_range)

    def build(self, x_shape, document_ids_shape=None, attention_bias_shape=None):
        hidden_dim = x_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden size {hidden_dim} is not divisible by num_heads={self.num_heads}; "
                "choose a hidden size that is a multiple of the head count"
            )
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // self.num_heads
        self.qkv_kernel = self.add_weight(name="qkv_kernel", shape=(hidden_dim, 3 * hidden_dim),
                                          initializer=truncated_normal(self.initializer_range))
        self.qkv_bias = self.add_weight(name="qkv_bias", shape=(3 * hidden_dim,), initializer="zeros")
        self.output_kernel = self.add_weight(name="output_kernel", shape=(hidden_dim, hidden_dim),
                                             initializer=truncated_normal(self.initializer_range))
        self.output_bias = self.add_weight(name="output_bias", shape=(hidden_dim,), initializer="zeros")
        self.dropout_layer = HashDropout(self.dropout, dtype=self.dtype_policy, name="attention_dropout")
        self.built = True

    def call(self, x, document_ids=None, attention_bias=None, training=None, return_attention_scores=False):
        # Explicit casts: a nested layer's call can leave Keras' autocast scope float32.
        batch, seq_len = ops.shape(x)[0], ops.shape(x)[1]
        qkv = project(x, self.qkv_kernel, self.qkv_bias)
        qkv = ops.reshape(qkv, (batch, seq_len, 3, self.num_heads, self.head_dim))
        # unstack, not slicing: the gradient of a slice is a padded copy per slice (costly
        # without XLA), the gradient of unstack one stack.
        q, k, v = ops.unstack(qkv, 3, axis=2)
        q = q * ops.cast(1.0 / math.sqrt(self.head_dim), q.dtype)
        scores = ops.cast(ops.einsum("bqnd,bknd->bnqk", q, k), "float32")
        if attention_bias is None and document_ids is not None:
            attention_bias = document_attention_bias(document_ids)
        if attention_bias is not None:
            scores = scores + ops.cast(attention_bias, "float32")
        attention = ops.softmax(scores, axis=-1)
        probs = self.dropout_layer(ops.cast(attention, self.compute_dtype), training=training)
        context = ops.einsum("bnqk,bknd->bqnd", probs, v)
        context = ops.reshape(context, (batch, seq_len, self.hidden_dim))
        output = project(context, self.output_kernel, self.output_bias)
        return (output, attention) if return_attention_scores else output

    def compute_output_shape(self, x_shape, document_ids_shape=None, attention_bias_shape=None):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, dropout=self.dropout, initializer_range=self.initializer_range)
        return config

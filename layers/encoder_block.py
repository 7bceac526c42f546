"""Transformer encoder block: self-attention + feed-forward with residuals and LayerNorm."""

import keras
from keras import ops

from kmlm.layers.feed_forward import FeedForward
from kmlm.layers.hash_dropout import HashDropout
from kmlm.layers.multi_head_self_attention import MultiHeadSelfAttention


@keras.saving.register_keras_serializable(package="kmlm")
class EncoderBlock(keras.layers.Layer):
    """One encoder layer, post-LN as in BERT or pre-LN.

    post-LN: `x = LN(x + drop(attn(x))); x = LN(x + ffn(x))`.
    pre-LN:  `x = x + drop(attn(LN(x))); x = x + ffn(LN(x))` (the encoder then adds a final
    LayerNorm after the last block).

    Args:
        num_heads: attention heads.
        intermediate_dim: feed-forward inner width.
        dropout: dropout on the residual branches.
        attention_dropout: dropout on the attention probabilities.
        activation: feed-forward activation ("gelu", "gelu_tanh", "relu").
        gated_ffn: GEGLU feed-forward.
        norm_first: pre-LN instead of post-LN.
        layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal kernel initializer.

    Call arguments:
        x: float tensor [B, S, H].
        document_ids: int tensor [B, S] (0 = padding), used for the attention bias.
        attention_bias: optional precomputed bias [B, 1, S, S].
        training: whether dropout is active.
        return_attention_scores: also return the attention probabilities.

    Returns:
        float tensor [B, S, H]; with `return_attention_scores`, the pair (output, float32
        attention probabilities [B, num_heads, S, S]).

    Example:
    >>> block = EncoderBlock(num_heads=2, intermediate_dim=32)
    >>> tuple(block(ops.ones((1, 4, 8)), ops.ones((1, 4), "int32")).shape)
    (1, 4, 8)
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        dropout=0.1,
        attention_dropout=0.1,
        activation="gelu",
        gated_ffn=False,
        norm_first=False,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.activation = activation
        self.gated_ffn = bool(gated_ffn)
        self.norm_first = bool(norm_first)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.initializer_range = float(initializer_range)

    def build(self, x_shape, document_ids_shape=None, attention_bias_shape=None):
        self.attention = MultiHeadSelfAttention(
            self.num_heads,
            dropout=self.attention_dropout,
            initializer_range=self.initializer_range,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.attention.build(x_shape)
        self.attention_dropout_layer = HashDropout(self.dropout, dtype=self.dtype_policy, name="attention_output_dropout")
        self.feed_forward = FeedForward(
            self.intermediate_dim,
            activation=self.activation,
            gated=self.gated_ffn,
            dropout=self.dropout,
            initializer_range=self.initializer_range,
            dtype=self.dtype_policy,
            name="feed_forward",
        )
        self.feed_forward.build(x_shape)
        # LayerNorm statistics stay float32 under mixed precision.
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype="float32", name="attention_norm"
        )
        self.attention_norm.build(x_shape)
        self.feed_forward_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype="float32", name="feed_forward_norm"
        )
        self.feed_forward_norm.build(x_shape)
        self.built = True

    def _norm(self, norm, x):
        return ops.cast(norm(x), self.compute_dtype)

    def call(self, x, document_ids=None, attention_bias=None, training=None, return_attention_scores=False):
        attention_input = self._norm(self.attention_norm, x) if self.norm_first else x
        h, probs = self.attention(attention_input, document_ids, attention_bias, training=training,
                                  return_attention_scores=True)
        if self.norm_first:
            x = x + self.attention_dropout_layer(h, training=training)
            x = x + self.feed_forward(self._norm(self.feed_forward_norm, x), training=training)
        else:
            x = self._norm(self.attention_norm, x + self.attention_dropout_layer(h, training=training))
            x = self._norm(self.feed_forward_norm, x + self.feed_forward(x, training=training))
        return (x, probs) if return_attention_scores else x

    def compute_output_shape(self, x_shape, document_ids_shape=None, attention_bias_shape=None):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            activation=self.activation,
            gated_ffn=self.gated_ffn,
            norm_first=self.norm_first,
            layer_norm_epsilon=self.layer_norm_epsilon,
            initializer_range=self.initializer_range,
        )
        return config

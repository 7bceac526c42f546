"""Masked-language-model head evaluated only at the masked positions."""

import keras
from keras import ops

from kmlm.layers.feed_forward import ACTIVATIONS, apply_activation
from kmlm.layers.initializers import truncated_normal
from kmlm.layers.projection import project


@keras.saving.register_keras_serializable(package="kmlm")
class MaskedLMHead(keras.layers.Layer):
    """Gathers `mask_positions`, then dense + activation + LayerNorm + vocabulary projection.

    The projection is tied to a token embedding table when `token_embedding` is given (any
    layer with a `token_embeddings` variable of shape [V, H], e.g. `InputEmbedding`), plus a
    learned per-token bias. Only the [B, P] masked positions are projected onto the
    vocabulary, never all [B, S]. Logits are returned in float32.

    The tied layer is a constructor argument and is not part of `get_config()`; a model that
    ties weights rebuilds the head with its own embedding (see `kmlm.MaskedLMModel`).
    Without `token_embedding` the head owns an untied [H, V] kernel.

    Args:
        vocabulary_size: number of output tokens.
        token_embedding: optional layer whose `token_embeddings` table is reused.
        activation: transform activation ("gelu", "gelu_tanh", "relu").
        layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal kernel initializer.

    Call arguments:
        sequence_output: float tensor [B, S, H].
        mask_positions: int tensor [B, P] of positions to predict.

    Returns:
        float32 logits [B, P, vocabulary_size].

    Example:
    >>> head = MaskedLMHead(vocabulary_size=50)
    >>> tuple(head(ops.ones((2, 8, 16)), ops.zeros((2, 3), "int32")).shape)
    (2, 3, 50)
    """

    def __init__(
        self,
        vocabulary_size,
        token_embedding=None,
        activation="gelu",
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.vocabulary_size = int(vocabulary_size)
        self.activation = activation
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.initializer_range = float(initializer_range)
        # Kept out of Keras' layer tracking: the table belongs to (and is saved with) the
        # embedding layer, the head only reads it.
        object.__setattr__(self, "_token_embedding", token_embedding)

    @property
    def token_embedding(self):
        return self._token_embedding

    def build(self, sequence_output_shape, mask_positions_shape=None):
        hidden_dim = sequence_output_shape[-1]
        width = getattr(self._token_embedding, "embedding_dim", hidden_dim)  # a factorized table is narrower
        self.transform_kernel = self.add_weight(name="transform_kernel", shape=(hidden_dim, width),
                                                initializer=truncated_normal(self.initializer_range))
        self.transform_bias = self.add_weight(name="transform_bias", shape=(width,), initializer="zeros")
        self.norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype="float32", name="norm")
        self.norm.build((None, None, width))
        self.output_kernel = None
        if self._token_embedding is None:
            self.output_kernel = self.add_weight(
                name="output_kernel", shape=(hidden_dim, self.vocabulary_size),
                initializer=truncated_normal(self.initializer_range),
            )
        self.output_bias = self.add_weight(name="output_bias", shape=(self.vocabulary_size,), initializer="zeros")
        self.built = True

    def call(self, sequence_output, mask_positions):
        gathered = ops.take_along_axis(sequence_output, ops.expand_dims(mask_positions, -1), axis=1)
        h = apply_activation(project(gathered, self.transform_kernel, self.transform_bias), self.activation)
        h = ops.cast(self.norm(h), self.compute_dtype)
        if self._token_embedding is not None:
            logits = project(h, self._token_embedding.token_embeddings, transpose_kernel=True)
        else:
            logits = project(h, self.output_kernel)
        return ops.cast(logits, "float32") + ops.cast(self.output_bias, "float32")

    def compute_output_shape(self, sequence_output_shape, mask_positions_shape):
        return tuple(mask_positions_shape) + (self.vocabulary_size,)

    def compute_output_spec(self, sequence_output, mask_positions):
        shape = tuple(mask_positions.shape) + (self.vocabulary_size,)
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            activation=self.activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
            initializer_range=self.initializer_range,
        )
        return config

"""BERT's pooler: the [CLS] hidden state through a dense layer and tanh."""

import keras
from keras import ops

from kmlm.layers.initializers import truncated_normal


@keras.saving.register_keras_serializable(package="kmlm")
class Pooler(keras.layers.Layer):
    """`tanh(sequence[:, 0] @ kernel + bias)`: the pooled output that BERT's next-sentence
    head (and classic BERT fine-tuning) reads.

    Args:
        initializer_range: stddev of the truncated-normal kernel initializer.

    Call arguments:
        sequence: float tensor [B, S, H].

    Returns:
        float tensor [B, H].

    Example:
    >>> tuple(Pooler()(ops.ones((2, 5, 8))).shape)
    (2, 8)
    """

    def __init__(self, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.initializer_range = float(initializer_range)

    def build(self, sequence_shape):
        hidden_dim = sequence_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(hidden_dim, hidden_dim),
                                      initializer=truncated_normal(self.initializer_range))
        self.bias = self.add_weight(name="bias", shape=(hidden_dim,), initializer="zeros")
        self.built = True

    def call(self, sequence):
        first = sequence[:, 0, :]
        return ops.tanh(ops.matmul(first, ops.cast(self.kernel, self.compute_dtype)) + ops.cast(self.bias, self.compute_dtype))

    def compute_output_shape(self, sequence_shape):
        return (sequence_shape[0], sequence_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(initializer_range=self.initializer_range)
        return config

"""Position-wise feed-forward network (GELU, optionally gated: GEGLU)."""

import keras
from keras import ops

from kmlm.layers.hash_dropout import HashDropout
from kmlm.layers.initializers import truncated_normal
from kmlm.layers.projection import project

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


def apply_activation(x, name):
    """Applies one of `ACTIVATIONS` (exact-erf GELU as in BERT, tanh-approximate GELU, ReLU)."""
    if name == "gelu":
        return ops.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return ops.gelu(x, approximate=True)
    if name == "relu":
        return ops.relu(x)
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


@keras.saving.register_keras_serializable(package="kmlm")
class FeedForward(keras.layers.Layer):
    """Dense(intermediate) -> activation -> Dense(hidden) -> dropout.

    With `gated=True` the first projection is twice as wide and its halves are combined as
    `act(a) * b` (GEGLU when the activation is GELU).

    Args:
        intermediate_dim: inner width.
        activation: "gelu" (exact), "gelu_tanh" or "relu".
        gated: use the gated (GEGLU) form.
        dropout: dropout on the output.
        initializer_range: stddev of the truncated-normal kernel initializer.

    Call arguments:
        x: float tensor [..., H].
        training: whether dropout is active.

    Returns:
        float tensor [..., H].

    Example:
    >>> tuple(FeedForward(intermediate_dim=32)(ops.ones((2, 3, 8))).shape)
    (2, 3, 8)
    """

    def __init__(self, intermediate_dim, activation="gelu", gated=False, dropout=0.1, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.intermediate_dim = int(intermediate_dim)
        self.activation = activation
        self.gated = bool(gated)
        self.dropout = float(dropout)
        self.initializer_range = float(initializer_range)

    def build(self, x_shape):
        hidden_dim = x_shape[-1]
        width = self.intermediate_dim * (2 if self.gated else 1)
        self.inner_kernel = self.add_weight(name="inner_kernel", shape=(hidden_dim, width),
                                            initializer=truncated_normal(self.initializer_range))
        self.inner_bias = self.add_weight(name="inner_bias", shape=(width,), initializer="zeros")
        self.output_kernel = self.add_weight(name="output_kernel", shape=(self.intermediate_dim, hidden_dim),
                                             initializer=truncated_normal(self.initializer_range))
        self.output_bias = self.add_weight(name="output_bias", shape=(hidden_dim,), initializer="zeros")
        self.dropout_layer = HashDropout(self.dropout, dtype=self.dtype_policy, name="dropout")
        self.built = True

    def call(self, x, training=None):
        h = project(x, self.inner_kernel, self.inner_bias)
        if self.gated:
            a, b = ops.split(h, 2, axis=-1)
            h = apply_activation(a, self.activation) * b
        else:
            h = apply_activation(h, self.activation)
        out = project(h, self.output_kernel, self.output_bias)
        return self.dropout_layer(out, training=training)

    def compute_output_shape(self, x_shape):
        return tuple(x_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
            gated=self.gated,
            dropout=self.dropout,
            initializer_range=self.initializer_range,
        )
        return config

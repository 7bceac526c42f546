"""Pool a sequence of hidden states into one vector per row: masked mean or [CLS]."""

import keras
from keras import ops

POOLING_MODES = ("mean", "cls")


@keras.saving.register_keras_serializable(package="kmlm")
class SequencePooling(keras.layers.Layer):
    """Reduces [B, S, H] hidden states to [B, H] float32 sentence vectors.

    `mean` averages the hidden states of real tokens only (`document_ids > 0`), so extra
    padding never changes a vector; `cls` takes position 0. With `normalize=True` the
    vectors have unit L2 norm, so dot products are cosine similarities.

    Args:
        mode: "mean" or "cls".
        normalize: L2-normalise the pooled vectors.

    Call arguments:
        sequence: float tensor [B, S, H].
        document_ids: int tensor [B, S]; 0 marks padding.

    Returns:
        float32 tensor [B, H].

    Example:
    >>> pool = SequencePooling("mean")
    >>> tuple(pool(ops.ones((2, 3, 4)), ops.convert_to_tensor([[1, 1, 0], [1, 0, 0]])).shape)
    (2, 4)
    """

    def __init__(self, mode="mean", normalize=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ValueError(f"unknown pooling {mode!r}; choose one of {', '.join(POOLING_MODES)}")
        self.mode = mode
        self.normalize = bool(normalize)

    def call(self, sequence, document_ids):
        sequence = ops.cast(sequence, "float32")
        if self.mode == "cls":
            pooled = sequence[:, 0, :]
        else:
            weights = ops.cast(ops.greater(document_ids, 0), "float32")[:, :, None]
            pooled = ops.sum(sequence * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)
        if self.normalize:
            pooled = pooled / ops.maximum(ops.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled

    def compute_output_shape(self, sequence_shape, document_ids_shape=None):
        return (sequence_shape[0], sequence_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "normalize": self.normalize})
        return config

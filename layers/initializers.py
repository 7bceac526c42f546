"""`truncated_normal`: the weight initializer of the kmlm layers, one instance per weight."""

import keras


def truncated_normal(stddev):
    """A new `TruncatedNormal(stddev)` initializer with its own seed.

    Keras 3 fixes an unseeded initializer's seed when the initializer is made, so a single
    instance gives every weight it initializes the same random stream: weights of one layer
    built from one instance start as copies of each other (a feed-forward block's output
    kernel is then its inner kernel reshaped, the first position embeddings equal the first
    token embeddings). Call this once per weight.

    Example:
    >>> import numpy as np
    >>> a, b = truncated_normal(0.02)((4, 8)), truncated_normal(0.02)((4, 8))
    >>> bool(np.allclose(a, b))
    False
    """
    return keras.initializers.TruncatedNormal(stddev=stddev)

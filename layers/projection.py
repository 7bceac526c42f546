"""`project`: x[..., K] @ kernel[K, N] + bias as one two-dimensional matmul."""

import tensorflow as tf


def project(x, kernel, bias=None, transpose_kernel=False):
    """Applies a dense projection to the last axis of `x` as one [rows, K] x [K, N] GEMM.

    A rank-3 input times a rank-2 kernel is otherwise a broadcasting batched matmul, whose
    kernel gradient XLA computes batch by batch and then sums; flattening the leading axes
    gives one GEMM forward and one per gradient. The bias goes through `BiasAdd`, whose
    gradient is a single column reduction. `kernel` and `bias` are cast to `x.dtype`.

    Args:
        x: float tensor [..., K].
        kernel: [K, N] (or [N, K] with `transpose_kernel=True`, e.g. a tied embedding table).
        bias: optional [N].
        transpose_kernel: multiply by the transpose of `kernel`.

    Returns:
        float tensor [..., N] of `x.dtype`.

    Example:
    >>> tuple(project(tf.ones((2, 3, 4)), tf.ones((4, 5)), tf.zeros((5,))).shape)
    (2, 3, 5)
    """
    kernel = tf.cast(kernel, x.dtype)
    width = kernel.shape[0 if transpose_kernel else 1]
    rows = tf.reshape(x, (-1, tf.shape(x)[-1]))
    out = tf.matmul(rows, kernel, transpose_b=transpose_kernel)
    if bias is not None:
        out = tf.nn.bias_add(out, tf.cast(bias, x.dtype))
    leading = [size if size is not None else tf.shape(x)[axis] for axis, size in enumerate(x.shape[:-1])]
    return tf.reshape(out, leading + [width])

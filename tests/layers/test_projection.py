import numpy as np
import tensorflow as tf

from kmlm.layers.projection import project


def test_matches_numpy_for_rank_2_3_4():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(6, 5)).astype("float32")
    bias = rng.normal(size=(5,)).astype("float32")
    for shape in [(4, 6), (2, 3, 6), (2, 2, 3, 6)]:
        x = rng.normal(size=shape).astype("float32")
        actual = project(tf.constant(x), kernel, bias).numpy()
        np.testing.assert_allclose(actual, x @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_transposed_kernel_and_no_bias():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(9, 4)).astype("float32")  # [V, H], as a tied embedding table
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    actual = project(tf.constant(x), table, transpose_kernel=True).numpy()
    np.testing.assert_allclose(actual, x @ table.T, rtol=1e-5, atol=1e-5)


def test_unknown_leading_dims_keep_static_width_and_gradients():
    kernel = tf.Variable(np.ones((3, 2), "float32"))

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.float32)])
    def run(x):
        with tf.GradientTape() as tape:
            y = project(x, kernel)
            total = tf.reduce_sum(y)
        assert y.shape.as_list() == [None, None, 2]
        return y, tape.gradient(total, kernel)

    x = np.arange(12, dtype="float32").reshape(2, 2, 3)
    y, grad = run(x)
    np.testing.assert_allclose(y.numpy(), x @ np.ones((3, 2)))
    # d sum(x @ W) / dW[k, n] = sum of x[..., k] over all rows
    np.testing.assert_allclose(grad.numpy(), np.repeat(x.reshape(-1, 3).sum(0)[:, None], 2, axis=1))


def test_casts_weights_to_input_dtype():
    y = project(tf.ones((2, 3), tf.float16), np.ones((3, 4), "float32"), np.ones((4,), "float32"))
    assert y.dtype == tf.float16
    np.testing.assert_array_equal(y.numpy(), np.full((2, 4), 4.0))

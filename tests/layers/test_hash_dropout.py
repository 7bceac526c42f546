import keras
import numpy as np
import pytest
import tensorflow as tf

from kmlm.layers import HashDropout
from kmlm.layers.hash_dropout import hash_keep_mask
from tests.helpers import assert_config_round_trip

M32 = 0xFFFFFFFF


def numpy_mix32(h):
    h = h.astype(np.uint64) & M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    h ^= h >> 16
    return h


def numpy_keep_mask(shape, rate, seed):
    """The keep rule written out independently, in 64-bit integers masked to 32 bits."""
    s0, s1 = (np.uint64(int(s) & M32) for s in seed)
    key = numpy_mix32(np.array([(int(s0) * 0x9E3779B1 + int(numpy_mix32(np.array([(int(s1) + 0x7F4A7C15) & M32]))[0])) & M32]))[0]
    index = np.arange(int(np.prod(shape)), dtype=np.uint64)
    bits = numpy_mix32((index * 0x9E3779B1 + key) & M32)
    return (bits >= round(rate * 2**32)).reshape(shape)


@pytest.mark.parametrize("seed", [(0, 0), (7, 3), (2**31 + 5, 12345)])
def test_mask_matches_independent_hash(seed):
    shape = (3, 5, 7)
    actual = hash_keep_mask(tf.constant(shape), 0.3, tf.constant(seed, tf.int64)).numpy()
    np.testing.assert_array_equal(actual, numpy_keep_mask(shape, 0.3, seed))


def test_xla_and_graph_give_the_same_mask():
    seed = tf.constant([11, 4], tf.int64)
    graph = tf.function(lambda: hash_keep_mask(tf.constant([64, 33]), 0.1, seed), jit_compile=False)()
    xla = tf.function(lambda: hash_keep_mask(tf.constant([64, 33]), 0.1, seed), jit_compile=True)()
    np.testing.assert_array_equal(graph.numpy(), xla.numpy())


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_drop_rate_and_scaling(rate):
    layer = HashDropout(rate, seed=1)
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=(200, 1000)).astype("float32")
    y = np.asarray(layer(x, training=True))
    dropped = y == 0
    n = dropped.size
    # binomial: within 5 standard deviations
    assert abs(dropped.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - rate), rtol=1e-6)


def test_masks_are_independent_across_calls_and_neighbours():
    rate = 0.3
    layer = HashDropout(rate, seed=5)
    x = np.ones((100, 1000), "float32")
    first = np.asarray(layer(x, training=True)) == 0
    second = np.asarray(layer(x, training=True)) == 0
    n = first.size
    tolerance = 5 * np.sqrt(rate**2 * (1 - rate**2) / n)
    assert not np.array_equal(first, second)
    assert abs((first & second).mean() - rate**2) < tolerance
    flat = first.reshape(-1)
    assert abs((flat[:-1] & flat[1:]).mean() - rate**2) < tolerance
    rows = first  # vertical neighbours are 1000 indices apart
    assert abs((rows[:-1] & rows[1:]).mean() - rate**2) < tolerance


def test_same_seed_same_mask_and_inference_is_identity():
    x = np.ones((8, 64), "float32")
    a = np.asarray(HashDropout(0.4, seed=9)(x, training=True))
    b = np.asarray(HashDropout(0.4, seed=9)(x, training=True))
    c = np.asarray(HashDropout(0.4, seed=10)(x, training=True))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.asarray(HashDropout(0.4)(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(HashDropout(0.0)(x, training=True)), x)


def test_gradient_is_the_scaled_mask():
    layer = HashDropout(0.25, seed=2)
    x = tf.Variable(np.random.default_rng(1).normal(size=(16, 32)).astype("float32"))
    state = keras.ops.convert_to_numpy(layer.seed_generator.state)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer(x, training=True))
    grad = tape.gradient(total, x).numpy()
    keep = numpy_keep_mask((16, 32), 0.25, state)
    np.testing.assert_allclose(grad, keep / 0.75, rtol=1e-6)


def test_mixed_precision_dtype():
    layer = HashDropout(0.5, seed=3, dtype="mixed_bfloat16")
    y = layer(tf.ones((4, 8), tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16
    assert set(np.unique(tf.cast(y, tf.float32).numpy())) <= {0.0, 2.0}


def test_config_round_trip():
    rebuilt = assert_config_round_trip(HashDropout(0.3, seed=4))
    assert isinstance(rebuilt, HashDropout) and rebuilt.rate == 0.3

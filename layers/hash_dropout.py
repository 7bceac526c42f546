"""Dropout whose keep mask is a hash of the element index and a per-call seed."""

import keras
import tensorflow as tf

_GOLDEN = 0x9E3779B1  # 2^32 / golden ratio: spreads consecutive indices over the hash input
_SEED_SALT = 0x7F4A7C15


def _mix32(h):
    """The murmur3 32-bit finaliser: every input bit flips each output bit with p ~ 1/2."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))
    h = h * tf.constant(0x85EBCA6B, tf.uint32)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(13, tf.uint32)))
    h = h * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)))


def hash_keep_mask(shape, rate, seed):
    """Boolean keep mask of `shape`: element i is kept iff mix(mix(seed) + i * golden) >= rate * 2^32.

    `seed` is an integer tensor of two values (a Keras `SeedGenerator` state); a new seed
    gives an independent mask. The threshold quantises `rate` to 2^-32.
    """
    seed = tf.cast(seed, tf.uint32)
    key = _mix32(seed[0] * tf.constant(_GOLDEN, tf.uint32) + _mix32(seed[1] + tf.constant(_SEED_SALT, tf.uint32)))
    index = tf.bitcast(tf.range(tf.reduce_prod(shape), dtype=tf.int32), tf.uint32)
    bits = _mix32(index * tf.constant(_GOLDEN, tf.uint32) + key)
    threshold = tf.constant(min(int(round(rate * 2**32)), 2**32 - 1), tf.uint32)
    return tf.reshape(bits >= threshold, shape)


@keras.saving.register_keras_serializable(package="kmlm")
class HashDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` with a counter-based keep mask: a hash of each element's index.

    Keras' dropout draws its mask from a Philox stream, which XLA on CPU evaluates at about
    70M numbers/s: a quarter of a BERT-mini training step. Here the mask is a few integer
    multiplies and shifts per element (murmur3's finaliser over the element index, keyed by
    the layer's seed generator), which XLA fuses into the multiply that applies it, so
    dropout costs almost nothing. Each call draws a fresh key, so masks differ from step to
    step; the same seed state gives the same mask. Arguments, config and the seed-generator
    variable are those of `keras.layers.Dropout` (with `noise_shape` it falls back to it).

    Args:
        rate: fraction of the inputs to drop, in [0, 1).
        noise_shape: as in `keras.layers.Dropout` (uses Keras' own mask when set).
        seed: seed of the layer's seed generator.

    Call arguments:
        inputs: float tensor of any shape.
        training: whether to drop.

    Returns:
        `inputs` with a `rate` share of elements zeroed and the rest scaled by 1/(1 - rate).

    Example:
    >>> layer = HashDropout(0.5, seed=1)
    >>> y = layer(keras.ops.ones((4, 1000)), training=True)
    >>> 0.45 < float(keras.ops.mean(keras.ops.cast(y == 0, "float32"))) < 0.55
    True
    """

    def call(self, inputs, training=False):
        if not training or self.rate <= 0 or self.noise_shape is not None:
            return super().call(inputs, training=training)
        keep = hash_keep_mask(tf.shape(inputs), self.rate, self.seed_generator.next())
        scale = tf.cast(1.0 / (1.0 - self.rate), inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros((), inputs.dtype))

import keras
import numpy as np

from kmlm.layers import Pooler
from tests.helpers import assert_config_round_trip, assert_save_load_identical, assert_symbolic_shape


def test_is_tanh_of_the_first_position_through_the_kernel():
    rng = np.random.default_rng(0)
    sequence = rng.normal(size=(3, 5, 4)).astype("float32")
    layer = Pooler(initializer_range=0.5)
    pooled = np.asarray(layer(sequence))
    kernel, bias = (w.numpy() for w in (layer.kernel, layer.bias))
    np.testing.assert_allclose(pooled, np.tanh(sequence[:, 0] @ kernel + bias), rtol=1e-5, atol=1e-6)
    later = sequence.copy()
    later[:, 1:] = 100.0  # only position 0 counts
    np.testing.assert_allclose(np.asarray(layer(later)), pooled, atol=1e-6)


def test_symbolic_shape_config_and_saving(tmp_path):
    assert_symbolic_shape(Pooler(), [(None, 7, 8)], (None, 8))
    assert assert_config_round_trip(Pooler(initializer_range=0.1)).initializer_range == 0.1
    inputs = keras.Input(shape=(6, 8))
    model = keras.Model(inputs, Pooler(name="pooler")(inputs))
    assert_save_load_identical(model, np.random.default_rng(1).normal(size=(2, 6, 8)).astype("float32"), tmp_path)

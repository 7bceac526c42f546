import numpy as np
import pytest

from kmlm.layers import FeedForward
from tests import reference
from tests.helpers import assert_config_round_trip, assert_symbolic_shape


@pytest.mark.parametrize("gated", [False, True])
def test_matches_numpy(gated):
    layer = FeedForward(intermediate_dim=10, gated=gated, dropout=0.0, initializer_range=0.5)
    x = np.random.default_rng(1).normal(size=(2, 3, 4)).astype("float32")
    actual = np.asarray(layer(x))
    w = reference.weights_of(layer)
    expected = reference.feed_forward(
        x.astype(np.float64), w["inner_kernel"], w["inner_bias"], w["output_kernel"], w["output_bias"], gated
    )
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert w["inner_kernel"].shape == (4, 20 if gated else 10)


def test_unknown_activation():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; choose one of gelu, gelu_tanh, relu"):
        FeedForward(8, activation="swish")


def test_config_round_trip_non_default():
    layer = FeedForward(intermediate_dim=7, activation="gelu_tanh", gated=True, dropout=0.2, initializer_range=0.1)
    rebuilt = assert_config_round_trip(layer)
    assert rebuilt.gated and rebuilt.activation == "gelu_tanh"


def test_symbolic_call():
    assert_symbolic_shape(FeedForward(16), [(None, 3, 4)], (None, 3, 4))

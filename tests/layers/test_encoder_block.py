import keras
import numpy as np
import pytest

from kmlm.layers import EncoderBlock
from tests import reference
from tests.helpers import assert_config_round_trip, assert_fit_step_under_xla, assert_symbolic_shape


def _expected(block, x, document_ids, norm_first):
    attn = reference.weights_of(block.attention)
    ffn = reference.weights_of(block.feed_forward)
    n1 = reference.weights_of(block.attention_norm)
    n2 = reference.weights_of(block.feed_forward_norm)

    def attention(h):
        return reference.self_attention(
            h, document_ids, attn["qkv_kernel"], attn["qkv_bias"], attn["output_kernel"], attn["output_bias"], 2
        )

    def feed_forward(h):
        return reference.feed_forward(h, ffn["inner_kernel"], ffn["inner_bias"], ffn["output_kernel"], ffn["output_bias"])

    def ln(h, w):
        return reference.layer_norm(h, w["gamma"], w["beta"], 1e-12)

    if norm_first:
        x = x + attention(ln(x, n1))
        return x + feed_forward(ln(x, n2))
    x = ln(x + attention(x), n1)
    return ln(x + feed_forward(x), n2)


@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_numpy_composition(norm_first):
    block = EncoderBlock(num_heads=2, intermediate_dim=16, dropout=0.0, attention_dropout=0.0,
                         norm_first=norm_first, initializer_range=0.3)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    document_ids = np.array([[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]], "int32")
    actual = np.asarray(block(x, document_ids))
    expected = _expected(block, x.astype(np.float64), document_ids, norm_first)
    real = document_ids != 0
    np.testing.assert_allclose(actual[real], expected[real], atol=1e-4)


def test_config_round_trip_non_default():
    block = EncoderBlock(
        num_heads=4, intermediate_dim=32, dropout=0.2, attention_dropout=0.3, activation="relu",
        gated_ffn=True, norm_first=True, layer_norm_epsilon=1e-5, initializer_range=0.1,
    )
    rebuilt = assert_config_round_trip(block)
    assert rebuilt.norm_first and rebuilt.gated_ffn and rebuilt.activation == "relu"


def test_symbolic_call_and_xla_fit_step():
    assert_symbolic_shape(EncoderBlock(2, 16), [(None, 5, 8), (None, 5)], (None, 5, 8), ["float32", "int32"])
    x_in = keras.Input((5, 8))
    ids_in = keras.Input((5,), dtype="int32")
    model = keras.Model([x_in, ids_in], EncoderBlock(2, 16)(x_in, ids_in))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 8)).astype("float32")
    assert_fit_step_under_xla(model, [x, np.ones((4, 5), "int32")], rng.normal(size=(4, 5, 8)).astype("float32"))

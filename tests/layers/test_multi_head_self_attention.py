import keras
import numpy as np
import pytest

from kmlm.layers import MultiHeadSelfAttention, document_attention_bias
from tests import reference
from tests.helpers import assert_config_round_trip, assert_symbolic_shape


def _layer_and_inputs(num_heads=2, hidden=8, seq_len=6, seed=0):
    rng = np.random.default_rng(seed)
    layer = MultiHeadSelfAttention(num_heads=num_heads, dropout=0.0, initializer_range=0.5)
    x = rng.normal(size=(2, seq_len, hidden)).astype("float32")
    document_ids = np.array([[1, 1, 2, 2, 2, 0], [1, 2, 3, 3, 0, 0]], "int32")[:, :seq_len]
    layer(x, document_ids)
    # Non-zero biases so that the test covers them.
    for w in layer.weights:
        if "bias" in w.name:
            w.assign(rng.normal(size=w.shape).astype("float32"))
    return layer, x, document_ids


def test_matches_numpy_reference_with_document_masking():
    layer, x, document_ids = _layer_and_inputs()
    w = reference.weights_of(layer)
    expected = reference.self_attention(
        x.astype(np.float64), document_ids, w["qkv_kernel"], w["qkv_bias"], w["output_kernel"], w["output_bias"], 2
    )
    actual = np.asarray(layer(x, document_ids))
    real = document_ids != 0
    np.testing.assert_allclose(actual[real], expected[real], atol=1e-4, rtol=1e-4)


def test_documents_do_not_see_each_other():
    layer, x, document_ids = _layer_and_inputs()
    changed = x.copy()
    changed[0, 2:5] += 5.0  # document 2 of row 0
    before = np.asarray(layer(x, document_ids))
    after = np.asarray(layer(changed, document_ids))
    np.testing.assert_allclose(before[0, :2], after[0, :2], atol=1e-5)  # document 1 unaffected
    assert not np.allclose(before[0, 2:5], after[0, 2:5])


def test_attention_bias_blocks_padding_and_other_documents():
    bias = np.asarray(document_attention_bias(np.array([[1, 1, 2, 0]], "int32")))[0, 0]
    allowed = bias == 0
    expected = np.array(
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], bool
    )
    np.testing.assert_array_equal(allowed, expected)


def test_hidden_not_divisible_by_heads_is_refused():
    layer = MultiHeadSelfAttention(num_heads=3)
    with pytest.raises(ValueError, match=r"hidden size 8 is not divisible by num_heads=3"):
        layer(np.zeros((1, 2, 8), "float32"), np.ones((1, 2), "int32"))


def test_config_round_trip_non_default():
    layer = MultiHeadSelfAttention(num_heads=4, dropout=0.25, initializer_range=0.05, name="attn")
    rebuilt = assert_config_round_trip(layer)
    assert (rebuilt.num_heads, rebuilt.dropout, rebuilt.initializer_range) == (4, 0.25, 0.05)


def test_symbolic_call():
    assert_symbolic_shape(
        MultiHeadSelfAttention(num_heads=2), [(None, 7, 8), (None, 7)], (None, 7, 8), ["float32", "int32"]
    )


def test_softmax_in_float32_under_mixed_precision():
    layer = MultiHeadSelfAttention(num_heads=2, dtype="mixed_float16")
    x = np.random.default_rng(0).normal(size=(1, 4, 8)).astype("float32")
    out = layer(x, np.ones((1, 4), "int32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert keras.backend.standardize_dtype(layer.qkv_kernel.dtype) == "float32"

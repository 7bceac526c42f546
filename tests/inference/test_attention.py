"""Attention maps: the probabilities `AttentionReader` returns against a NumPy computation of
softmax(QK^T / sqrt(d) + bias) from the layers' own weights, documents and padding, the
selection of layers and heads, and the heat-map picture."""

import keras
import numpy as np
import pytest

from kmlm.config import ModelConfig
from kmlm.inference.attention import AttentionMaps, AttentionReader, most_attended, plot_attention
from kmlm.model import build_mlm_model
from tests.tiny_run import VOCABULARY, tiny_model

TEXT = "the big cat sat on a red mat"


def numpy_attention(x, block, document_ids):
    """softmax(Q K^T / sqrt(d) + bias) [heads, S, S] of one row `x` [S, H] entering `block`,
    from its weights alone (LayerNorm first for a pre-LN block)."""
    if block.norm_first:
        gamma, beta = (np.asarray(w, np.float64) for w in block.attention_norm.get_weights())
        mean, variance = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        x = (x - mean) / np.sqrt(variance + block.layer_norm_epsilon) * gamma + beta
    kernel, bias = (np.asarray(w, np.float64) for w in (block.attention.qkv_kernel, block.attention.qkv_bias))
    heads = block.num_heads
    seq_len, hidden = x.shape
    size = hidden // heads
    q, k, _ = np.split(x @ kernel + bias, 3, axis=-1)
    q = q.reshape(seq_len, heads, size).transpose(1, 0, 2)
    k = k.reshape(seq_len, heads, size).transpose(1, 0, 2)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(size)
    ids = np.asarray(document_ids)
    allowed = (ids[:, None] == ids[None, :]) & (ids[None, :] != 0)
    scores = scores + np.where(allowed, 0.0, -1e9)[None]
    scores -= scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    return weights / weights.sum(-1, keepdims=True)


def block_inputs(encoder, features):
    """The hidden states [S, H] entering each block, from the encoder's ordinary forward graph
    (not the layer-by-layer path the reader uses)."""
    names = ["embedding"] + [f"block_{i}" for i in range(encoder.config.num_layers - 1)]
    probe = keras.Model(encoder.inputs, [encoder.get_layer(name).output for name in names])
    return [np.asarray(h, np.float64)[0] for h in probe(features)]


def pre_ln_model():
    keras.utils.set_random_seed(3)
    config = ModelConfig(vocabulary_size=len(VOCABULARY), hidden_dim=32, num_layers=2, num_heads=4,
                         intermediate_dim=64, max_position=64, dropout=0.0, attention_dropout=0.0,
                         initializer_range=0.5, norm_first=True)
    return build_mlm_model(config)


@pytest.mark.parametrize("make_model", [tiny_model, pre_ln_model], ids=["post-ln", "pre-ln"])
def test_probabilities_equal_a_numpy_softmax_of_the_layer_weights(make_model):
    model = make_model()
    reader = AttentionReader(model, VOCABULARY)
    maps = reader(TEXT, "the dog ran")
    token_ids, segment_ids = reader.features(TEXT, "the dog ran")
    features = {"token_ids": np.array([token_ids], "int32"), "segment_ids": np.array([segment_ids], "int32"),
                "document_ids": np.ones((1, len(token_ids)), "int32")}
    encoder = model.encoder
    expected = [numpy_attention(x, encoder.get_layer(f"block_{i}"), features["document_ids"][0])
                for i, x in enumerate(block_inputs(encoder, features))]
    assert maps.attention.shape == (2, 4, len(token_ids), len(token_ids))
    np.testing.assert_allclose(maps.attention, np.stack(expected), atol=2e-5)
    # Not a flat map: the check above would pass trivially for uniform rows.
    assert maps.attention.max() > 2.0 / len(token_ids)


def test_rows_sum_to_one_and_never_cross_documents_or_padding():
    encoder = tiny_model().encoder
    token_ids = np.array([[2, 7, 8, 9, 3, 2, 10, 11, 3, 0, 0]], "int32")
    documents = np.array([[1, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0]], "int32")
    _, attention = encoder.encode_with_attention(
        {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids), "document_ids": documents})
    ids = documents[0]
    real = ids != 0
    for probabilities in attention:
        p = np.asarray(probabilities)[0]  # [heads, S, S]
        np.testing.assert_allclose(p[:, real].sum(-1), 1.0, atol=1e-5)
        other_document = (ids[:, None] != ids[None, :]) | (ids[None, :] == 0)
        blocked = p[:, real][:, :, :] * other_document[real][None]
        assert np.max(blocked) == 0.0  # exp(-1e9) underflows: exactly 0, not merely small
        assert np.min(p[:, real][:, :, real][:, ~other_document[real][:, real]]) > 0.0


def test_tokens_segments_and_the_json_dict():
    reader = AttentionReader(tiny_model(), VOCABULARY)
    maps = reader("the big cats", "a dog ran")
    assert maps.tokens == ["[CLS]", "the", "big", "cat", "##s", "[SEP]", "a", "dog", "ran", "[SEP]"]
    assert maps.segment_ids == [0] * 6 + [1] * 4
    record = maps.to_dict(layer=1)
    assert [(m["layer"], m["head"]) for m in record["maps"]] == [(1, 0), (1, 1), (1, 2), (1, 3)]
    np.testing.assert_allclose(record["maps"][2]["weights"], maps.attention[1, 2], atol=1e-6)
    assert (record["num_layers"], record["num_heads"]) == (2, 4)


@pytest.mark.parametrize("layer, head, message", [
    (2, None, "--layer 2 is outside the model's 2 layers; use 0 to 1 (layers are numbered from 0)"),
    (-1, None, "--layer -1 is outside the model's 2 layers; use 0 to 1 (layers are numbered from 0)"),
    (None, 4, "--head 4 is outside the model's 4 heads; use 0 to 3 (heads are numbered from 0)"),
])
def test_a_layer_or_head_outside_the_model_is_one_line(layer, head, message):
    maps = AttentionMaps("x", None, ["[CLS]", "x", "[SEP]"], [0, 0, 0], np.full((2, 4, 3, 3), 1 / 3, np.float32))
    with pytest.raises(ValueError) as error:
        maps.select(layer, head)
    assert str(error.value) == message


def test_most_attended_is_the_largest_keys_in_order():
    rng = np.random.default_rng(0)
    matrix = rng.dirichlet(np.ones(6), size=6)
    tokens = [f"t{i}" for i in range(6)]
    for (query, keys), row, token in zip(most_attended(tokens, matrix, top=3), matrix, tokens):
        assert query == token
        assert [j for j, _, _ in keys] == list(np.argsort(-row)[:3])
        assert [p for _, _, p in keys] == pytest.approx(sorted(row, reverse=True)[:3])


def test_plot_attention_writes_a_labelled_png_for_english_and_chinese(tmp_path):
    import matplotlib.image

    vocabulary = VOCABULARY + ["猫", "坐", "在"]
    keras.utils.set_random_seed(1)
    config = ModelConfig(vocabulary_size=len(vocabulary), hidden_dim=32, num_layers=2, num_heads=4,
                         intermediate_dim=64, max_position=64)
    reader = AttentionReader(build_mlm_model(config), vocabulary)
    for name, text, layer, count in (("en", TEXT, None, 8), ("zh", "猫坐在 mat", 1, 4)):
        path = tmp_path / f"{name}.png"
        assert plot_attention(reader(text), str(path), layer=layer) == count
        image = matplotlib.image.imread(str(path))
        assert image.ndim == 3 and min(image.shape[:2]) > 200
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left
    with pytest.raises(FileNotFoundError, match="the directory .* does not exist"):
        plot_attention(reader(TEXT), str(tmp_path / "missing" / "a.png"))

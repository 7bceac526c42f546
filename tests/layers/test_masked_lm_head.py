import numpy as np

from kmlm.layers import InputEmbedding, MaskedLMHead
from tests import reference
from tests.helpers import assert_config_round_trip, assert_symbolic_shape


def _expected(head, sequence, positions, table):
    w = reference.weights_of(head)
    gathered = np.take_along_axis(sequence, positions[..., None], axis=1)
    h = reference.gelu(gathered @ w["transform_kernel"] + w["transform_bias"])
    h = reference.layer_norm(h, w["gamma"], w["beta"], 1e-12)
    return h @ table + w["output_bias"]


def test_tied_head_matches_numpy_and_uses_the_embedding_table():
    embedding = InputEmbedding(vocabulary_size=30, hidden_dim=8, max_position=16)
    embedding(np.zeros((1, 4), "int32"))
    head = MaskedLMHead(30, token_embedding=embedding, initializer_range=0.3)
    rng = np.random.default_rng(3)
    sequence = rng.normal(size=(2, 6, 8)).astype("float32")
    positions = np.array([[0, 5, 2], [1, 1, 4]], "int32")
    logits = head(sequence, positions)
    head.output_bias.assign(rng.normal(size=30).astype("float32"))
    logits = np.asarray(head(sequence, positions))
    assert logits.dtype == np.float32 and logits.shape == (2, 3, 30)
    table = np.asarray(embedding.token_embeddings.numpy(), np.float64).T
    np.testing.assert_allclose(logits, _expected(head, sequence.astype(np.float64), positions, table), atol=1e-4)
    # The tie is real: changing the embedding changes the logits; the head owns no [H, V] kernel.
    assert "output_kernel" not in reference.weights_of(head)
    embedding.token_embeddings.assign(embedding.token_embeddings.numpy() * 2.0)
    assert not np.allclose(np.asarray(head(sequence, positions)), logits)


def test_untied_head_matches_numpy():
    head = MaskedLMHead(12, activation="gelu", initializer_range=0.3)
    sequence = np.random.default_rng(4).normal(size=(1, 5, 4)).astype("float32")
    positions = np.array([[4, 0]], "int32")
    logits = np.asarray(head(sequence, positions))
    w = reference.weights_of(head)
    np.testing.assert_allclose(logits, _expected(head, sequence.astype(np.float64), positions, w["output_kernel"]), atol=1e-4)


def test_config_round_trip_non_default():
    head = MaskedLMHead(vocabulary_size=77, activation="gelu_tanh", layer_norm_epsilon=1e-6, initializer_range=0.05)
    rebuilt = assert_config_round_trip(head)
    assert rebuilt.vocabulary_size == 77 and rebuilt.activation == "gelu_tanh"


def test_symbolic_call():
    assert_symbolic_shape(MaskedLMHead(9), [(None, 6, 4), (None, 3)], (None, 3, 9), ["float32", "int32"])

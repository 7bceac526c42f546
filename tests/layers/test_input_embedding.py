import numpy as np

from kmlm.layers import InputEmbedding
from tests import reference
from tests.helpers import assert_config_round_trip, assert_symbolic_shape


def test_matches_numpy_sum_then_layer_norm():
    layer = InputEmbedding(vocabulary_size=20, hidden_dim=6, max_position=10, dropout=0.0, initializer_range=1.0)
    token_ids = np.array([[3, 7, 19, 0], [1, 1, 2, 5]], "int32")
    segment_ids = np.array([[0, 0, 1, 1], [0, 1, 0, 1]], "int32")
    actual = np.asarray(layer(token_ids, segment_ids))
    w = reference.weights_of(layer)
    summed = w["token_embeddings"][token_ids] + w["position_embeddings"][:4][None] + w["segment_embeddings"][segment_ids]
    expected = reference.layer_norm(summed, w["gamma"], w["beta"], 1e-12)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_segment_ids_optional_and_no_segment_table():
    layer = InputEmbedding(vocabulary_size=20, hidden_dim=6, max_position=10, num_segments=0, dropout=0.0)
    out = layer(np.array([[1, 2]], "int32"))
    assert out.shape == (1, 2, 6)
    assert "segment_embeddings" not in reference.weights_of(layer)


def test_config_round_trip_non_default():
    layer = InputEmbedding(
        vocabulary_size=33, hidden_dim=12, max_position=64, num_segments=3, dropout=0.3,
        layer_norm_epsilon=1e-6, initializer_range=0.1, name="emb",
    )
    rebuilt = assert_config_round_trip(layer)
    assert rebuilt.num_segments == 3 and rebuilt.max_position == 64


def test_symbolic_call():
    assert_symbolic_shape(
        InputEmbedding(vocabulary_size=10, hidden_dim=4), [(None, 5), (None, 5)], (None, 5, 4), ["int32", "int32"]
    )


def test_factorized_embedding_projects_the_normalized_sum():
    layer = InputEmbedding(vocabulary_size=20, hidden_dim=6, max_position=10, dropout=0.0, initializer_range=1.0,
                           embedding_dim=3)
    token_ids = np.array([[3, 7, 19, 0]], "int32")
    segment_ids = np.array([[0, 0, 1, 1]], "int32")
    actual = np.asarray(layer(token_ids, segment_ids))
    w = reference.weights_of(layer)
    assert w["token_embeddings"].shape == (20, 3) and w["projection_kernel"].shape == (3, 6)
    summed = w["token_embeddings"][token_ids] + w["position_embeddings"][:4][None] + w["segment_embeddings"][segment_ids]
    normalized = reference.layer_norm(summed, w["gamma"], w["beta"], 1e-12)
    np.testing.assert_allclose(actual, normalized @ w["projection_kernel"] + w["projection_bias"], atol=1e-5)
    rebuilt = assert_config_round_trip(layer)
    assert rebuilt.embedding_dim == 3


def test_embedding_dim_equal_to_hidden_dim_has_no_projection():
    layer = InputEmbedding(vocabulary_size=20, hidden_dim=6, max_position=10, embedding_dim=6)
    layer(np.array([[1, 2]], "int32"))
    assert layer.projection_kernel is None and "projection_kernel" not in reference.weights_of(layer)

"""Every random weight of a model starts from its own draw: no weight is a copy (or a
reshaped copy, or a prefix) of another, and the draws keep the configured spread."""

import itertools

import numpy as np
import pytest

from kmlm.config import ModelConfig
from kmlm.layers.initializers import truncated_normal
from kmlm.model import build_mlm_model


def _random_weights(model):
    """{path: flat values} of the weights that start random (not zeros or ones)."""
    weights = {v.path: np.asarray(v).ravel() for v in model.weights}
    return {path: values for path, values in weights.items() if values.std() > 0}


@pytest.mark.parametrize("options", [{}, {"embedding_dim": 64}, {"gated_ffn": True}])
def test_no_two_weights_of_a_model_start_from_the_same_draw(options):
    config = ModelConfig.from_preset("mini", vocabulary_size=600, **options)
    weights = _random_weights(build_mlm_model(config))
    assert len(weights) >= 4 * config.num_layers + 2
    for (a, x), (b, y) in itertools.combinations(weights.items(), 2):
        n = min(len(x), len(y))
        # Independent draws of n values correlate by about 1/sqrt(n); copies by 1.
        assert abs(np.corrcoef(x[:n], y[:n])[0, 1]) < max(0.25, 6 / np.sqrt(n)), f"{a} starts as a copy of {b}"


def test_the_feed_forward_and_embedding_tables_are_independent_and_keep_their_spread():
    config = ModelConfig.from_preset("mini", vocabulary_size=600)
    model = build_mlm_model(config)
    weights = {v.path: np.asarray(v) for v in model.weights}
    inner, outer = weights["block_0/feed_forward/inner_kernel"], weights["block_0/feed_forward/output_kernel"]
    assert not np.allclose(inner.ravel(), outer.ravel())
    tokens, positions = weights["embedding/token_embeddings"], weights["embedding/position_embeddings"]
    assert not np.allclose(tokens[: len(positions)], positions)
    # A normal truncated at two standard deviations keeps 0.88 of the spread, within +-2 stddev.
    for table in (inner, tokens, positions):
        assert np.std(table) == pytest.approx(0.88 * config.initializer_range, rel=0.05)
        assert np.abs(table).max() <= 2 * config.initializer_range + 1e-7


def test_one_initializer_per_weight_draws_independent_values():
    first, second = truncated_normal(0.02)((64, 32)), truncated_normal(0.02)((32, 64))
    assert abs(np.corrcoef(np.ravel(first), np.ravel(second))[0, 1]) < 0.1

"""Mixed precision end to end on a tiny model (CPU): logits match the float32 model's,
mixed_float16 trains through a dynamic LossScaleOptimizer, and the variables stay float32.

Already covered elsewhere, not repeated here: logits are float32 under mixed_float16 and
the block/LayerNorm compute dtypes (test_model.py), an XLA `fit` under mixed_bfloat16
lowers the loss and reports the masked metrics (test_training.py), and the attention
softmax runs in float32 (layers/test_multi_head_self_attention.py)."""

import math

import keras
import numpy as np
import pytest

import kmlm
from kmlm import ModelConfig, build_mlm_model, compile_for_pretraining
from tests.helpers import random_mlm_batch

TINY = dict(vocabulary_size=64, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32, max_position=32)
MIXED = ["mixed_bfloat16", "mixed_float16"]
# Logit tolerance relative to the float32 logits' largest magnitude: bfloat16 keeps 8
# significant bits (relative rounding 2^-8 = 0.4%), float16 keeps 11 (2^-11 = 0.05%); a
# two-layer encoder compounds a few roundings.
RELATIVE_TOLERANCE = {"mixed_bfloat16": 0.05, "mixed_float16": 0.01}


@pytest.fixture
def precision():
    """Yields `kmlm.set_precision` and restores the float32 policy afterwards."""
    try:
        yield kmlm.set_precision
    finally:
        kmlm.set_precision("float32")


def _build(precision, policy, **overrides):
    precision(policy)
    try:
        return build_mlm_model(ModelConfig(**TINY, **overrides))
    finally:
        precision("float32")


@pytest.mark.parametrize("policy", MIXED)
def test_mixed_logits_are_float32_and_close_to_float32_model(precision, policy):
    reference = build_mlm_model(ModelConfig(**TINY))
    mixed = _build(precision, policy)
    assert mixed.dtype_policy.name == policy
    mixed.set_weights(reference.get_weights())
    x, _, _ = random_mlm_batch()
    expected = np.asarray(reference(x, training=False))
    logits = mixed(x, training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    logits = np.asarray(logits)
    assert np.isfinite(logits).all()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=RELATIVE_TOLERANCE[policy] * scale)
    # Not trivially equal: the low-precision compute does change the values.
    assert not np.array_equal(logits, expected)
    # The prediction the model makes agrees almost everywhere.
    assert (logits.argmax(-1) == expected.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("policy", MIXED)
def test_variables_stay_float32(precision, policy):
    model = _build(precision, policy)
    assert model.weights
    assert {keras.backend.standardize_dtype(v.dtype) for v in model.weights} == {"float32"}
    block = model.encoder.get_layer("block_0")
    assert block.variable_dtype == "float32" and block.compute_dtype == policy.removeprefix("mixed_")


@pytest.mark.parametrize("policy", MIXED)
def test_training_lowers_loss_under_mixed_precision(precision, policy):
    model = _build(precision, policy, dropout=0.0, attention_dropout=0.0)
    compile_for_pretraining(model, total_steps=20, warmup_steps=1, learning_rate=1e-2, jit_compile=False)
    if policy == "mixed_float16":
        # Keras wraps the optimizer in a dynamic loss scale for float16 only.
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.optimizer.inner_optimizer, type(kmlm.training.make_optimizer()))
        assert model.optimizer.initial_scale == 2.0**15
    else:
        assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y, w = random_mlm_batch()
    steps = 8
    losses = [float(np.ravel(model.train_on_batch(x, y, sample_weight=w))[0]) for _ in range(steps)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0] - 0.1, losses
    if policy == "mixed_float16":
        # The loss was scaled: every step either applied unscaled gradients (the inner
        # optimizer's iteration count) or overflowed and halved the scale.
        scale = float(model.optimizer.dynamic_scale.numpy())
        skipped = math.log2(2.0**15 / scale)
        assert skipped == int(skipped) and skipped >= 0
        assert int(model.optimizer.iterations.numpy()) + int(skipped) == steps
        assert int(model.optimizer.iterations.numpy()) >= steps - 2
        assert float(model.optimizer.scale_loss(1.0)) == scale
    # Training kept the weights (and the optimizer's slots) float32.
    dtypes = {keras.backend.standardize_dtype(v.dtype) for v in model.trainable_weights}
    dtypes |= {keras.backend.standardize_dtype(v.dtype) for v in model.optimizer.variables
               if "iteration" not in v.path and "step_counter" not in v.path}
    assert dtypes == {"float32"}

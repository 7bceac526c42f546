import keras
import numpy as np
import pytest
import tensorflow as tf

import kmlm
from kmlm import ModelConfig, build_mlm_model, compile_for_pretraining
from kmlm.training import MaskedPerplexity, WarmupLinearDecay, make_optimizer, masked_lm_loss
from tests.helpers import random_mlm_batch

TINY = dict(vocabulary_size=64, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32, max_position=32)


def _cross_entropy(logits, labels):
    logits = logits.astype(np.float64)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return log_z - np.take_along_axis(logits, labels[..., None], -1)[..., 0]


def test_schedule_warmup_then_linear_decay():
    schedule = WarmupLinearDecay(1e-3, warmup_steps=10, total_steps=110)
    values = [float(schedule(step)) for step in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    assert WarmupLinearDecay.from_config(schedule.get_config()).get_config() == schedule.get_config()


def test_loss_is_mean_over_weighted_slots_only():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 10)).astype("float32")
    labels = rng.integers(0, 10, (3, 4)).astype("int32")
    weights = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], "float32")
    expected = (_cross_entropy(logits, labels) * weights).sum() / weights.sum()
    assert float(masked_lm_loss()(labels, logits, sample_weight=weights)) == pytest.approx(expected, rel=1e-5)


def test_perplexity_is_exp_of_weighted_mean_cross_entropy():
    rng = np.random.default_rng(1)
    metric = MaskedPerplexity()
    total, count = 0.0, 0.0
    for _ in range(3):
        logits = rng.normal(size=(2, 5, 7)).astype("float32")
        labels = rng.integers(0, 7, (2, 5)).astype("int32")
        weights = (rng.random((2, 5)) > 0.4).astype("float32")
        metric.update_state(labels, logits, sample_weight=weights)
        total += (_cross_entropy(logits, labels) * weights).sum()
        count += weights.sum()
    assert float(metric.result()) == pytest.approx(np.exp(total / count), rel=1e-5)


def test_no_weight_decay_on_layer_norm_and_biases():
    model = build_mlm_model(ModelConfig(**TINY))
    optimizer = make_optimizer(total_steps=10)
    optimizer.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert any("token_embeddings" in p for p in decayed)
    assert any("qkv_kernel" in p for p in decayed)
    assert not any(p.endswith(("gamma", "beta")) or "bias" in p.rsplit("/", 1)[-1] for p in decayed)
    assert optimizer.global_clipnorm == 1.0


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_xla_compiled_fit_reports_masked_metrics(precision):
    previous = keras.config.dtype_policy()
    try:
        kmlm.set_precision(precision)
        model = build_mlm_model(ModelConfig(**TINY))
    finally:
        keras.config.set_dtype_policy(previous)
    compile_for_pretraining(model, total_steps=20, learning_rate=1e-2, jit_compile=True)
    x, y, w = random_mlm_batch(unused_slots=2)
    ds = tf.data.Dataset.from_tensors((x, y, w)).repeat()
    history = model.fit(ds, steps_per_epoch=10, epochs=2, verbose=0)
    assert set(history.history) >= {"loss", "masked_accuracy", "perplexity"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    logits = model(x, training=False)
    expected = (_cross_entropy(np.asarray(logits), y) * w).sum() / w.sum()
    evaluated = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    assert evaluated["loss"] == pytest.approx(expected, rel=2e-2 if precision != "float32" else 1e-4)
    assert evaluated["perplexity"] == pytest.approx(np.exp(expected), rel=5e-2 if precision != "float32" else 1e-3)


@pytest.mark.parametrize("beta_2, epsilon, clipnorm", [(0.98, 1e-6, 1.0), (0.999, 1e-7, None), (0.9, 0.5, 2.0)])
def test_optimizer_steps_follow_its_beta_2_epsilon_and_clip(beta_2, epsilon, clipnorm):
    rate, beta_1 = 0.1, 0.9
    optimizer = make_optimizer(rate, total_steps=None, weight_decay=0.0, clipnorm=clipnorm, beta_2=beta_2,
                               epsilon=epsilon)
    variable = keras.Variable(np.array([1.0, -2.0, 0.5], np.float32))
    gradients = [np.array([3.0, 4.0, 0.0], np.float32), np.array([-0.1, 0.2, 0.05], np.float32)]
    expected, m, v = variable.numpy().astype(np.float64), np.zeros(3), np.zeros(3)
    for t, g in enumerate(gradients, start=1):
        optimizer.apply_gradients([(tf.constant(g), variable)])
        g = g.astype(np.float64)
        if clipnorm is not None:
            g = g * min(1.0, clipnorm / np.linalg.norm(g))
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        expected -= rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (np.sqrt(v) + epsilon)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)

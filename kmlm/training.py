"""What pretraining and fine-tuning share: optimizer, schedule, loss, metrics, precision,
the stop on a non-finite loss and the `model.fit` wrapper for tf.data input."""

import contextlib
import math
import threading
import warnings

import keras
import tensorflow as tf
from keras import ops

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
NO_DECAY_NAMES = ("gamma", "beta", "bias")


@keras.saving.register_keras_serializable(package="kmlm")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_learning_rate`, then linear decay to 0 at `total_steps`.

    Example:
    >>> schedule = WarmupLinearDecay(1e-3, warmup_steps=10, total_steps=100)
    >>> round(float(schedule(5)), 6)
    0.0005
    """

    def __init__(self, peak_learning_rate, warmup_steps, total_steps):
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.maximum(float(self.warmup_steps), 1.0)
        decay_span = ops.maximum(float(self.total_steps - self.warmup_steps), 1.0)
        rising = step / warmup
        falling = ops.maximum(0.0, (float(self.total_steps) - step) / decay_span)
        factor = ops.where(step < float(self.warmup_steps), rising, falling)
        return self.peak_learning_rate * ops.minimum(factor, 1.0)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }


@keras.saving.register_keras_serializable(package="kmlm")
class MaskedPerplexity(keras.metrics.Metric):
    """exp of the sample-weighted mean cross-entropy over masked slots.

    Pass it in `weighted_metrics` so that `mask_weights` reach it as `sample_weight`.
    """

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total_loss = self.add_variable(shape=(), initializer="zeros", name="total_loss")
        self.total_weight = self.add_variable(shape=(), initializer="zeros", name="total_weight")

    def update_state(self, y_true, y_pred, sample_weight=None):
        losses = keras.losses.sparse_categorical_crossentropy(y_true, ops.cast(y_pred, "float32"), from_logits=True)
        weights = ops.ones_like(losses) if sample_weight is None else ops.cast(sample_weight, "float32")
        self.total_loss.assign_add(ops.sum(losses * weights))
        self.total_weight.assign_add(ops.sum(weights))

    def result(self):
        return ops.exp(self.total_loss / ops.maximum(self.total_weight, 1e-9))

    def reset_state(self):
        self.total_loss.assign(0.0)
        self.total_weight.assign(0.0)


# MirroredStrategy traces each replica's step in its own thread: the flag is per thread.
_REDUCED = threading.local()


@keras.saving.register_keras_serializable(package="kmlm")
class GlobalClipAdamW(keras.optimizers.AdamW):
    """AdamW whose global-norm clipping sees the gradient of the whole global batch.

    Keras 3.15 clips each replica's gradient before summing them across replicas, so under
    `tf.distribute` the clip depends on how the batch is split. This optimizer sums the
    gradients across replicas first, clips the sum, and skips Keras' second sum: N replicas
    then take the same step as one device given the same global batch.
    """

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            present = [g for g in grads if g is not None]
            reduced = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present) if present else [])
            grads = [None if g is None else next(reduced) for g in grads]
            _REDUCED.flag = True  # read, at trace time, by _all_reduce_sum_gradients
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        if getattr(_REDUCED, "flag", False):
            _REDUCED.flag = False
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)


def set_precision(precision):
    """Sets the global Keras dtype policy: "float32", "mixed_float16" or "mixed_bfloat16".

    Call it before building the model. Softmax, LayerNorm, logits and the loss stay float32
    either way; `mixed_float16` gets dynamic loss scaling from `model.compile`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    keras.config.set_dtype_policy(precision)


@keras.saving.register_keras_serializable(package="kmlm")
class MaskedLMLoss(keras.losses.Loss):
    """Sparse cross-entropy averaged over the weighted slots of the whole global batch.

    On one device it is `SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")`.
    Under `tf.distribute` each replica divides its weighted sum by the weight summed over all
    replicas, so the replicas' losses (which Keras sums through the gradients) add up to the
    mean over every masked token of the global batch, however the tokens fall on the
    replicas. Keras' own reduction averages per-replica means instead.

    Example:
    >>> loss = MaskedLMLoss()
    >>> float(loss([[1, 0]], [[[0.0, 9.0], [9.0, 0.0]]], sample_weight=[[1.0, 0.0]])) < 1e-3
    True
    """

    def __init__(self, name="masked_lm_loss", **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", **kwargs)

    def call(self, y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, ops.cast(y_pred, "float32"), from_logits=True)

    def __call__(self, y_true, y_pred, sample_weight=None):
        with tf.name_scope(self.name):
            losses = self.call(ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred))
            weights = ops.ones_like(losses) if sample_weight is None else ops.cast(sample_weight, "float32")
            weight = tf.stop_gradient(ops.sum(weights))
            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync > 1:
                # The result is already this replica's share (Keras would divide by N again).
                weight = context.all_reduce(tf.distribute.ReduceOp.SUM, weight)
            return ops.divide_no_nan(ops.sum(losses * weights), weight)

    def get_config(self):
        return {"name": self.name}


def masked_lm_loss():
    """Cross-entropy over masked slots, averaged over the slots with weight > 0 (of the global
    batch under `tf.distribute`): a `MaskedLMLoss`."""
    return MaskedLMLoss()


def make_optimizer(learning_rate=5e-4, total_steps=10_000, warmup_steps=None, weight_decay=0.01, clipnorm=1.0):
    """AdamW with linear warmup/decay, global-norm clipping and no decay on LayerNorm/biases."""
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be at least 1")
    if warmup_steps is None:
        warmup_steps = max(1, total_steps // 10)
    schedule = WarmupLinearDecay(learning_rate, warmup_steps, total_steps)
    optimizer = GlobalClipAdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=0.9,
        beta_2=0.98,
        epsilon=1e-6,
        global_clipnorm=clipnorm,
    )
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return optimizer


def compile_for_pretraining(
    model,
    *,
    learning_rate=5e-4,
    total_steps=10_000,
    warmup_steps=None,
    weight_decay=0.01,
    clipnorm=1.0,
    jit_compile=True,
    steps_per_execution=1,
):
    """Compiles a `MaskedLMModel` for `model.fit` on `kmlm.pipelines.mlm_dataset` batches.

    Args:
        model: a model from `kmlm.build_mlm_model`.
        learning_rate: peak learning rate after warmup.
        total_steps: steps of the linear decay (the length of the run).
        warmup_steps: warmup length; default 10% of `total_steps`.
        weight_decay: AdamW decoupled weight decay (not applied to LayerNorm or biases).
        clipnorm: global gradient-norm clip.
        jit_compile: compile the train step with XLA.
        steps_per_execution: batches per compiled call.

    Returns:
        The model, compiled with the masked loss and weighted `masked_accuracy` and
        `perplexity` metrics.

    Example:
    >>> from kmlm.config import ModelConfig
    >>> from kmlm.model import build_mlm_model
    >>> config = ModelConfig.from_preset("tiny", vocabulary_size=100)
    >>> model = compile_for_pretraining(build_mlm_model(config), total_steps=1000)
    >>> float(model.optimizer.learning_rate)  # step 0 of the linear warmup
    0.0

    Training then takes an `mlm_dataset` (see `kmlm.pipelines`):
    `model.fit(dataset, steps_per_epoch=100, epochs=10)`.
    """
    model.compile(
        optimizer=make_optimizer(learning_rate, total_steps, warmup_steps, weight_decay, clipnorm),
        loss=masked_lm_loss(),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy"), MaskedPerplexity()],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


class NonFiniteLossError(ValueError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite.

    Unlike `TerminateOnNaN` it raises at once, so no epoch-end callback runs and the backup
    and checkpoints keep the last good weights; the error names the step and that
    checkpoint.

    Args:
        steps_per_epoch: Batches per epoch (to report the global step).
        checkpoint: Describes the last good checkpoint: a callable returning a string.
    """

    def __init__(self, steps_per_epoch, checkpoint=lambda: "none"):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.checkpoint = checkpoint
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            step = self._epoch * self.steps_per_epoch + batch + 1
            raise NonFiniteLossError(
                f"training stopped at step {step}: the loss became {loss}; the last good checkpoint is "
                f"{self.checkpoint()}; lower --learning-rate or use --precision float32"
            )


@contextlib.contextmanager
def tf_data_fit():
    """Silences Keras' warning that `shuffle` is ignored for tf.data input: kmlm's
    pipelines shuffle themselves. Wrap `model.fit` calls on kmlm datasets in it.

    Example:
    >>> with tf_data_fit():
    ...     pass
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        yield

"""What pretraining and fine-tuning share: optimizer, schedule, loss, metrics, precision,
the stop on a non-finite loss and the `model.fit` wrapper for tf.data input."""

import contextlib
import math
import os
import threading
import time
import warnings

import keras
import tensorflow as tf
from keras import ops

from kmlm.files import read_json, write_json_atomically
from kmlm.termination import Terminated, hold_back_sigterm, take_pending_sigterm

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
NO_DECAY_NAMES = ("gamma", "beta", "bias")


SCHEDULES = ("linear", "cosine", "constant")


def schedule_factor(progress, warmup, shape="linear", decay=None):
    """The learning rate as a fraction of its peak at `progress` (0 to 1) through a run.

    A linear rise over the first `warmup` of the run, then `shape`: "linear" falls to 0 at
    the end, "cosine" falls along a half cosine to 0 at the end, "constant" stays at the peak.
    With `decay` (a share of the run, 0 to 1) the rate holds at the peak after the warmup and
    the fall takes only the last `decay` of the run (warmup, stable, decay); None: the fall
    takes everything after the warmup. Works on floats and on tensors (the step schedule and
    the time-budget callback share it).

    Example:
    >>> [round(float(schedule_factor(p, 0.1)), 4) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    >>> round(float(schedule_factor(0.55, 0.1, "cosine")), 4), float(schedule_factor(0.9, 0.1, "constant"))
    (0.5, 1.0)
    >>> [round(float(schedule_factor(p, 0.0, decay=0.2)), 4) for p in (0.0, 0.5, 0.8, 0.9, 1.0)]
    [1.0, 1.0, 1.0, 0.5, 0.0]
    """
    if shape not in SCHEDULES:
        raise ValueError(f"unknown schedule {shape!r}; choose one of {', '.join(SCHEDULES)}")
    progress = ops.clip(ops.cast(progress, "float32"), 0.0, 1.0)
    if decay is not None and not 0.0 <= float(decay) <= 1.0:
        raise ValueError(f"decay={decay} must be a share of the run in [0, 1]")
    start = float(warmup) if decay is None else max(float(warmup), 1.0 - float(decay))
    rising = progress / max(float(warmup), 1e-9)
    # Counted from the end, so that the rate is exactly 0 at progress 1 in float32 too.
    remaining = ops.clip(1.0 - (1.0 - progress) / max(1.0 - start, 1e-9), 0.0, 1.0)
    if shape == "linear":
        falling = 1.0 - remaining
    elif shape == "cosine":
        falling = 0.5 * (1.0 + ops.cos(math.pi * remaining))
    else:
        falling = ops.ones_like(remaining)
    return ops.where(progress < warmup, rising, ops.minimum(falling, 1.0))


@keras.saving.register_keras_serializable(package="kmlm")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_learning_rate` over `warmup_steps`, then a fall to 0 at
    `total_steps`: linear (the default), cosine, or none ("constant"); with `decay_steps` the
    fall takes only the last `decay_steps` (the peak holds until then); see `schedule_factor`.

    Example:
    >>> schedule = WarmupLinearDecay(1e-3, warmup_steps=10, total_steps=100)
    >>> round(float(schedule(5)), 6), round(float(schedule(55)), 6), float(schedule(100))
    (0.0005, 0.0005, 0.0)
    """

    def __init__(self, peak_learning_rate, warmup_steps, total_steps, shape="linear", decay_steps=None):
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.shape = shape
        self.decay_steps = None if decay_steps is None else int(decay_steps)

    def __call__(self, step):
        total = float(max(self.total_steps, 1))
        decay = None if self.decay_steps is None else min(self.decay_steps / total, 1.0)
        factor = schedule_factor(ops.cast(step, "float32") / total, self.warmup_steps / total, self.shape, decay)
        return self.peak_learning_rate * factor

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "shape": self.shape,
            "decay_steps": self.decay_steps,
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


def enable_determinism():
    """Makes every TensorFlow op deterministic for the rest of the process (an op without a
    deterministic kernel then raises instead of running). On CPU kmlm's runs are already
    reproducible for a fixed seed; this is for accelerators, where some kernels are not."""
    tf.config.experimental.enable_op_determinism()


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


def make_optimizer(learning_rate=5e-4, total_steps=10_000, warmup_steps=None, weight_decay=0.01, clipnorm=1.0,
                   schedule="linear", beta_2=0.98, epsilon=1e-6, decay_steps=None):
    """AdamW with a warmup/decay schedule, global-norm clipping and no decay on LayerNorm/biases.

    `decay_steps` (with `total_steps`): the schedule's fall takes only the last `decay_steps`
    steps and the rate holds at its peak from the warmup until then; None: the fall takes every
    step after the warmup.

    `total_steps=None` leaves the learning rate a plain variable for a `TimeBudget` callback
    to set at every step (a schedule that follows elapsed time rather than steps).
    `clipnorm=None` trains without clipping.
    """
    if total_steps is None:
        rate = float(learning_rate)
    else:
        if total_steps < 1:
            raise ValueError(f"total_steps={total_steps} must be at least 1")
        if warmup_steps is None:
            warmup_steps = max(1, total_steps // 10)
        rate = WarmupLinearDecay(learning_rate, warmup_steps, total_steps, shape=schedule, decay_steps=decay_steps)
    optimizer = GlobalClipAdamW(
        learning_rate=rate,
        weight_decay=weight_decay,
        beta_1=0.9,
        beta_2=beta_2,
        epsilon=epsilon,
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
    schedule="linear",
    beta_2=0.98,
    epsilon=1e-6,
    decay_steps=None,
):
    """Compiles a `MaskedLMModel` for `model.fit` on `kmlm.pipelines.mlm_dataset` batches.

    Args:
        model: a model from `kmlm.build_mlm_model`.
        learning_rate: peak learning rate after warmup.
        total_steps: steps of the schedule (the length of the run); None for a learning rate
            that a `TimeBudget` callback sets.
        warmup_steps: warmup length; default 10% of `total_steps`.
        schedule: what follows the warmup: "linear", "cosine" or "constant" (`SCHEDULES`).
        decay_steps: the fall takes only the last `decay_steps` steps, the peak holding until
            then; None: every step after the warmup.
        weight_decay: AdamW decoupled weight decay (not applied to LayerNorm or biases).
        clipnorm: global gradient-norm clip (None: no clipping).
        beta_2, epsilon: Adam's second-moment decay and epsilon.
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
        optimizer=make_optimizer(learning_rate, total_steps, warmup_steps, weight_decay, clipnorm, schedule,
                                 beta_2=beta_2, epsilon=epsilon, decay_steps=decay_steps),
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


class BackupOnTermination(keras.callbacks.Callback):
    """Holds SIGTERM back during training; when one came, saves the step just finished and
    raises `kmlm.termination.Terminated(describe(step))`.

    Put it last among the callbacks, so that at the end of an epoch the epoch's own files
    (metrics.csv row, checkpoint, backup) are written before it stops the run.

    Args:
        save_step: Called with no arguments at the end of a step once SIGTERM came; saves
            that step and returns a description of it (e.g. its global step).
        describe: Maps that description to the message of `Terminated`.
    """

    def __init__(self, save_step, describe):
        super().__init__()
        self.save_step = save_step
        self.describe = describe

    def on_train_begin(self, logs=None):
        hold_back_sigterm(True)

    def _stop_if_asked(self):
        if take_pending_sigterm():
            hold_back_sigterm(False)
            raise Terminated(self.describe(self.save_step()))

    def on_train_batch_end(self, batch, logs=None):
        self._stop_if_asked()

    def on_epoch_end(self, epoch, logs=None):
        self._stop_if_asked()

    def on_train_end(self, logs=None):
        hold_back_sigterm(False)
        if take_pending_sigterm():
            raise Terminated(self.describe(None))


class TrainingClock(keras.callbacks.Callback):
    """Times the training of a run, records it, and under a time budget drives the schedule.

    The clock starts when the first step of this process has finished (that step traces and
    XLA-compiles the train step, which is start-up rather than training) and pauses while
    `fit` validates. After every epoch it writes the steps reached and the training seconds
    so far to `progress_path` (atomically), under the epoch's number, so that a resumed run
    can count the time its earlier part spent (`spent_seconds`).

    With `budget_seconds` it also sets the optimizer's learning rate before every step from the
    share of the budget spent (`schedule_factor` over time, with `warmup` and `decay` shares of
    the budget) and stops training at the first step that ends past the budget; the clock stops with
    that step (the epoch's validation and saves that follow are not training). The optimizer's
    learning rate must then be a plain variable (`make_optimizer(total_steps=None)`).

    Example:
    >>> clock = TrainingClock(budget_seconds=60.0, peak_learning_rate=1e-3, warmup=0.1)
    >>> clock.learning_rate(6.0), clock.learning_rate(33.0), clock.learning_rate(60.0)
    (0.001, 0.0005, 0.0)
    """

    def __init__(self, progress_path=None, budget_seconds=None, peak_learning_rate=None, warmup=0.1,
                 schedule="linear", spent_seconds=0.0, extra=None, decay=None):
        super().__init__()
        self.progress_path = progress_path
        self.budget_seconds = budget_seconds
        self.peak_learning_rate = peak_learning_rate
        self.warmup = warmup
        self.schedule = schedule
        self.decay = decay
        self.spent_seconds = float(spent_seconds)
        self.extra = {} if extra is None else extra  # shared: the caller may add to it later
        self.startup_seconds = None
        self._started = None
        self._paused_at = None
        self._fit_began = None
        self._budget_spent = False
        self.epochs = {}
        self.interrupted = {}

    def learning_rate(self, elapsed):
        """The learning rate after `elapsed` seconds of training under the budget."""
        factor = float(schedule_factor(elapsed / self.budget_seconds, self.warmup, self.schedule, self.decay))
        return round(self.peak_learning_rate * factor, 9)

    def elapsed(self):
        """Training seconds so far, the earlier part of a resumed run included."""
        if self._started is None:
            return self.spent_seconds
        now = self._paused_at if self._paused_at is not None else time.perf_counter()
        return self.spent_seconds + now - self._started

    @property
    def steps(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self._fit_began = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        if self.budget_seconds is not None:
            self.model.optimizer.learning_rate = self.learning_rate(self.elapsed())

    def on_train_batch_end(self, batch, logs=None):
        if self._started is None:
            self._started = time.perf_counter()
            self.startup_seconds = self._started - self._fit_began
        if self.budget_seconds is not None and self._paused_at is None and self.elapsed() >= self.budget_seconds:
            self.model.stop_training = True
            # Training ends with this step: what fit still does (the epoch's validation, the
            # callbacks' saves) is not training time, so the clock stops for good here.
            self._paused_at = time.perf_counter()
            self._budget_spent = True

    def on_test_begin(self, logs=None):
        if self._started is not None and self._paused_at is None:
            self._paused_at = time.perf_counter()

    def on_test_end(self, logs=None):
        if self._paused_at is not None and not self._budget_spent:
            self._started += time.perf_counter() - self._paused_at
            self._paused_at = None

    def on_train_end(self, logs=None):
        if self._started is not None and self._paused_at is None:
            self._paused_at = time.perf_counter()  # the clock stops with training

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[str(epoch + 1)] = {"steps": self.steps, "train_seconds": round(self.elapsed(), 3)}
        self.write()

    def record(self):
        """What `progress_path` holds: the steps reached, the training seconds, the budget, and
        the same per finished epoch."""
        values = {"steps": self.steps, "train_seconds": round(self.elapsed(), 3),
                  "budget_seconds": self.budget_seconds, **self.extra}
        if self.startup_seconds is not None:
            values["first_step_seconds"] = round(self.startup_seconds, 3)
        previous = read_progress(self.progress_path)
        values["epochs"] = {**previous.get("epochs", {}), **self.epochs}
        interrupted = {**previous.get("interrupted", {}), **self.interrupted}
        if interrupted:
            values["interrupted"] = interrupted
        return values

    def write_interruption(self, step):
        """Records the training seconds at global step `step`, where a run stops in the middle
        of an epoch (on SIGTERM), so that its resumption counts them (`spent_seconds`)."""
        self.interrupted[str(step)] = round(self.elapsed(), 3)
        self.write()

    def write(self, **extra):
        """Writes `record()` (and `extra`) to `progress_path`."""
        self.extra.update(extra)
        if self.progress_path:
            write_json_atomically(self.progress_path, self.record())


def read_progress(path):
    """The progress file a `TrainingClock` wrote, or {} when there is none."""
    if not path or not os.path.isfile(path):
        return {}
    return read_json(path)


def spent_seconds(path, epoch, step=None):
    """Training seconds a run had spent when it finished `epoch`, or, for a run stopped in the
    middle of an epoch, when it reached global step `step` (0 when it has no record of it)."""
    progress = read_progress(path)
    if step is not None and str(step) in progress.get("interrupted", {}):
        return float(progress["interrupted"][str(step)])
    if not epoch:
        return 0.0
    return float(progress.get("epochs", {}).get(str(epoch), {}).get("train_seconds", 0.0))


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

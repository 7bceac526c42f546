"""The learning-rate schedules and the time budget: the rate follows the time spent, reaches 0
when the budget is spent, training stops there, and a resumed run counts the time already spent."""

import json
import math
import os

import keras
import numpy as np
import pytest

from kmlm import training
from kmlm.training import TrainingClock, WarmupLinearDecay, make_optimizer, schedule_factor, spent_seconds

PEAK = 0.01
BUDGET = 20.0
WARMUP = 0.2
STEP_SECONDS = 1.0


def reference_factor(progress, warmup, shape):
    """The schedule written out independently of kmlm, per piece."""
    if progress < warmup:
        return progress / warmup
    remaining = min(1.0, (progress - warmup) / (1.0 - warmup))
    return {"linear": 1.0 - remaining, "cosine": 0.5 * (1.0 + math.cos(math.pi * remaining)),
            "constant": 1.0}[shape]


@pytest.mark.parametrize("shape", ["linear", "cosine", "constant"])
@pytest.mark.parametrize("warmup", [0.0, 0.06, 0.5])
def test_schedule_factor_matches_an_independent_formula(shape, warmup):
    for progress in np.linspace(0.0, 1.0, 41):
        assert float(schedule_factor(progress, warmup, shape)) == pytest.approx(
            reference_factor(progress, warmup, shape), abs=1e-6), (shape, warmup, progress)
    assert float(schedule_factor(1.0, warmup, shape)) == (1.0 if shape == "constant" else 0.0)


def test_the_step_schedule_has_the_same_shape_over_steps():
    schedule = WarmupLinearDecay(PEAK, warmup_steps=10, total_steps=100, shape="cosine")
    for step in (0, 5, 10, 40, 99, 100):
        assert float(schedule(step)) == pytest.approx(PEAK * reference_factor(step / 100, 0.1, "cosine"), abs=1e-9)


def reference_decay_factor(progress, warmup, shape, decay):
    """Warmup, then the peak held, then `shape`'s fall over the last `decay` of the run."""
    if progress < warmup:
        return progress / warmup
    start = max(warmup, 1.0 - decay)
    if progress <= start:
        return 1.0
    return reference_factor((progress - start) / (1.0 - start), 0.0, shape)


@pytest.mark.parametrize("shape", ["linear", "cosine"])
@pytest.mark.parametrize("warmup,decay", [(0.0, 0.2), (0.1, 0.25), (0.3, 0.9), (0.0, 1.0)])
def test_a_fall_over_the_last_share_of_the_run_matches_an_independent_formula(shape, warmup, decay):
    for progress in np.linspace(0.0, 1.0, 81):
        assert float(schedule_factor(progress, warmup, shape, decay)) == pytest.approx(
            reference_decay_factor(progress, warmup, shape, decay), abs=1e-6), (shape, warmup, decay, progress)
    assert float(schedule_factor(1.0, warmup, shape, decay)) == 0.0
    # decay=1 with no warmup is the plain schedule
    if warmup == 0.0 and decay == 1.0:
        for progress in (0.1, 0.5, 0.9):
            assert float(schedule_factor(progress, 0.0, shape, 1.0)) == pytest.approx(
                float(schedule_factor(progress, 0.0, shape)), abs=1e-7)


def test_the_step_schedule_holds_the_peak_until_its_decay_steps():
    schedule = WarmupLinearDecay(PEAK, warmup_steps=10, total_steps=100, decay_steps=20)
    rates = [float(schedule(step)) for step in range(101)]
    assert rates[5] == pytest.approx(PEAK / 2)
    assert rates[10:81] == pytest.approx([PEAK] * 71)
    assert rates[90] == pytest.approx(PEAK / 2) and rates[100] == 0.0
    assert float(WarmupLinearDecay.from_config(schedule.get_config())(90)) == pytest.approx(PEAK / 2)


def test_a_decay_outside_the_run_is_refused():
    with pytest.raises(ValueError, match=r"^decay=1.5 must be a share of the run in \[0, 1\]$"):
        schedule_factor(0.5, 0.1, "linear", 1.5)


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="^unknown schedule 'step'; choose one of linear, cosine, constant$"):
        schedule_factor(0.5, 0.1, "step")


class FakeTime:
    """`time.perf_counter` for `kmlm.training`: it moves only when a step ends."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class StepTakes(keras.callbacks.Callback):
    """Advances the fake time by one step's duration at every batch end (placed before the
    clock, so the clock sees the time the step took), and records the rate each step used."""

    def __init__(self, fake_time, stop_at_epoch=None):
        super().__init__()
        self.fake_time = fake_time
        self.stop_at_epoch = stop_at_epoch
        self.rates = []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.stop_at_epoch:
            raise KeyboardInterrupt  # a kill between epochs

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        self.fake_time.now += STEP_SECONDS


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=make_optimizer(PEAK, total_steps=None, weight_decay=0.0), loss="mse")
    return model


def _fit(model, clock, recorder, epochs=100, initial_epoch=0):
    x = np.ones((8, 3), "float32")
    y = np.zeros((8, 2), "float32")
    try:
        model.fit(x, y, batch_size=2, epochs=epochs, initial_epoch=initial_epoch, verbose=0,
                  callbacks=[recorder, clock])
    except KeyboardInterrupt:
        pass


def expected_rates(first_elapsed, count):
    """The rate of each step: the first step of a process is start-up (the clock starts when
    it ends), then the k-th step starts at first_elapsed + k - 1 seconds of training."""
    rates = [PEAK * reference_factor(first_elapsed / BUDGET, WARMUP, "linear")]
    rates += [PEAK * reference_factor((first_elapsed + k) / BUDGET, WARMUP, "linear") for k in range(count - 1)]
    return rates


def test_the_rate_follows_the_time_and_training_stops_when_the_budget_is_spent(tmp_path, monkeypatch):
    fake_time = FakeTime()
    monkeypatch.setattr(training.time, "perf_counter", fake_time)
    progress = str(tmp_path / "progress.json")
    clock = TrainingClock(progress, BUDGET, PEAK, WARMUP, "linear")
    recorder = StepTakes(fake_time)
    _fit(_model(), clock, recorder)
    # Steps 2..21 take the 20 training seconds; the first (compile) step is outside the budget.
    assert len(recorder.rates) == int(BUDGET / STEP_SECONDS) + 1
    np.testing.assert_allclose(recorder.rates, expected_rates(0.0, len(recorder.rates)), rtol=1e-5, atol=1e-9)
    assert clock.learning_rate(BUDGET) == 0.0 and max(recorder.rates) == pytest.approx(PEAK)
    assert clock.elapsed() == BUDGET
    with open(progress) as file:
        record = json.load(file)
    assert record["steps"] == len(recorder.rates) and record["train_seconds"] == BUDGET
    assert record["first_step_seconds"] == STEP_SECONDS and record["budget_seconds"] == BUDGET
    # 4 steps an epoch: the epoch records are the steps and seconds at each epoch end.
    assert record["epochs"]["1"] == {"steps": 4, "train_seconds": 3.0}
    assert record["epochs"]["2"] == {"steps": 8, "train_seconds": 7.0}


def test_under_a_budget_the_fall_takes_the_last_decay_share_of_the_time(tmp_path, monkeypatch):
    fake_time = FakeTime()
    monkeypatch.setattr(training.time, "perf_counter", fake_time)
    clock = TrainingClock(str(tmp_path / "progress.json"), BUDGET, PEAK, WARMUP, "linear", decay=0.25)
    recorder = StepTakes(fake_time)
    _fit(_model(), clock, recorder)
    # The first step is start-up; the k-th after it starts at k - 1 seconds of training.
    elapsed = [0.0] + [float(k) for k in range(len(recorder.rates) - 1)]
    expected = [PEAK * reference_decay_factor(t / BUDGET, WARMUP, "linear", 0.25) for t in elapsed]
    np.testing.assert_allclose(recorder.rates, expected, rtol=1e-5, atol=1e-9)
    assert recorder.rates[-1] == pytest.approx(PEAK / 5)  # at 19 s of 20: 1 s of the 5 s fall left
    assert sum(rate == pytest.approx(PEAK) for rate in recorder.rates) == 12  # from 4 s (warmup done) to 15 s (the fall begins)
    assert clock.learning_rate(BUDGET) == 0.0


def test_a_resumed_run_counts_the_time_its_earlier_part_spent(tmp_path, monkeypatch):
    fake_time = FakeTime()
    monkeypatch.setattr(training.time, "perf_counter", fake_time)
    progress = str(tmp_path / "progress.json")
    first = StepTakes(fake_time, stop_at_epoch=2)
    _fit(_model(), TrainingClock(progress, BUDGET, PEAK, WARMUP), first)
    assert len(first.rates) == 8
    spent = spent_seconds(progress, 2)
    assert spent == 7.0  # 8 steps, the first of them start-up
    assert spent_seconds(progress, 0) == 0.0 and spent_seconds(str(tmp_path / "none.json"), 2) == 0.0

    resumed_clock = TrainingClock(progress, BUDGET, PEAK, WARMUP, spent_seconds=spent)
    resumed = StepTakes(fake_time)
    _fit(_model(), resumed_clock, resumed, initial_epoch=2)  # as the backup restores it
    # The resumed process starts where the schedule was and spends only the rest of the budget.
    assert len(resumed.rates) == int(BUDGET - spent) + 1
    np.testing.assert_allclose(resumed.rates, expected_rates(spent, len(resumed.rates)), rtol=1e-5, atol=1e-9)
    assert resumed_clock.elapsed() == BUDGET
    with open(progress) as file:
        epochs = json.load(file)["epochs"]
    assert epochs["1"]["train_seconds"] == 3.0  # the earlier part's records are kept


def test_a_run_stopped_inside_an_epoch_records_its_seconds_under_the_step(tmp_path, monkeypatch):
    fake_time = FakeTime()
    monkeypatch.setattr(training.time, "perf_counter", fake_time)
    progress = str(tmp_path / "progress.json")
    clock, model = TrainingClock(progress, BUDGET, PEAK, WARMUP), _model()
    _fit(model, clock, StepTakes(fake_time, stop_at_epoch=2))
    clock.write_interruption(11)  # as on SIGTERM, 3 steps into epoch 3
    assert spent_seconds(progress, 2, 11) == 7.0 and spent_seconds(progress, 2) == 7.0
    assert spent_seconds(progress, 2, 8) == 7.0  # a step at an epoch's end: the epoch's record
    # A later write (the next epoch's) keeps the record, which a backup of that step may still need.
    later = TrainingClock(progress, BUDGET, PEAK, WARMUP)
    later.set_model(model)
    later.write()
    with open(progress) as file:
        assert json.load(file)["interrupted"] == {"11": 7.0}


def test_validation_time_is_not_training_time(tmp_path, monkeypatch):
    fake_time = FakeTime()
    monkeypatch.setattr(training.time, "perf_counter", fake_time)

    class SlowValidation(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            fake_time.now += 100.0

    clock = TrainingClock(None, BUDGET, PEAK, WARMUP)
    recorder = StepTakes(fake_time)
    x = np.ones((8, 3), "float32")
    _fit_args = dict(batch_size=2, epochs=100, verbose=0, validation_data=(x, np.zeros((8, 2), "float32")))
    _model().fit(x, np.zeros((8, 2), "float32"), callbacks=[recorder, SlowValidation(), clock], **_fit_args)
    assert len(recorder.rates) == int(BUDGET / STEP_SECONDS) + 1 and clock.elapsed() == BUDGET


def test_the_clock_stops_with_the_step_that_spends_the_budget(tmp_path, monkeypatch):
    # What fit does after that step (the last validation, the backup saved at the last epoch's
    # end) is not training time; saves between epochs in the middle of the run are.
    fake_time = FakeTime()
    monkeypatch.setattr(training.time, "perf_counter", fake_time)

    class EpochEndSaves(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # runs before the clock's own epoch record
            fake_time.now += 50.0 if self.model.stop_training else 0.5

        def on_test_batch_end(self, batch, logs=None):
            fake_time.now += 100.0

    progress = str(tmp_path / "progress.json")
    clock = TrainingClock(progress, BUDGET, PEAK, WARMUP)
    recorder = StepTakes(fake_time)
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    _model().fit(x, y, batch_size=2, epochs=100, verbose=0, validation_data=(x, y),
                 callbacks=[recorder, EpochEndSaves(), clock])
    # 4 steps an epoch, 1 s each, the first outside the budget, 0.5 s between epochs: step 19
    # spends the 20 s (18 s of steps after the first, 4 saves of 0.5 s), and the clock ends there.
    assert BUDGET <= clock.elapsed() < BUDGET + STEP_SECONDS
    assert len(recorder.rates) == 19
    with open(progress) as file:
        assert json.load(file)["train_seconds"] == clock.elapsed()


def test_a_time_budget_needs_a_variable_learning_rate():
    optimizer = make_optimizer(PEAK, total_steps=None)
    optimizer.learning_rate = 0.5 * PEAK
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.5 * PEAK)

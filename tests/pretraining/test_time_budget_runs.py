"""`kmlm pretrain --time-budget`: a run by time records the steps it reached, and a killed one
resumes with the time it had already spent."""

import json
import subprocess
import sys

import pytest

from kmlm.pretraining.job import pretrain
from kmlm.pretraining.settings import PretrainSettings
from kmlm.run_directory import RunConfig
from tests.cli.test_main import ENGLISH
from tests.helpers import kill_during_training, logged_epochs, run_cli, write_corpus

TOY = dict(preset="tiny", seq_len=32, batch_size=8, vocab_size=300, eval_batches=0, jit_compile=False,
           model_overrides={"hidden_dim": 32, "num_heads": 2, "intermediate_dim": 64})


def _progress(out):
    with open(out / "progress.json", encoding="utf-8") as file:
        return json.load(file)


@pytest.mark.slow
def test_a_run_by_time_stops_at_its_budget_and_records_the_steps_it_reached(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH * 4)
    out = tmp_path / "run"
    budget_minutes = 0.1
    metrics = pretrain(str(out), PretrainSettings(corpus=corpus, time_budget=budget_minutes, **TOY), verbose=0)
    progress = _progress(out)
    assert progress["budget_seconds"] == 6.0
    # It trained until the budget was spent, and stopped at the first step after it (a few seconds of
    # slack: on a busy machine one step can take far longer than the mean).
    step_seconds = progress["train_seconds"] / progress["steps"]
    assert 6.0 <= progress["train_seconds"] <= 6.0 + 5 * step_seconds + 3.0
    assert metrics["steps"] == progress["steps"] > 50
    assert progress["startup_seconds"] > 0 and progress["evaluation_seconds"] > 0
    record = RunConfig.read(str(out))
    assert record.training["time_budget"] == budget_minutes and record.training["total_steps"] is None
    assert record.training["steps"] is None and record.training["steps_per_epoch"] == 50
    # Every 50 steps is an epoch: the backup and metrics.csv follow them.
    assert len(logged_epochs(out)) == len(progress["epochs"]) >= 1


@pytest.mark.slow
def test_a_killed_run_by_time_resumes_with_the_time_already_spent(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH * 4)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "kmlm", "pretrain", "--corpus", corpus, "--out", str(out),
               "--time-budget", "0.25", "--preset", "tiny", "--seq-len", "32", "--batch-size", "8",
               "--hidden-dim", "32", "--num-heads", "2", "--intermediate-dim", "64",
               "--vocab-size", "300", "--eval-batches", "0", "--no-jit"]
    before = kill_during_training(command, out, epochs=3)
    spent = {int(epoch): entry["train_seconds"] for epoch, entry in _progress(out)["epochs"].items()}
    assert spent and max(spent.values()) < 15.0

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming the unfinished run in {out}" in result.stdout.splitlines()
    progress = _progress(out)
    epochs = {int(epoch): entry for epoch, entry in progress["epochs"].items()}
    resumed_from = logged_epochs(out)[len(before)]  # the first epoch the second process trained
    # The clock went on from the time the backup's epoch had spent instead of starting at 0 ...
    assert epochs[resumed_from + 1]["train_seconds"] > spent[resumed_from]
    seconds = [epochs[epoch]["train_seconds"] for epoch in sorted(epochs)]
    assert seconds == sorted(seconds)
    # ... so the whole run, both processes, trained for the budget and no longer.
    step_seconds = progress["train_seconds"] / progress["steps"]
    assert 15.0 <= progress["train_seconds"] <= 15.0 + 5 * step_seconds + 0.5
    assert (out / "model.keras").exists() and not (out / "backup").exists()


def _usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(argv, capsys)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_steps_and_a_time_budget_are_one_or_the_other(capsys):
    assert _usage_error(["pretrain", "--out", "x", "--steps", "10", "--time-budget", "5"], capsys) == (
        "kmlm pretrain: error: argument --time-budget: not allowed with argument --steps; see `kmlm pretrain --help`")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_a_time_budget_must_be_a_positive_number_of_minutes(capsys, value):
    shown = repr(value) if value == "soon" else value
    assert _usage_error(["pretrain", "--out", "x", "--time-budget", value], capsys) == (
        f"kmlm pretrain: error: argument --time-budget: {shown} is not a positive number; "
        "see `kmlm pretrain --help`")


@pytest.mark.parametrize("changes, message", [
    (dict(time_budget=5, steps=100), "give --steps or --time-budget, not both: a run goes by steps or by time"),
    (dict(time_budget=5, warmup_steps=10), "--warmup-steps needs --steps; under --time-budget give --warmup as a "
                                           "share of the budget, e.g. --warmup 0.1"),
    (dict(warmup=1.0), "--warmup 1.0 must be a share of the run in [0, 1), e.g. 0.1"),
    (dict(lr_schedule="step"), "unknown schedule 'step'; choose one of linear, cosine, constant"),
    (dict(decay=0.0), "--decay 0.0 must be a share of the run in (0, 1], e.g. 0.2"),
    (dict(decay=1.5), "--decay 1.5 must be a share of the run in (0, 1], e.g. 0.2"),
    (dict(decay=0.2, lr_schedule="constant"), "--decay is the length of the fall; the constant schedule has none"),
])
def test_bad_schedule_settings_are_refused_in_one_line(changes, message):
    with pytest.raises(ValueError) as error:
        PretrainSettings(**changes).validate()
    assert str(error.value) == message

"""SIGTERM during `kmlm pretrain`, as a preemptible VM sends it: the step in flight is backed up,
the command says how to resume, and the re-run ends exactly where an uninterrupted run ends.
The same for a kill during the final save of model.keras."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from kmlm.run_directory import load_run
from kmlm.termination import EXIT_STATUS
from tests.cli.test_main import ENGLISH
from tests.helpers import logged_epochs, signal_during_training, write_corpus

STEPS, STEPS_PER_EPOCH = 400, 200  # two long epochs: the signal lands inside the second


def _command(corpus, out):
    return [sys.executable, "-m", "kmlm", "pretrain", "--corpus", corpus, "--out", str(out), "--steps", str(STEPS),
            "--log-points", str(STEPS // STEPS_PER_EPOCH), "--preset", "tiny", "--seq-len", "32", "--batch-size", "8",
            "--hidden-dim", "32", "--num-heads", "2", "--intermediate-dim", "64", "--vocab-size", "300",
            "--eval-batches", "1", "--no-jit", "--quiet"]


def _read(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _held_out(out):
    return {key: value for key, value in _read(out / "evaluation.json").items() if key != "train_seconds"}


# `kmlm pretrain` in a process whose model.keras save writes half a file and then dies of SIGKILL.
DIES_WHILE_SAVING = """
import os, signal, sys
import keras

def dies_while_saving(self, filepath, *args, **kwargs):
    with open(filepath, "wb") as file:
        file.write(b"PK\\x03\\x04 half of a zip archive")
    os.kill(os.getpid(), signal.SIGKILL)

keras.Model.save = dies_while_saving
from kmlm.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(corpus, the run directory of the same command never interrupted)."""
    base = tmp_path_factory.mktemp("termination")
    corpus = write_corpus(base / "corpus.txt", ENGLISH * 4)
    finished = subprocess.run(_command(corpus, base / "reference"), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return corpus, base / "reference"


@pytest.mark.slow
def test_sigterm_backs_up_the_step_in_flight_and_the_rerun_ends_as_an_uninterrupted_run(tmp_path, reference):
    corpus, reference = reference
    out = tmp_path / "run"
    status, errors = signal_during_training(_command(corpus, out), out, signal.SIGTERM, epochs=1, delay=1.0)
    assert status == EXIT_STATUS == 143
    message = re.fullmatch(rf"kmlm pretrain: stopped by SIGTERM; saved the backup of step (\d+) in "
                           rf"{re.escape(str(out / 'backup'))}; re-run the same command to resume from it", errors[-1])
    assert message, errors[-3:]
    step = int(message.group(1))
    state = _read(out / "backup" / "state.json")
    assert state["epoch"] * STEPS_PER_EPOCH + state.get("batches", 0) == step
    assert STEPS_PER_EPOCH <= step < STEPS and not (out / "model.keras").exists()
    progress = _read(out / "progress.json")
    if step % STEPS_PER_EPOCH:  # stopped inside an epoch: its seconds so far are recorded under the step
        spent = progress["interrupted"][str(step)]
    else:
        spent = progress["epochs"][str(step // STEPS_PER_EPOCH)]["train_seconds"]
    assert progress["steps"] == step and spent > 0

    resumed = subprocess.run(_command(corpus, out), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # Nothing was lost: the same model as the run that was never stopped, every epoch logged once ...
    assert _held_out(out) == _held_out(reference)
    assert logged_epochs(out) == logged_epochs(reference) == [0, 1]
    # ... and the training time of both processes counted (the clock went on from the backup's).
    progress = _read(out / "progress.json")
    assert progress["steps"] == STEPS and progress["train_seconds"] > spent
    assert not (out / "backup").exists()
    assert not [path for path in out.rglob(".partial-*")]


@pytest.mark.slow
def test_a_kill_during_the_final_model_save_leaves_no_model_and_the_rerun_finishes_from_the_backup(
        tmp_path, reference):
    corpus, reference = reference
    out = tmp_path / "run"
    command = _command(corpus, out)
    killed = subprocess.run([sys.executable, "-c", DIES_WHILE_SAVING, *command[3:]], capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -signal.SIGKILL
    # The half-written file kept its temporary name; the backup of the last step is still there.
    assert not (out / "model.keras").exists()
    assert [path.name.endswith("-model.keras") for path in out.glob(".partial-*")] == [True]
    assert _read(out / "backup" / "state.json")["epoch"] == STEPS // STEPS_PER_EPOCH

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(out.rglob(".partial-*")) and not (out / "backup").exists()
    assert _held_out(out) == _held_out(reference)  # no step trained again, none lost
    assert load_run(os.fspath(out)).model.count_params() > 0

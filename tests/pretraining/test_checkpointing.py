"""Atomic backups and checkpoints, and the stop on a non-finite loss."""

import json
import os
import re

import keras
import numpy as np
import pytest

from kmlm.files import replace_atomically
from kmlm.pretraining.checkpointing import AtomicBackupAndRestore, AtomicWeightsCheckpoint
from kmlm.training import NonFiniteLossError, StopOnNonFiniteLoss
from tests.helpers import kill_during_training, logged_epochs, write_corpus
from tests.cli.test_main import ENGLISH

STEPS_PER_EPOCH = 4


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def _data(rows=STEPS_PER_EPOCH * 2):
    rng = np.random.default_rng(0)
    return rng.normal(size=(rows, 3)).astype("float32"), rng.normal(size=(rows, 2)).astype("float32")


class _KillAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_backup_restores_weights_optimizer_and_epoch_and_ignores_a_half_written_file(tmp_path):
    x, y = _data()
    backup = str(tmp_path / "backup")
    first = _model()
    with pytest.raises(KeyboardInterrupt):
        first.fit(x, y, batch_size=2, epochs=5, verbose=0, callbacks=[AtomicBackupAndRestore(backup), _KillAt(2)])
    assert json.loads((tmp_path / "backup" / "state.json").read_text()) == {"epoch": 2, "weights": "epoch-2.weights.h5"}
    # A kill while the next backup was written leaves only a temporary file, never read.
    (tmp_path / "backup" / ".partial-99-epoch-3.weights.h5").write_bytes(b"\x89HDF\r\n half")
    assert sorted(os.listdir(backup)) == [".partial-99-epoch-3.weights.h5", "epoch-2.weights.h5", "state.json"]

    second = _model()
    resumed = AtomicBackupAndRestore(backup)
    resumed.set_model(second)
    resumed.on_train_begin()
    assert second._initial_epoch == 2
    assert int(second.optimizer.iterations.numpy()) == 2 * STEPS_PER_EPOCH
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(first.optimizer.variables, second.optimizer.variables):  # Adam moments too
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))

    third = _model()
    history = third.fit(x, y, batch_size=2, epochs=5, verbose=0, callbacks=[AtomicBackupAndRestore(backup)])
    assert len(history.history["loss"]) == 3  # epochs 3 to 5
    assert int(third.optimizer.iterations.numpy()) == 5 * STEPS_PER_EPOCH
    assert not os.path.exists(backup)  # removed when training finished


class _StopAfterStep(keras.callbacks.Callback):
    """Backs up mid-epoch after global step `step` and stops the fit there, as SIGTERM does."""

    def __init__(self, backup, step):
        super().__init__()
        self.backup = backup
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            self.backup.backup_now()
            raise KeyboardInterrupt


def test_a_mid_epoch_backup_resumes_the_rest_of_its_epoch_and_ends_as_an_uninterrupted_run(tmp_path):
    import tensorflow as tf

    x, y = _data(2 * STEPS_PER_EPOCH * 3)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(2).repeat()

    uninterrupted = _model()
    uninterrupted.fit(batches, steps_per_epoch=STEPS_PER_EPOCH, epochs=3, verbose=0)

    backup_dir = str(tmp_path / "backup")
    first, backup = _model(), AtomicBackupAndRestore(backup_dir)
    stopped_at = STEPS_PER_EPOCH + 3  # 3 batches into epoch 2
    with pytest.raises(KeyboardInterrupt):
        first.fit(batches, steps_per_epoch=STEPS_PER_EPOCH, epochs=3, verbose=0,
                  callbacks=[backup, _StopAfterStep(backup, stopped_at)])
    assert json.loads((tmp_path / "backup" / "state.json").read_text()) == {
        "epoch": 1, "weights": "epoch-1-batch-3.weights.h5", "batches": 3}
    assert AtomicBackupAndRestore.saved_position(backup_dir) == (1, 3)
    assert sorted(os.listdir(backup_dir)) == ["epoch-1-batch-3.weights.h5", "state.json"]

    second = _model()
    # The input continues after the backed-up step, as the pretraining job arranges.
    history = second.fit(batches.skip(stopped_at), steps_per_epoch=STEPS_PER_EPOCH, epochs=3, verbose=0,
                         callbacks=[AtomicBackupAndRestore(backup_dir)])
    assert len(history.history["loss"]) == 2  # the rest of epoch 2, then epoch 3
    assert int(second.optimizer.iterations.numpy()) == 3 * STEPS_PER_EPOCH
    for a, b in zip(uninterrupted.weights + uninterrupted.optimizer.variables,
                    second.weights + second.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))


def test_replace_atomically_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.weights.h5"
    path.write_bytes(b"old")

    def dies_half_way(tmp):
        with open(tmp, "wb") as file:
            file.write(b"new but incomplete")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(str(path), dies_half_way)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["last.weights.h5"]


def test_non_finite_loss_stops_at_once_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    import tensorflow as tf

    x, y = _data(2 * STEPS_PER_EPOCH * 3)
    x[2 * (STEPS_PER_EPOCH + 1)] = np.nan  # in the 2nd batch of epoch 2, global step 6 (batches of 2 rows)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    model = _model()
    path = str(tmp_path / "last.weights.h5")
    checkpoint = AtomicWeightsCheckpoint(path)
    backup = str(tmp_path / "backup")
    stop = StopOnNonFiniteLoss(STEPS_PER_EPOCH, lambda: f"{path} (epoch {checkpoint.last_epoch})")
    with pytest.raises(NonFiniteLossError) as error:
        model.fit(dataset, steps_per_epoch=STEPS_PER_EPOCH, epochs=3, verbose=0,
                  callbacks=[stop, AtomicBackupAndRestore(backup), checkpoint])
    assert str(error.value) == (
        f"training stopped at step {STEPS_PER_EPOCH + 2}: the loss became nan; the last good checkpoint is "
        f"{path} (epoch 1); lower --learning-rate or use --precision float32"
    )
    # Neither the checkpoint nor the backup took the broken weights.
    assert AtomicBackupAndRestore.saved_epoch(backup) == 1
    good = _model()
    good.load_weights(path)
    assert all(np.isfinite(w.numpy()).all() for w in good.weights)


@pytest.mark.slow
def test_pretrain_reports_a_diverging_run(tmp_path, capsys):
    from kmlm.cli.main import main

    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH)
    out = tmp_path / "run"
    code = main(["pretrain", "--corpus", corpus, "--out", str(out), "--preset", "tiny", "--seq-len", "32",
                 "--batch-size", "8", "--vocab-size", "300", "--steps", "12", "--log-points", "6", "--no-jit",
                 "--eval-batches", "0", "--learning-rate", "1e30", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    match = re.fullmatch(
        r"kmlm pretrain: error: training stopped at step (\d+): the loss became (nan|inf|-inf); the last good "
        r"checkpoint is (.*); lower --learning-rate or use --precision float32", err)
    assert match, err
    step, checkpoint = int(match.group(1)), match.group(3)
    good = re.fullmatch(r"(.*last\.weights\.h5) \(step (\d+); re-running resumes from the backup of that step\)",
                        checkpoint)
    if good:  # at least one epoch finished before the loss broke
        assert os.path.isfile(good.group(1)) and int(good.group(2)) < step
    else:
        assert checkpoint == "none (no epoch finished before it)" and step <= 2
    assert not (out / "model.keras").exists()


@pytest.mark.slow
def test_a_killed_sentence_order_run_resumes_where_its_backup_left_it(tmp_path):
    import subprocess
    import sys

    from kmlm.run_directory import load_run, load_sentence_heads

    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH * 4)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "kmlm", "pretrain", "--objective", "mlm+sop", "--corpus", corpus,
               "--out", str(out), "--steps", "400", "--preset", "tiny", "--seq-len", "32", "--batch-size", "8",
               "--vocab-size", "300", "--log-points", "40", "--eval-batches", "0", "--no-jit"]
    epochs_before = kill_during_training(command, out, epochs=3)
    assert not (out / "model.keras").exists() and not (out / "pooler.safetensors").exists()
    assert epochs_before and epochs_before[-1] < 39

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming the unfinished run in {out}" in result.stdout.splitlines()
    epochs = logged_epochs(out)
    resumed_at = epochs[len(epochs_before)]
    assert 0 < resumed_at <= epochs_before[-1] + 1  # continued from the backup, did not start over
    assert epochs[-1] == 39 and sorted(set(epochs)) == list(range(40))
    assert not (out / "backup").exists()

    run = load_run(str(out))  # a complete model.keras, in safe mode
    assert run.config.training["objective"] == "mlm+sop" and run.has_masked_lm_head
    heads = load_sentence_heads(str(out))
    hidden = run.model_config.hidden_dim
    assert {name: value.shape for name, value in heads.items()} == {
        "pooler/kernel": (hidden, hidden), "pooler/bias": (hidden,),
        "next_sentence/kernel": (hidden, 2), "next_sentence/bias": (2,),
    }
    assert all(np.isfinite(value).all() for value in heads.values())
    with open(out / "evaluation.json", encoding="utf-8") as file:
        assert json.load(file)["masked_tokens"] > 0

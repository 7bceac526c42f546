"""Callbacks that keep a pretraining run resumable: atomic backups and checkpoints.

Every file is written through `kmlm.files.replace_atomically`, so a kill at any moment
leaves either the previous file or the new one, never a file that looks complete but is not.
"""

import json
import math
import os
import shutil

import keras
import numpy as np

from kmlm.files import replace_atomically, write_json_atomically


def weights_bytes(model, optimizer=True):
    """The bytes of the model's variables (and its optimizer's): about the size of its
    `.weights.h5` file, checked against the free space before writing one."""
    variables = list(model.weights)
    if optimizer and model.optimizer is not None:
        variables += list(model.optimizer.variables)
    return sum(np.dtype(v.dtype).itemsize * math.prod(v.shape) for v in variables)


class AtomicBackupAndRestore(keras.callbacks.Callback):
    """`BackupAndRestore` whose backup survives a kill at any moment.

    At the end of every epoch it writes `epoch-N.weights.h5` (model and optimizer
    variables: weights, Adam moments, the step counter that drives the learning-rate
    schedule) under a temporary name, renames it into place, then atomically rewrites
    `state.json`, which names that file. On `on_train_begin` it loads the file that
    `state.json` names and sets the model's initial epoch, which `model.fit` and
    `kmlm.pretraining.distributed.fit_distributed` both honour. The backup directory is removed when
    training ends normally (or, with `remove_at_end=False`, by the caller once the trained
    model is saved, so that a kill during that save still finds the backup).

    `backup_now()` also backs up in the middle of an epoch (on SIGTERM,
    `kmlm.termination.BackupOnTermination`): `state.json` then records the batches of the
    epoch already trained, and a resumed run trains only the rest of that epoch (its input
    must continue after those batches too).

    Args:
        backup_dir: Directory of the backup (its own; nothing else may write there).
        save: Whether this process writes backups (False on non-chief workers, which only
            restore from the chief's).
        remove_at_end: Whether `on_train_end` removes the backup.

    Example:
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    >>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[AtomicBackupAndRestore("run/backup")])
    >>> int(model.optimizer.iterations.numpy()), os.path.exists("run/backup")  # removed once training ended
    (2, False)
    """

    STATE_FILE = "state.json"

    def __init__(self, backup_dir, save=True, remove_at_end=True):
        super().__init__()
        self.backup_dir = backup_dir
        self.save = save
        self.remove_at_end = remove_at_end
        self._epoch = 0
        self._batches = 0  # batches of the current epoch trained, an interrupted process's included
        self._resumed_batches = 0  # of the epoch a mid-epoch backup resumes
        self._ends_epoch = False
        self._saved = None  # the (epoch, batches) of the last backup written

    @classmethod
    def read_state(cls, backup_dir):
        """The saved state `{"epoch": N, "weights": FILE}`, or None when there is no backup."""
        path = os.path.join(backup_dir, cls.STATE_FILE)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as file:
            try:
                state = json.load(file)
            except json.JSONDecodeError as error:
                raise ValueError(f"backup state {path!r} is not valid JSON ({error}); delete {backup_dir!r} to restart the run") from None
        if (not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or "weights" not in state
                or not isinstance(state.get("batches", 0), int)):
            raise ValueError(f"backup state {path!r} is not a kmlm backup; delete {backup_dir!r} to restart the run")
        return state

    @classmethod
    def saved_epoch(cls, backup_dir):
        """Epochs completed by the backed-up run (0 without a backup)."""
        state = cls.read_state(backup_dir)
        return 0 if state is None else state["epoch"]

    @classmethod
    def saved_position(cls, backup_dir):
        """(epochs completed, batches of the next epoch trained) by the backed-up run; (0, 0)
        without a backup."""
        state = cls.read_state(backup_dir)
        return (0, 0) if state is None else (state["epoch"], state.get("batches", 0))

    def on_train_begin(self, logs=None):
        state = self.read_state(self.backup_dir)
        if state is None:
            return
        weights = os.path.join(self.backup_dir, state["weights"])
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights)
        self.model._initial_epoch = state["epoch"]
        self._resumed_batches = state.get("batches", 0)
        self._saved = (state["epoch"], self._resumed_batches)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._batches = epoch, self._resumed_batches

    def on_train_batch_end(self, batch, logs=None):
        self._batches = self._resumed_batches + batch + 1
        if self._resumed_batches and self._batches >= self.params["steps"] and not self.model.stop_training:
            # The rest of a mid-epoch backup's epoch is trained: end the epoch (not the run) here.
            self.model.stop_training = self._ends_epoch = True

    def on_epoch_end(self, epoch, logs=None):
        if self._ends_epoch:
            self.model.stop_training = self._ends_epoch = False
        self._resumed_batches = 0
        self._epoch, self._batches = epoch + 1, 0
        self.write(epoch + 1, 0)

    def position(self):
        """(epochs completed, batches of the next epoch trained) of the step just trained."""
        return self._epoch, self._batches

    def backup_now(self):
        """Backs up the step just trained, unless it is backed up already."""
        if self.position() != self._saved:
            self.write(*self.position())

    def write(self, epoch, batches):
        """Writes the backup of `batches` into epoch `epoch` (0-based: `epoch` epochs done)."""
        if not self.save:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{epoch}.weights.h5" if not batches else f"epoch-{epoch}-batch-{batches}.weights.h5"
        replace_atomically(os.path.join(self.backup_dir, name), self.model.save_weights, weights_bytes(self.model))
        state = {"epoch": epoch, "weights": name}
        if batches:
            state["batches"] = batches
        write_json_atomically(os.path.join(self.backup_dir, self.STATE_FILE), state)
        self._saved = (epoch, batches)
        for old in os.listdir(self.backup_dir):
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.backup_dir, old))

    def on_train_end(self, logs=None):
        if self.save and self.remove_at_end:
            shutil.rmtree(self.backup_dir, ignore_errors=True)


class AtomicWeightsCheckpoint(keras.callbacks.Callback):
    """Saves the model's weights to `path` (a `.weights.h5` file) after every epoch, atomically.

    Example:
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> checkpoint = AtomicWeightsCheckpoint("last.weights.h5")
    >>> history = model.fit(np.ones((8, 3)), np.zeros((8, 1)), epochs=3, verbose=0, callbacks=[checkpoint])
    >>> checkpoint.last_epoch, os.path.isfile("last.weights.h5")
    (3, True)
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.last_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        replace_atomically(self.path, self.model.save_weights, weights_bytes(self.model))
        self.last_epoch = epoch + 1

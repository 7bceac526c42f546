"""A full disk while writing a backup, checkpoint, model or export: one line naming the path and
the space, the previous version kept whole and loadable, no half-written file left behind."""

import collections
import errno
import os
import subprocess

import keras
import numpy as np
import pytest

from kmlm import files
from kmlm.cli.main import main, one_line
from kmlm.files import DiskFullError, replace_atomically
from kmlm.pretraining.checkpointing import AtomicBackupAndRestore
from tests.helpers import logged_epochs
from tests.tiny_run import make_tiny_run


def _fills_the_disk(tmp):
    with open(tmp, "wb") as file:
        file.write(b"x" * 3_000_000)
    raise OSError(errno.ENOSPC, "No space left on device", tmp)


def test_a_full_disk_keeps_the_previous_file_and_says_what_is_needed_and_free(tmp_path, monkeypatch):
    path = tmp_path / "model.keras"
    path.write_bytes(b"the previous model")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 1_200_000, 1_200_000))
    with pytest.raises(DiskFullError) as error:
        replace_atomically(str(path), _fills_the_disk)
    assert one_line(error.value) == (
        f"no space left on the device to write {str(path)!r}: it needs about 3.0 MB, 1.2 MB are free in {tmp_path}; "
        "nothing was replaced (the previous version is kept): free space and re-run the same command")
    assert path.read_bytes() == b"the previous model" and os.listdir(tmp_path) == ["model.keras"]


def test_a_full_disk_outside_the_atomic_writes_is_one_line_naming_the_file():
    error = OSError(errno.ENOSPC, "No space left on device", "run/metrics.csv")
    assert one_line(error) == "no space left on the device to write 'run/metrics.csv': free space and re-run the same command"


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs (needs root; skipped where it cannot be mounted)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def _fill(folder, leave):
    """Fills `folder`'s file system until about `leave` bytes are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(os.path.join(folder, "filler"), "wb") as file:
        file.write(b"\0" * max(0, free - leave))


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(100)])  # a backup of about 130 kB
    model.compile(optimizer="adam", loss="mse")
    return model


def test_a_backup_on_a_full_disk_fails_in_one_line_and_the_previous_backup_still_loads(small_disk):
    x, y = np.ones((8, 100), "float32"), np.zeros((8, 100), "float32")
    backup_dir = str(small_disk / "backup")
    model = _model()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[AtomicBackupAndRestore(backup_dir, remove_at_end=False)])
    saved = [w.numpy().copy() for w in model.weights]
    _fill(small_disk, leave=20_000)
    with pytest.raises(DiskFullError) as error:
        model.fit(x, y, epochs=3, verbose=0, callbacks=[AtomicBackupAndRestore(backup_dir, remove_at_end=False)])
    message = one_line(error.value)
    assert message.startswith(f"no space left on the device to write '{backup_dir}/epoch-2.weights.h5': it needs about "
                              "0.1 MB, 0.0 MB are free in "), message
    assert sorted(os.listdir(backup_dir)) == ["epoch-1.weights.h5", "state.json"]
    assert AtomicBackupAndRestore.saved_position(backup_dir) == (1, 0)
    restored = _model()
    resume = AtomicBackupAndRestore(backup_dir)
    resume.set_model(restored)
    resume.on_train_begin()
    for a, b in zip(saved, restored.weights):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.slow
def test_an_export_on_a_full_disk_fails_in_one_line_and_leaves_the_previous_version_whole(tmp_path, small_disk,
                                                                                          capsys):
    import tensorflow as tf

    run = make_tiny_run(tmp_path / "run")
    base = str(small_disk / "models")
    assert main(["export", run, "--out", base]) == 0
    capsys.readouterr()
    _fill(small_disk, leave=20_000)
    assert main(["export", run, "--out", base]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(
        f"kmlm export: error: no space left on the device to write '{base}/2': it needs at least "), error
    assert sorted(os.listdir(base)) == ["1"]  # no temporary directory, no claim
    assert "serving_default" in tf.saved_model.load(os.path.join(base, "1")).signatures


@pytest.mark.parametrize("command", ["word2vec", "glove"])
def test_word_vectors_on_a_full_disk_fail_in_one_line_and_keep_the_previous_vectors(command, tmp_path, small_disk,
                                                                                    capsys):
    from tests.helpers import write_corpus
    from tests.wordvec.corpora import planted_groups

    corpus = write_corpus(tmp_path / "corpus.txt", planted_groups(300))
    out = small_disk / command
    argv = [command, "--corpus", corpus, "--out", str(out), "--dim", "64", "--epochs", "1", "--min-count", "2",
            "--quiet"]
    assert main(argv) == 0
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    capsys.readouterr()
    _fill(small_disk, leave=12_000)  # room for the lock file, not for vectors.txt (about 60 words x 64 numbers)
    assert main([*argv, "--seed", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(
        f"kmlm {command}: error: no space left on the device to write '{out}/vectors.txt': it needs about "), error
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before  # no half file, nothing replaced


@pytest.mark.slow
def test_pretrain_on_a_full_disk_fails_in_one_line_and_the_same_command_finishes_once_there_is_space(
        tmp_path, small_disk, capsys):
    from tests.cli.test_main import ENGLISH
    from tests.helpers import write_corpus

    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH)
    out = small_disk / "run"
    argv = ["pretrain", "--corpus", corpus, "--out", str(out), "--steps", "20", "--log-points", "2", "--preset", "tiny",
            "--seq-len", "32", "--batch-size", "8", "--hidden-dim", "32", "--num-heads", "2",
            "--intermediate-dim", "64", "--vocab-size", "300", "--eval-batches", "1", "--no-jit", "--quiet"]
    _fill(small_disk, leave=60_000)  # room for the vocabulary and config, not for a backup with its optimizer state
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(
        f"kmlm pretrain: error: no space left on the device to write '{out}/"), error
    assert error[0].endswith("free space and re-run the same command"), error
    assert not any(name.startswith(".") or name.endswith((".tmp", ".partial")) for _, _, names in os.walk(out)
                   for name in names), list(os.walk(out))
    os.remove(small_disk / "filler")
    assert main(argv) == 0
    assert os.path.isfile(out / "model.keras") and not os.path.exists(out / "backup")
    assert logged_epochs(str(out)) == [0, 1]


def test_a_lock_file_on_a_full_disk_is_one_line_naming_it_and_leaves_nothing_behind(tmp_path, small_disk, capsys):
    from kmlm.output_lock import lock_path

    out = small_disk / "vectors"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c a b c\n", encoding="utf-8")
    _fill(small_disk, leave=0)
    assert main(["word2vec", "--corpus", str(corpus), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(
        f"kmlm word2vec: error: no space left on the device to write {lock_path(str(out))!r}: it needs about "), error
    assert os.listdir(small_disk) == ["filler"]  # the fixture's unmount then also proves no file is left open

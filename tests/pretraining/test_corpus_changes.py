"""A corpus file removed or truncated while `kmlm pretrain` reads it: one line naming the file,
the backup kept, and a re-run that resumes from that backup once the file is back."""

import os
import re
import threading
import time

import pytest
import tensorflow as tf

from kmlm.pipelines import CorpusChangedError, load_documents
from tests.cli.test_main import ENGLISH
from tests.helpers import logged_epochs, run_cli, write_corpus

STEPS, EPOCHS = 100, 4  # the corpus is read again every few steps, so a removal is seen within an epoch
COMMAND = ["pretrain", "--steps", str(STEPS), "--log-points", str(EPOCHS), "--preset", "tiny", "--seq-len", "32",
           "--batch-size", "8", "--hidden-dim", "32", "--num-heads", "2", "--intermediate-dim", "64",
           "--vocab-size", "300", "--eval-batches", "1", "--no-jit", "--quiet"]


def _read_all(documents):
    return [text.decode() for text in documents.as_numpy_iterator()]


def test_a_pass_over_a_removed_or_truncated_file_names_it(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    first = write_corpus(folder / "a.txt", ENGLISH[:10])
    second = write_corpus(folder / "b.txt", ENGLISH[10:20])
    size = os.path.getsize(second)
    documents = load_documents(str(folder))
    assert _read_all(documents) == ENGLISH[:20]

    with open(second, "r+", encoding="utf-8") as file:
        file.truncate(size // 2)
    with pytest.raises(tf.errors.OpError) as raised:
        _read_all(documents)
    assert str(CorpusChangedError.within(raised.value)) == (
        f"corpus file {second!r} changed while it was being read: it had {size:,} bytes when the corpus was "
        f"loaded, {size // 2:,} now")

    os.remove(first)
    with pytest.raises(tf.errors.OpError) as raised:
        _read_all(documents)
    assert str(CorpusChangedError.within(raised.value)) == f"corpus file {first!r} was removed while it was being read"


def _remove_after_first_backup(corpus, out, removed, timeout=120):
    """Removes `corpus` as soon as the run in `out` has written its first backup."""
    state = os.path.join(out, "backup", "state.json")
    deadline = time.time() + timeout
    while time.time() < deadline and not os.path.exists(state):
        time.sleep(0.01)
    if os.path.exists(state):
        os.remove(corpus)
        removed.set()


@pytest.mark.slow
def test_pretrain_stops_in_one_line_when_a_corpus_file_is_removed_and_resumes_once_it_is_back(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH)
    text = open(corpus, encoding="utf-8").read()
    out = str(tmp_path / "run")
    command = [*COMMAND, "--corpus", corpus, "--out", out]
    removed = threading.Event()
    remover = threading.Thread(target=_remove_after_first_backup, args=(corpus, out, removed))
    remover.start()
    try:
        status, _, errors = run_cli(command, capsys)
    finally:
        remover.join()
    assert removed.is_set() and status == 2, errors
    backup = os.path.join(out, "backup")
    line = re.fullmatch(
        rf"kmlm pretrain: error: training stopped at step (\d+): corpus file {re.escape(repr(corpus))} was removed "
        rf"while it was being read; the backup of step (\d+) in {re.escape(backup)} is kept: put the file back and "
        rf"re-run the same command to resume from it\n", errors)
    assert line, errors
    stopped, kept = int(line.group(1)), int(line.group(2))
    steps_per_epoch = STEPS // EPOCHS
    assert kept % steps_per_epoch == 0 and 0 < kept < stopped < STEPS
    assert sorted(os.listdir(backup)) == [f"epoch-{kept // steps_per_epoch}.weights.h5", "state.json"]
    assert not os.path.exists(os.path.join(out, "model.keras"))

    with open(corpus, "w", encoding="utf-8") as file:  # the file is back
        file.write(text)
    status, output, errors = run_cli(command, capsys)
    assert status == 0, errors
    assert os.path.isfile(os.path.join(out, "model.keras")) and not os.path.exists(backup)
    # The re-run trained only the epochs after the backup: every epoch is logged once.
    assert logged_epochs(out) == list(range(EPOCHS))

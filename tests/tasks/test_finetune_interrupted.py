"""A `kmlm finetune` stopped by SIGTERM or killed: nothing half-written stays in --out, and
re-running the same command finishes."""

import json
import signal
import subprocess
import sys

import pytest

from kmlm.tasks.finetune import UNFINISHED_FILE, Tasker
from kmlm.termination import EXIT_STATUS
from tests.helpers import signal_during_training
from tests.task_data import topic_examples, write_jsonl
from tests.tiny_run import make_tiny_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("finetune")
    return make_tiny_run(base / "run"), write_jsonl(base / "train.jsonl", topic_examples(128, 1))


def _command(inputs, out):
    run, train = inputs
    return [sys.executable, "-m", "kmlm", "finetune", run, "--task", "classify", "--train", train, "--out", str(out),
            "--seq-len", "32", "--batch-size", "16", "--epochs", "60", "--quiet"]


def _finishes(inputs, out):
    result = subprocess.run(_command(inputs, out), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(path.name for path in out.iterdir()) == ["metrics.csv", "model.keras", "task.json", "vocab.txt"]
    assert json.loads((out / "task.json").read_text())["metrics"]["epochs"] == 60
    assert Tasker.load(str(out)).class_probabilities(["read the file"]).shape == (1, 2)


def test_sigterm_removes_the_unfinished_output_and_says_to_rerun(tmp_path, inputs):
    out = tmp_path / "tuned"
    status, errors = signal_during_training(_command(inputs, out), out, signal.SIGTERM, backup=False)
    assert status == EXIT_STATUS
    assert errors[-1] == (f"kmlm finetune: stopped by SIGTERM; removed the unfinished {out} (fine-tuning keeps no "
                          "backup); re-run the same command to fine-tune again")
    assert not out.exists()
    _finishes(inputs, out)


def test_a_killed_run_leaves_a_marked_directory_that_the_rerun_replaces(tmp_path, inputs):
    out = tmp_path / "tuned"
    status, _ = signal_during_training(_command(inputs, out), out, signal.SIGKILL, backup=False)
    assert status == -signal.SIGKILL
    assert (out / UNFINISHED_FILE).exists() and not (out / "task.json").exists()
    _finishes(inputs, out)

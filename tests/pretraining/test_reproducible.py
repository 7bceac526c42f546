"""The same `kmlm pretrain` command twice, in two processes, writes the same run: vocabulary,
metrics.csv and held-out metrics (on CPU, with the default XLA-compiled step)."""

import json
import os
import subprocess
import sys

import pytest

from tests.cli.test_main import ENGLISH
from tests.helpers import write_corpus


@pytest.mark.slow
def test_two_runs_of_one_command_write_identical_metrics(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH * 4)
    runs = []
    for hash_seed in ("1", "2"):  # the vocabulary must not depend on Python's hash order either
        out = tmp_path / f"run-{hash_seed}"
        command = [sys.executable, "-m", "kmlm", "pretrain", "--corpus", corpus, "--out", str(out), "--steps", "60",
                   "--log-points", "3", "--preset", "tiny", "--seq-len", "32", "--batch-size", "8",
                   "--hidden-dim", "32", "--num-heads", "2", "--intermediate-dim", "64", "--vocab-size", "300",
                   "--eval-batches", "2", "--seed", "7", "--quiet"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert result.returncode == 0, result.stderr[-2000:]
        runs.append(out)
    first, second = [((out / "vocab.txt").read_text(), (out / "metrics.csv").read_text(),
                      json.loads((out / "evaluation.json").read_text())) for out in runs]
    assert first[0] == second[0] and first[1] == second[1]
    assert len(first[1].splitlines()) == 4  # a header and 3 epochs
    assert first[2].pop("train_seconds") > 0 and second[2].pop("train_seconds") > 0  # wall-clock time differs
    assert first[2] == second[2]


@pytest.mark.parametrize("flag", [False, True])
def test_deterministic_turns_on_op_determinism_and_runs_the_step_without_xla(flag, tmp_path, monkeypatch, capsys):
    import kmlm.pretraining.job
    import kmlm.training
    from kmlm.cli.main import main

    enabled, given = [], []
    monkeypatch.setattr(kmlm.training, "enable_determinism", lambda: enabled.append(True))

    def pretrain(out, settings, verbose):
        given.append(settings)
        return {"masked_accuracy": 0.5, "loss": 1.0, "perplexity": 2.7, "masked_tokens": 10}

    monkeypatch.setattr(kmlm.pretraining.job, "pretrain", pretrain)
    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH)
    command = ["pretrain", "--corpus", corpus, "--out", str(tmp_path / "run"), "--steps", "10", "--quiet"]
    assert main(command + (["--deterministic"] if flag else [])) == 0
    assert enabled == ([True] if flag else [])
    assert len(given) == 1 and given[0].jit_compile is (not flag)  # Keras runs no XLA step under op determinism

"""`benchmarks/kerashub_swap.py` end to end on tiny settings: a 2-step kmlm run gives the
corpus, vocabulary and shape; one mixed arm trains 2 steps and reports a held-out score in
the common format. Bad arguments fail with one clear message."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import common  # noqa: E402
import kerashub_swap  # noqa: E402

pytest.importorskip("keras_hub")


def _corpus(path):
    words = "the file list value name path error module string number".split()
    documents = [" ".join(words[(i + j) % len(words)] for j in range(12)) + "." for i in range(300)]
    path.write_text("\n\n".join(documents) + "\n")
    return str(path)


def test_a_mixed_arm_trains_and_reports_its_held_out_score(tmp_path, capsys):
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "kmlm", "pretrain", "--corpus", _corpus(tmp_path / "corpus.txt"),
                    "--preset", "tiny", "--steps", "2", "--vocab-size", "200", "--quiet", "--out", str(run)],
                   check=True, cwd=ROOT, capture_output=True)
    jsonl = tmp_path / "swap.jsonl"
    kerashub_swap.main([str(run), "--steps", "2", "--seq-len", "32", "--batch-size", "4", "--eval-seq-len", "32",
                        "--model", "kerashub", "--loss", "kerashub", "--kmlm-beta-2", "0.999", "--kmlm-clip-norm", "0",
                        "--jsonl", str(jsonl)])
    entries = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [e["measurement"] for e in entries] == ["masked_accuracy", "loss"]
    for entry in entries:
        common.validate(entry)
        assert entry["arm"] == "model=kerashub data=kmlm optimizer=kmlm loss=kerashub"
        assert entry["kmlm_optimizer"] == {"beta_2": 0.999, "epsilon": 1e-6, "clip_norm": 0.0, "weight_decay": 0.01}
        assert entry["steps"] == 2 and entry["masked_tokens"] > 0
    assert 0.0 <= entries[0]["value"] <= 1.0 and entries[1]["value"] > 0.0


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be"),
    (["--learning-rate", "0"], "--learning-rate must be positive"),
    (["--model", "bert"], "invalid choice: 'bert'"),
])
def test_bad_arguments_fail_with_one_message(tmp_path, capsys, argv, message):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        kerashub_swap.parse_args([str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_directory_that_is_not_a_run_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        kerashub_swap.parse_args([str(tmp_path)])
    assert f"{tmp_path} is not a finished kmlm run directory (no config.json)" in capsys.readouterr().err

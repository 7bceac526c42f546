"""End-to-end `kmlm` commands on tiny settings, and the one-line errors on bad input."""

import json
import os
import subprocess
import sys

import pytest

from kmlm.cli.main import main
from kmlm.pipelines import SPECIAL_TOKENS
from tests.helpers import run_cli, write_corpus

TINY = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--vocab-size", "300", "--log-points", "4"]
ENGLISH = [
    f"The {animal} {verb} over the {thing}. It was a {adjective} day for the {animal}."
    for animal in ("cat", "dog", "fox", "bird", "horse")
    for verb in ("jumped", "walked", "ran", "looked")
    for thing in ("fence", "river", "wall")
    for adjective in ("sunny", "quiet")
]
CHINESE = [
    f"{a}在{b}里{c}。今天天气很好，我们一起去{b}。"
    for a in ("我", "你", "他", "她")
    for b in ("公园", "学校", "家", "城市", "图书馆")
    for c in ("读书", "散步", "吃饭", "学习")
]


_run = run_cli


@pytest.fixture(scope="module")
def english_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("english")
    corpus = write_corpus(base / "corpus.txt", ENGLISH)
    out = str(base / "run")
    assert main(["pretrain", "--corpus", corpus, "--steps", "40", "--out", out, "--quiet", *TINY]) == 0
    return out, corpus


@pytest.mark.slow
def test_pretrain_writes_a_complete_run_directory(english_run):
    out, _ = english_run
    for name in ("config.json", "vocab.txt", "model.keras", "metrics.csv", "curves.png", "evaluation.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert os.listdir(os.path.join(out, "checkpoints")) and os.listdir(os.path.join(out, "logs"))
    assert not os.path.exists(os.path.join(out, "backup"))  # removed once training finished
    with open(os.path.join(out, "config.json")) as f:
        settings = json.load(f)
    assert settings["data"]["seq_len"] == 32 and settings["model"]["num_layers"] == 2
    assert settings["training"]["total_steps"] == 40
    with open(os.path.join(out, "vocab.txt"), encoding="utf-8") as f:
        assert [line.rstrip("\n") for line in f][:5] == list(SPECIAL_TOKENS)
    with open(os.path.join(out, "metrics.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + 4  # header + one row per epoch
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_evaluate_is_deterministic_and_matches_the_end_of_training(english_run, capsys):
    out, _ = english_run
    code, stdout, _ = _run(["evaluate", out, "--json"], capsys)
    assert code == 0
    first = json.loads(stdout)
    code, stdout, _ = _run(["evaluate", out, "--json"], capsys)
    assert json.loads(stdout) == first
    with open(os.path.join(out, "evaluation.json")) as f:
        at_end = json.load(f)
    assert first["masked_tokens"] == at_end["masked_tokens"]
    assert first["loss"] == pytest.approx(at_end["loss"], rel=1e-5)
    assert 0.0 <= first["masked_accuracy"] <= 1.0


@pytest.mark.slow
def test_fill_mask_prints_top_k_predictions(english_run, capsys):
    out, _ = english_run
    code, stdout, _ = _run(["fill-mask", out, "The cat jumped over the [MASK].", "--top-k", "3", "--json"], capsys)
    assert code == 0
    result = json.loads(stdout)
    predictions = result["masks"][0]["predictions"]
    assert len(predictions) == 3
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0
    assert not any(p["token"] in SPECIAL_TOKENS for p in predictions)
    assert predictions[0]["token"] in result["filled"]
    code, stdout, _ = _run(["fill-mask", out, "a [MASK] and a [MASK]"], capsys)
    assert code == 0 and "[MASK] 1:" in stdout and "[MASK] 2:" in stdout


@pytest.mark.slow
def test_chinese_corpus_end_to_end(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "zh.txt", CHINESE)
    out = str(tmp_path / "run")
    code, _, _ = _run(["pretrain", "--corpus", corpus, "--steps", "12", "--out", out, "--quiet", *TINY], capsys)
    assert code == 0
    with open(os.path.join(out, "vocab.txt"), encoding="utf-8") as f:
        vocabulary = [line.rstrip("\n") for line in f]
    assert {"公", "园", "学", "校"} <= set(vocabulary)  # every CJK character is its own token
    code, stdout, _ = _run(["fill-mask", out, "我在公[MASK]里散步。", "--json"], capsys)
    assert code == 0
    top = json.loads(stdout)["masks"][0]["predictions"][0]["token"]
    assert top in vocabulary and top not in SPECIAL_TOKENS


@pytest.mark.slow
def test_text_with_box_drawing_emoji_and_symbols_trains(tmp_path, capsys):
    """A table drawn in box characters (rows of 86 symbols, longer than the tokenizer accepts
    as one token) once crashed pretraining right after the vocabulary was learned."""
    from tests.pipelines.test_vocabulary import SYMBOLS

    corpus = write_corpus(tmp_path / "table.txt", SYMBOLS + ENGLISH[:40])
    out = tmp_path / "run"
    code, _, err = _run(["pretrain", "--corpus", corpus, "--steps", "4", "--out", str(out), "--quiet",
                         *TINY[:-2], "--log-points", "1", "--eval-batches", "0", "--no-jit"], capsys)
    assert code == 0, err
    tokens = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert {"─", "😀", "★", "∑"} <= set(tokens)
    assert max(len(token.removeprefix("##").encode()) for token in tokens) <= 100
    assert (out / "model.keras").exists()
    code, stdout, err = _run(["fill-mask", str(out), "表格 [MASK] 😀", "--json"], capsys)
    assert code == 0, err


@pytest.mark.slow
def test_vocab_command(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", ENGLISH)
    out = str(tmp_path / "vocab.txt")
    code, stdout, _ = _run(["vocab", "--corpus", corpus, "--size", "200", "--out", out], capsys)
    assert code == 0 and "tokens to" in stdout
    with open(out, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    assert tokens[:5] == list(SPECIAL_TOKENS) and len(tokens) <= 200 and "cat" in tokens


def _pretrain_error(argv, tmp_path, capsys):
    out = str(tmp_path / "never")
    code, _, err = _run(["pretrain", *argv, "--out", out, "--quiet"], capsys)
    assert code == 2
    assert not os.path.exists(out)  # nothing half-written
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kmlm pretrain: error: ")
    return lines[0]


def test_error_missing_corpus(tmp_path, capsys):
    message = _pretrain_error(["--corpus", str(tmp_path / "nope.txt")], tmp_path, capsys)
    assert "nope.txt' does not exist" in message


def test_error_corpus_without_text(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n", encoding="utf-8")
    message = _pretrain_error(["--corpus", str(empty)], tmp_path, capsys)
    assert "no text" in message


def test_error_vocab_missing_special_token(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"t{i}" for i in range(300)]) + "\n")
    message = _pretrain_error(["--vocab", str(vocab)], tmp_path, capsys)
    assert "is missing the special token [MASK]" in message


def test_error_seq_len_above_max_position(tmp_path, capsys):
    message = _pretrain_error(["--seq-len", "1024"], tmp_path, capsys)
    assert message.endswith("seq_len=1024 exceeds the model's max_position=512; pretrain with --seq-len <= 512")


def test_error_hidden_not_divisible_by_heads(tmp_path, capsys):
    message = _pretrain_error(["--hidden-dim", "100", "--num-heads", "3"], tmp_path, capsys)
    assert "hidden_dim=100 is not divisible by num_heads=3" in message


@pytest.mark.parametrize("rate", ["0", "1.5", "-0.1"])
def test_error_mask_rate_outside_unit_interval(rate, tmp_path, capsys):
    message = _pretrain_error(["--mask-rate", rate], tmp_path, capsys)
    assert f"mask rate {float(rate)} is outside (0, 1)" in message


def test_error_unknown_preset(tmp_path, capsys):
    message = _pretrain_error(["--preset", "huge"], tmp_path, capsys)
    assert message.endswith("unknown preset 'huge'; choose one of tiny, mini, small, medium, base, large")


@pytest.mark.slow
def test_error_fill_mask_without_mask(english_run, capsys):
    out, _ = english_run
    code, _, err = _run(["fill-mask", out, "no mask here"], capsys)
    assert code == 2
    assert err.strip() == (
        "kmlm fill-mask: error: text has no [MASK] token: 'no mask here'; write [MASK] where a word should be predicted"
    )


def test_error_fill_mask_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    code, _, err = _run(["fill-mask", str(tmp_path), "a [MASK]"], capsys)
    assert code == 2
    assert err.strip() == (
        f"kmlm fill-mask: error: {str(tmp_path)!r} is not a kmlm run directory (no config.json); "
        "pass the --out of a `kmlm pretrain` run"
    )


def test_every_command_has_help():
    for command in ([], ["vocab"], ["pretrain"], ["evaluate"], ["fill-mask"]):
        result = subprocess.run([sys.executable, "-m", "kmlm", *command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.startswith("usage: kmlm")


@pytest.mark.slow
def test_pretrain_under_a_mirrored_strategy(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH)
    out = tmp_path / "run"
    code, _, err = _run(["pretrain", "--corpus", corpus, "--steps", "4", "--out", str(out), "--quiet",
                         "--distribution", "mirrored", *TINY[:-2], "--log-points", "2"], capsys)
    assert code == 0, err
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert "val_loss" in rows[0] and len(rows) == 3
    assert (out / "model.keras").exists()

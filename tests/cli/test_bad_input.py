"""The bad-input table of the README: each input gives exit status 2 and one line on stderr
(`kmlm COMMAND: error: ...`) without a traceback; `--debug` shows the traceback instead.

Cases already covered by tests/cli/test_main.py (missing corpus, corpus without text, vocabulary
without [MASK], --seq-len too long, bad hidden/heads, --mask-rate, unknown preset, fill-mask
without [MASK]) and tests/serving/test_masked_lm.py (interrupted export) are not repeated here."""

import json
import os
import shutil
import stat

import keras
import pytest

from kmlm.cli.main import main
from tests.helpers import write_corpus
from tests.cli.test_main import ENGLISH
from tests.tiny_run import make_tiny_run


def _error(argv, capsys, command=None):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    command = command or argv[0]
    assert len(lines) == 1 and lines[0].startswith(f"kmlm {command}: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0][len(f"kmlm {command}: error: "):]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("bad-input") / "run")


@pytest.fixture()
def run_copy(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "run")


def test_binary_corpus(tmp_path, capsys):
    corpus = tmp_path / "image.txt"
    corpus.write_bytes(b"\x89PNG\x00\x00\x00\rIHDR" + bytes(range(256)))
    message = _error(["pretrain", "--corpus", str(corpus), "--out", str(tmp_path / "run")], capsys)
    assert message == (
        f"corpus file {str(corpus)!r} is binary, not text (a NUL byte at offset 4); give UTF-8 text files "
        "(convert UTF-16 with iconv -f UTF-16 -t UTF-8)"
    )
    assert not (tmp_path / "run").exists()


def test_invalid_utf8_is_replaced_and_counted_not_fatal(tmp_path, capsys):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("\n\n".join(ENGLISH[:40]).encode() + b"\n\ncaf\xe9 cr\xe8me br\xfbl\xe9e\n")
    code = main(["vocab", "--corpus", str(corpus), "--size", "200", "--out", str(tmp_path / "vocab.txt")])
    out = capsys.readouterr().out
    assert code == 0
    assert out.strip().splitlines()[-1] == "replaced 4 invalid UTF-8 sequences in the corpus"


def test_vocab_file_with_a_token_too_long_for_the_tokenizer(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "─" * 86]) + "\n",
                     encoding="utf-8")
    message = _error(["pretrain", "--vocab", str(vocab), "--out", str(tmp_path / "run")], capsys)
    assert message == (
        f"vocabulary {str(vocab)!r} line 7 (id 6) holds a token of 258 UTF-8 bytes ('────────────...'); "
        "the WordPiece tokenizer accepts at most 256 bytes per token (not counting '##'): shorten or remove it"
    )
    assert not (tmp_path / "run").exists()


def test_vocabulary_that_does_not_match_the_model(run_copy, capsys):
    with open(run_copy / "vocab.txt", "a", encoding="utf-8") as file:
        file.write("extra\n")
    message = _error(["fill-mask", str(run_copy), "the [MASK] sat"], capsys)
    assert message == (
        f"{str(run_copy / 'vocab.txt')!r} has 22 tokens but the run's model has vocabulary_size=21; "
        "restore the vocab.txt that the run was trained with"
    )


def test_run_directory_from_a_newer_kmlm(run_copy, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    config["kmlm_version"] = "9.3.0"
    (run_copy / "config.json").write_text(json.dumps(config))
    message = _error(["evaluate", str(run_copy)], capsys)
    from kmlm import __version__

    assert message == (
        f"{str(run_copy / 'config.json')!r} was written by kmlm 9.3.0, which this kmlm {__version__} cannot read; "
        f"upgrade kmlm (pip install -U kmlm) or use a run written by kmlm <= {__version__}"
    )


def test_corrupted_config(run_copy, capsys):
    (run_copy / "config.json").write_text('{"model": {"hidden_dim": 32,')
    message = _error(["fill-mask", str(run_copy), "a [MASK]"], capsys)
    assert message == (f"{str(run_copy / 'config.json')!r} is not valid JSON (Expecting property name enclosed in "
                       "double quotes: line 1 column 29 (char 28))")


def test_corrupted_model_file(run_copy, capsys):
    model = run_copy / "model.keras"
    model.write_bytes(model.read_bytes()[:200])  # what a kill during a plain write would leave
    message = _error(["fill-mask", str(run_copy), "a [MASK]"], capsys)
    assert message.startswith(f"{str(model)!r} is not a readable Keras model (not a complete .keras zip archive); ")
    assert message.endswith("it is corrupted or was not written by kmlm: re-run `kmlm pretrain` with --overwrite")


def test_unfinished_run(run_copy, capsys):
    os.remove(run_copy / "model.keras")
    message = _error(["evaluate", str(run_copy)], capsys)
    assert message == (
        f"{str(run_copy)!r} has no model.keras: its training did not finish; re-run the same `kmlm pretrain` "
        "command to resume it"
    )


def test_a_model_file_with_a_lambda_layer_is_refused(run_copy, capsys):
    inputs = keras.Input((4,))
    crafted = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    crafted.save(run_copy / "model.keras")
    message = _error(["fill-mask", str(run_copy), "a [MASK]"], capsys)
    assert message == (
        f"refused to load {str(run_copy / 'model.keras')!r}: it holds Python code (a Lambda layer), which safe "
        "mode never runs; kmlm writes no such models, so do not trust this file"
    )


def test_export_version_collision(tiny_run, tmp_path, capsys):
    (tmp_path / "serving" / "1").mkdir(parents=True)
    message = _error(["export", tiny_run, "--out", str(tmp_path / "serving"), "--version", "1"], capsys)
    assert message == (
        f"version 1 already exists in {str(tmp_path / 'serving')!r}; versions are never overwritten: pass another "
        "--version or leave it out to write version 2"
    )


def test_unwritable_output_directory(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", ENGLISH)
    if os.geteuid() == 0:  # permissions do not stop root; sysfs refuses new files to everyone
        parent, out = "/sys", "/sys/kmlm-run"
    else:
        parent = tmp_path / "locked"
        parent.mkdir()
        parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
        parent, out = str(parent), str(parent / "run")
    message = _error(["pretrain", "--corpus", corpus, "--out", out], capsys)
    assert message.startswith(f"--out {out!r} cannot be written: {parent!r} refuses new files (")
    assert message.endswith("); choose a writable directory")


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "TF_CONFIG is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
                      "(char 1)); set it to e.g. "),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
         "TF_CONFIG task index 3 is outside the 1 worker address(es) of the cluster; use 0 to 0"),
    ],
)
def test_malformed_tf_config(tf_config, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    got = _error(["pretrain", "--strategy", "multi-worker", "--vocab", str(vocab), "--out", str(tmp_path / "r")], capsys)
    assert got.startswith(message)


def test_multi_worker_without_a_vocabulary(tmp_path, capsys):
    message = _error(["pretrain", "--strategy", "multi-worker", "--out", str(tmp_path / "r")], capsys)
    assert message == (
        "--strategy multi-worker needs --vocab FILE so that every worker uses the same vocabulary; "
        "learn one first with `kmlm vocab`"
    )


def test_bad_learning_rate(tmp_path, capsys):
    message = _error(["pretrain", "--learning-rate", "-0.001", "--out", str(tmp_path / "r")], capsys)
    assert message == "--learning-rate -0.001 must be a positive number, e.g. 5e-4"


def test_bad_flag_values_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--steps", "0", "--out", "x"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "kmlm pretrain: error: argument --steps: 0 is not a positive integer; see `kmlm pretrain --help`\n"
    )
    with pytest.raises(SystemExit):
        main(["pretrain", "--strategy", "ring", "--out", "x"])
    assert capsys.readouterr().err.startswith(
        "kmlm pretrain: error: argument --strategy: invalid choice: 'ring' (choose from 'default', 'mirrored', "
        "'multi-worker', 'tpu')"
    )


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(tiny_run, monkeypatch, capsys):
    import kmlm.run_directory

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(kmlm.run_directory, "load_run", broken)
    message = _error(["fill-mask", tiny_run, "a [MASK]"], capsys)
    assert message == "RuntimeError: disk on fire (run with --debug for the traceback)"
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["fill-mask", tiny_run, "a [MASK]", "--debug"])


def test_old_distribution_flag_still_works(tmp_path, capsys):
    message = _error(["pretrain", "--distribution", "multi-worker", "--out", str(tmp_path / "r")], capsys)
    assert message.startswith("--strategy multi-worker needs --vocab FILE")


# --- messages that once misled ------------------------------------------------------------


def test_negative_warmup_steps(tmp_path, capsys):
    message = _error(["pretrain", "--warmup-steps", "-3", "--steps", "10", "--out", str(tmp_path / "r")], capsys)
    assert message == "--warmup-steps -3 must be 0 or more (0: no warmup), e.g. 100"
    assert not (tmp_path / "r").exists()


def test_a_decay_outside_the_run_or_with_the_constant_schedule(tmp_path, capsys):
    message = _error(["pretrain", "--decay", "1.5", "--out", str(tmp_path / "r")], capsys)
    assert message == "--decay 1.5 must be a share of the run in (0, 1], e.g. 0.2"
    message = _error(["pretrain", "--schedule", "constant", "--decay", "0.2", "--out", str(tmp_path / "r")], capsys)
    assert message == "--decay is the length of the fall; the constant schedule has none"
    assert not (tmp_path / "r").exists()


def test_vocabulary_size_below_the_fixed_minimum(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "a.txt", ["a a a"])  # one character: the floor is fixed, not the corpus'
    message = _error(["vocab", "--corpus", corpus, "--size", "100", "--out", str(tmp_path / "v.txt")], capsys)
    assert message == ("vocabulary size 100 is too small; kmlm learns vocabularies of at least 128 tokens "
                       "(a fixed minimum, whatever the corpus), e.g. --size 8192")


def test_a_named_pipe_as_corpus(tmp_path, capsys):
    fifo = tmp_path / "stream.txt"
    os.mkfifo(fifo)
    message = _error(["pretrain", "--corpus", str(fifo), "--out", str(tmp_path / "r")], capsys)
    assert message == (
        f"corpus {str(fifo)!r} is a named pipe (FIFO), not a file or directory: a corpus is read more than once "
        "(vocabulary, split, epochs); save the text to a file first"
    )


def test_a_directory_as_vocab(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt", ENGLISH)
    (tmp_path / "vocabs").mkdir()
    message = _error(["pretrain", "--corpus", corpus, "--vocab", str(tmp_path / "vocabs"),
                      "--out", str(tmp_path / "r")], capsys)
    assert message == (
        f"vocabulary file {str(tmp_path / 'vocabs')!r} is a directory; give the vocabulary file itself (one token "
        f"per line), e.g. {str(tmp_path / 'vocabs' / 'vocab.txt')}"
    )


@pytest.mark.parametrize("copies", [4, 40])  # the cut inside the first 8 KiB checked, or later inside tf.data
def test_a_truncated_gzip_corpus(copies, tmp_path, capsys):
    import gzip

    data = gzip.compress(("\n\n".join(ENGLISH) + "\n").encode() * copies)
    corpus = tmp_path / "corpus.txt.gz"
    corpus.write_bytes(data[: len(data) // 2])  # what an interrupted copy leaves
    message = _error(["vocab", "--corpus", str(corpus), "--size", "200", "--out", str(tmp_path / "v.txt")], capsys)
    assert message == (
        f"corpus file {str(corpus)!r} is a truncated or corrupted gzip file (Compressed file ended before the "
        "end-of-stream marker was reached); copy or compress it again"
    )
    assert not (tmp_path / "v.txt").exists()


def _hf_directory(path, **changes):
    config = {"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16, **changes}
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcde"]) + "\n")
    return path


def test_a_safetensors_file_with_a_garbage_header(tmp_path, capsys):
    hf = _hf_directory(tmp_path / "hf")
    (hf / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage header}")
    message = _error(["convert", str(hf), "--out", str(tmp_path / "r")], capsys)
    assert message == (
        f"{str(hf / 'model.safetensors')!r} is not a readable safetensors file (Error while deserializing header: "
        "invalid JSON in header: key must be a string at line 1 column 2); it is damaged or incomplete: "
        "download it again"
    )


@pytest.mark.parametrize("architectures, named", [(None, ""), (["XLMRobertaForMaskedLM"], " (XLMRobertaForMaskedLM)")])
def test_an_unsupported_model_type(architectures, named, tmp_path, capsys):
    hf = _hf_directory(tmp_path / "hf", model_type="xlm-roberta", architectures=architectures)
    message = _error(["convert", str(hf), "--out", str(tmp_path / "r")], capsys)
    assert message == (f"unsupported architecture: model_type='xlm-roberta'{named}; kmlm converts bert, "
                       "roberta-prelayernorm, distilbert, roberta, albert, electra checkpoints only")


def test_fill_mask_with_a_lower_case_mask(tiny_run, capsys):
    message = _error(["fill-mask", tiny_run, "[mask] sat on the mat"], capsys)
    assert message == ("text has no [MASK] token: '[mask] sat on the mat'; the mask token is upper case: "
                       "write [MASK] where a word should be predicted")


def test_evaluate_on_text_the_vocabulary_does_not_cover(tiny_run, tmp_path, capsys):
    corpus = write_corpus(tmp_path / "same.txt", ["zebra quokka"] * 50)  # no piece of either word is in the vocabulary
    message = _error(["evaluate", tiny_run, "--corpus", corpus], capsys)
    assert message == ("none of the 200 tokens of the evaluation text can be masked: all are [CLS], [SEP] or [UNK] "
                       "(the run's vocabulary does not cover this text); evaluate on text like the training corpus")


@pytest.mark.parametrize("option, value, message", [
    ("--layer", "2", "--layer 2 is outside the model's 2 layers; use 0 to 1 (layers are numbered from 0)"),
    ("--head", "-1", "--head -1 is outside the model's 4 heads; use 0 to 3 (heads are numbered from 0)"),
])
def test_attention_layer_or_head_outside_the_model(tiny_run, option, value, message, capsys):
    assert _error(["attention", tiny_run, "the cat sat", option, value], capsys) == message


def test_attention_of_a_blank_text(tiny_run, capsys):
    assert _error(["attention", tiny_run, "   "], capsys) == "text '   ' has no tokens; give a text to look inside"


def test_fasttext_ngram_lengths_the_wrong_way_round(tmp_path, capsys):
    message = _error(["fasttext", "--out", str(tmp_path / "ft"), "--min-n", "5", "--max-n", "3"], capsys)
    assert message == "--min-n 5 --max-n 3: need 1 <= min-n <= max-n (or --max-n 0 for no n-grams)"
    assert not (tmp_path / "ft").exists()


def test_vectors_of_a_bin_that_is_not_fasttext(tmp_path, capsys):
    fake = tmp_path / "vectors.bin"
    fake.write_bytes(b"\x00\x01" * 64)
    message = _error(["vectors", str(fake), "--similar", "word"], capsys)
    assert message.startswith(f"{str(fake)!r} is not a fastText .bin (no fastText header: magic ")

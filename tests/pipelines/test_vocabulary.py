"""Vocabulary learning, files and the in-graph tokenizer built on them."""

import os

import numpy as np
import pytest
import tensorflow as tf

from kmlm.pipelines import (
    SPECIAL_TOKENS,
    learn_vocabulary,
    load_documents,
    is_never_predicted,
    load_vocabulary,
    make_tokenizer,
    never_predicted,
    save_vocabulary,
    special_ids,
)

CHINESE = "机器学习是人工智能的一个分支。它研究计算机怎样模拟人类的学习行为。"
MIXED = [
    "Café au lait and a naïve résumé. " + CHINESE,
    "Machine learning models learn from data; 学习 needs data too.",
    "THE QUICK BROWN FOX jumps over the lazy dog, again and again.",
] * 40


def tokenize(tokenizer, texts):
    return tf.function(tokenizer.tokenize, autograph=False)(tf.constant(texts))


def test_fast_vocabulary_has_specials_first_and_the_requested_size(vocabulary, python_docs):
    assert vocabulary[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert len(vocabulary) == 4096 and len(set(vocabulary)) == 4096
    # Streaming from a tf.data corpus gives a vocabulary of the same size.
    streamed = learn_vocabulary(load_documents("builtin:python-docs"), 1000)
    assert streamed[:5] == list(SPECIAL_TOKENS) and len(streamed) == 1000


def test_fast_vocabulary_covers_the_corpus(vocabulary, python_docs):
    tokenizer = make_tokenizer(vocabulary)
    ids = tokenize(tokenizer, python_docs[:500]).flat_values.numpy()
    assert np.mean(ids == special_ids(vocabulary).unk) < 0.001
    # Subword pieces exist and are used.
    pieces = {vocabulary[i] for i in ids}
    assert any(piece.startswith("##") for piece in pieces)


def test_chinese_characters_are_single_character_tokens():
    vocabulary = learn_vocabulary(MIXED, 300)
    chinese = [t for t in vocabulary if any("\u4e00" <= c <= "\u9fff" for c in t)]
    assert set(chinese) >= set(CHINESE) - {"。"}
    assert all(len(token.removeprefix("##")) == 1 for token in chinese)
    tokenizer = make_tokenizer(vocabulary)
    ids = tokenize(tokenizer, [CHINESE]).flat_values.numpy()
    assert [vocabulary[i] for i in ids] == list(CHINESE)


def test_learned_normalization_matches_the_tokenizer():
    """Accents stripped and text lowercased the same way in learning and tokenizing."""
    vocabulary = learn_vocabulary(MIXED, 300)
    assert "cafe" in vocabulary and "naive" in vocabulary and "the" in vocabulary
    assert not any(token != token.lower() for token in vocabulary[5:])
    tokenizer = make_tokenizer(vocabulary)
    ids = tokenize(tokenizer, ["CAFÉ Naïve THE Résumé"]).flat_values.numpy()
    assert special_ids(vocabulary).unk not in ids
    assert [vocabulary[i] for i in ids][:3] == ["cafe", "naive", "the"]


def test_cased_vocabulary_keeps_case():
    vocabulary = learn_vocabulary(MIXED, 300, lowercase=False)
    assert "THE" in vocabulary or "##HE" in vocabulary or "T" in vocabulary
    tokenizer = make_tokenizer(vocabulary, lowercase=False)
    ids = tokenize(tokenizer, ["THE QUICK"]).flat_values.numpy()
    assert "".join(vocabulary[i].removeprefix("##") for i in ids) == "THEQUICK"


def test_keras_nlp_method_gives_a_valid_vocabulary():
    vocabulary = learn_vocabulary(MIXED, 200, method="keras-nlp")
    assert vocabulary[:5] == list(SPECIAL_TOKENS)
    assert 5 < len(vocabulary) <= 200 and len(set(vocabulary)) == len(vocabulary)
    assert set(CHINESE) - {"。"} <= set(vocabulary)


# A table drawn in box characters (one row of 86 symbols, 258 UTF-8 bytes), emoji and symbols.
TABLE_ROW = "├" + "─" * 40 + "┼" + "─" * 43 + "┤"
SYMBOLS = [
    f"第{i}行 数据 {TABLE_ROW}\n表格 {TABLE_ROW} 😀🎉✨ ★☆ ∑∫√ ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━"
    for i in range(60)
]


@pytest.mark.parametrize("method", ["fast", "keras-nlp"])
def test_long_symbol_runs_give_only_tokens_the_tokenizer_accepts(method):
    vocabulary = learn_vocabulary(SYMBOLS, 200, method=method)
    longest = max(len(token.removeprefix("##").encode("utf-8")) for token in vocabulary)
    assert longest <= 100  # the tokenizer maps longer words to [UNK]; TF Text refuses > 256
    tokenizer = make_tokenizer(vocabulary)  # TF Text builds its lookup from every token
    ids = tokenize(tokenizer, [SYMBOLS[0]]).flat_values.numpy()
    pieces = [vocabulary[i] for i in ids]
    assert pieces[:4] == ["第", "0", "行", "数"]
    assert "[UNK]" in pieces  # the 258-byte row is one word the tokenizer cannot split


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 20}, "vocabulary size 20 is too small; kmlm learns vocabularies of at least 128 "
         "tokens (a fixed minimum, whatever the corpus), e.g. --size 8192"),
        ({"size": 500, "method": "bpe"},
         "unknown vocabulary method 'bpe'; use one of 'fast', 'keras-nlp'"),
    ],
)
def test_bad_learning_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError) as raised:
        learn_vocabulary(MIXED, **kwargs)
    assert str(raised.value) == message


def test_save_and_load_round_trip(vocabulary, tmp_path):
    path = str(tmp_path / "run" / "vocab.txt")
    save_vocabulary(vocabulary, path)
    assert load_vocabulary(path) == vocabulary
    with open(path, encoding="utf-8") as file:
        assert file.read() == "".join(token + "\n" for token in vocabulary)


def test_loading_a_missing_file_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as raised:
        load_vocabulary("x/vocab.txt")
    assert str(raised.value) == (
        "vocabulary file 'x/vocab.txt' does not exist; create one with "
        "`kmlm vocab --corpus SRC --size N --out x/vocab.txt`")


@pytest.mark.parametrize(
    "tokens, message",
    [
        (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"],
         "vocabulary 'x/vocab.txt' is missing the special token [MASK]; a kmlm vocabulary "
         "must contain [PAD], [UNK], [CLS], [SEP], [MASK]"),
        (list(SPECIAL_TOKENS) + ["hello", "world", "hello"],
         "vocabulary 'x/vocab.txt' repeats the token 'hello' (ids 5 and 7); every token must "
         "appear once"),
        (list(SPECIAL_TOKENS) + ["hello", "##" + "─" * 86],
         "vocabulary 'x/vocab.txt' line 7 (id 6) holds a token of 258 UTF-8 bytes ('##──────────...'); "
         "the WordPiece tokenizer accepts at most 256 bytes per token (not counting '##'): shorten or "
         "remove it"),
        (list(SPECIAL_TOKENS) + ["hello", "", "world"],
         "vocabulary 'x/vocab.txt' has an invalid token '' at id 6; tokens must be non-empty "
         "strings without surrounding whitespace"),
    ],
)
def test_loading_a_broken_vocabulary_names_the_problem(tokens, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("x")
    with open("x/vocab.txt", "w", encoding="utf-8") as file:
        file.write("".join(token + "\n" for token in tokens))
    with pytest.raises(ValueError) as raised:
        load_vocabulary("x/vocab.txt")
    assert str(raised.value) == message


def test_tokenizer_maps_literal_special_tokens_and_returns_ragged_int32():
    vocabulary = list(SPECIAL_TOKENS) + ["hello", "world", "##s", "中", "文"]
    tokenizer = make_tokenizer(vocabulary)
    ids = tokenize(tokenizer, ["Hello worlds [MASK] 中文", "[CLS] hello"])
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.to_list() == [[5, 6, 7, 4, 8, 9], [2, 5]]


def test_tokenizer_accepts_a_vocabulary_path(tmp_path):
    path = str(tmp_path / "vocab.txt")
    save_vocabulary(list(SPECIAL_TOKENS) + ["hello"], path)
    assert tokenize(make_tokenizer(path), ["hello"]).to_list() == [[5]]
    assert special_ids(path).sep == 3


def test_never_predicted_marks_special_and_reserved_tokens_only():
    markup = ["[unused0]", "[unused12]", "[unused_3]", "[extra]"]
    text = ["[", "]", "[]", "[ ]", "[[x]]", "[a", "a]", "[UNK]x", "x[MASK]", "cat", "##s", "##]"]
    vocabulary = list(SPECIAL_TOKENS) + markup + text
    marks = never_predicted(vocabulary)
    assert marks.dtype == bool and marks.shape == (len(vocabulary),)
    assert marks.tolist() == [True] * (len(SPECIAL_TOKENS) + len(markup)) + [False] * len(text)
    assert [is_never_predicted(token) for token in vocabulary] == marks.tolist()
    assert never_predicted([]).shape == (0,)


def test_a_learned_vocabulary_holds_no_reserved_tokens():
    """Pre-tokenization splits "[" off, so only the five special tokens are never predicted:
    masking and fill-mask treat a learned vocabulary exactly as before the reserved entries."""
    vocabulary = learn_vocabulary(MIXED + ["[unused0] [MASK] [x] brackets]"] * 20, 300)
    assert never_predicted(vocabulary).nonzero()[0].tolist() == list(range(len(SPECIAL_TOKENS)))


@pytest.mark.slow
def test_the_same_corpus_gives_the_same_vocabulary_file_in_every_process(tmp_path):
    """The Rust trainer iterates hash maps (seeded per process); the vocabulary must not
    depend on that order. Two processes with different hash seeds write identical bytes."""
    import subprocess
    import sys

    files = []
    for seed in ("1", "2"):
        out = tmp_path / f"vocab-{seed}.txt"
        result = subprocess.run(
            [sys.executable, "-m", "kmlm", "vocab", "--corpus", "builtin:python-docs", "--size", "3000",
             "--out", str(out)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert result.returncode == 0, result.stderr[-2000:]
        files.append(out.read_bytes())
    assert files[0] == files[1]
    assert len(files[0].decode("utf-8").splitlines()) == 3000


def test_learning_twice_in_one_process_gives_the_same_order():
    first, second = learn_vocabulary(MIXED * 3, 300), learn_vocabulary(MIXED * 3, 300)
    assert first == second
    # The `##` pieces of single characters come first, sorted, right after the special tokens.
    pieces = [token for token in first[5:] if token.startswith("##") and len(token) == 3]
    assert first[5:5 + len(pieces)] == sorted(pieces)

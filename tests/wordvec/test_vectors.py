"""WordVectors: files, queries against numpy, evaluation formats, and vectors taken from a
kmlm masked language model."""

import gzip
import json

import keras
import numpy as np
import pytest

from kmlm.config import ModelConfig
from kmlm.model import build_mlm_model
from kmlm.pipelines import SPECIAL_TOKENS, make_tokenizer
from kmlm.statistics import spearman
from kmlm.wordvec.from_mlm import contextual_vectors, embedding_table_from_vectors, init_token_embeddings, static_vectors
from kmlm.wordvec.vectors import WordVectors

WORDS = ["king", "queen", "man", "woman", "apple", "日本"]
MATRIX = np.array(
    [[1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.2, 1.0, 0.1], [0.2, -1.0, 0.1], [0.0, 0.1, 3.0], [0.5, 0.5, 0.5]],
    dtype=np.float32,
)


@pytest.fixture
def vectors():
    return WordVectors(WORDS, MATRIX, counts=[60, 50, 40, 30, 20, 10])


@pytest.mark.parametrize("name, fmt", [("v.txt", "word2vec"), ("v.txt.gz", "word2vec"), ("g.txt", "glove")])
def test_text_formats_round_trip(vectors, tmp_path, name, fmt):
    path = str(tmp_path / name)
    vectors.save(path, format=fmt)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        first = f.readline().split()
    assert (first == ["6", "3"]) == (fmt == "word2vec")
    loaded = WordVectors.load(path)  # the format is told from the first line
    assert loaded.words == WORDS
    np.testing.assert_allclose(loaded.vectors, MATRIX, rtol=1e-6)
    assert WordVectors.load(path, limit=2).words == WORDS[:2]


def test_load_rejects_malformed_files_with_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("2 3\na 1 2 3\nb 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:3: 2 numbers where the file has dim 3"):
        WordVectors.load(str(path))
    path.write_text("a 1 2 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="word2vec header"):
        WordVectors.load(str(path), format="word2vec")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WordVectors.load(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="appears twice"):
        WordVectors(["a", "a"], np.zeros((2, 2)))


def test_most_similar_and_similarity_match_numpy(vectors):
    unit = MATRIX / np.linalg.norm(MATRIX, axis=1, keepdims=True)
    cosines = unit @ unit[0]
    expected = [WORDS[i] for i in np.argsort(-cosines) if i != 0][:3]
    result = vectors.most_similar("king", top_n=3)
    assert [w for w, _ in result] == expected
    assert result[0][1] == pytest.approx(cosines[WORDS.index(expected[0])], rel=1e-5)
    assert vectors.similarity("man", "woman") == pytest.approx(float(unit[2] @ unit[3]), rel=1e-5)
    assert vectors.most_similar(MATRIX[4], top_n=1)[0][0] == "apple"  # a vector query keeps every word
    with pytest.raises(KeyError, match="'prince' is not in the vocabulary"):
        vectors.most_similar("prince")


def test_analogy_3cosadd_and_3cosmul_match_hand_computation(vectors):
    unit = MATRIX / np.linalg.norm(MATRIX, axis=1, keepdims=True)
    query = unit[1] - unit[0] + unit[2]  # king : queen :: man : ?
    add = unit @ (query / np.linalg.norm(query))
    cos = [(unit @ unit[i] + 1) / 2 for i in (0, 1, 2)]
    mul = cos[1] * cos[2] / (cos[0] + 1e-3)
    for method, scores in (("add", add), ("mul", mul)):
        answer = vectors.analogy("king", "queen", "man", method=method, top_n=2)
        candidates = [i for i in np.argsort(-scores) if i not in (0, 1, 2)]
        assert [w for w, _ in answer] == [WORDS[i] for i in candidates[:2]]
        assert answer[0][1] == pytest.approx(float(scores[candidates[0]]), rel=1e-5)
    assert vectors.analogy("king", "queen", "man")[0][0] == "woman"


def test_spearman_with_ties_matches_hand_computation():
    # ranks of x: 1, 2.5, 2.5, 4; of y: 4, 3, 2, 1 -> Pearson of the ranks = -0.9487
    assert spearman([1, 2, 2, 3], [10, 5, 4, 1]) == pytest.approx(-3 / np.sqrt(10), rel=1e-6)
    assert spearman([1, 2, 3], [2, 4, 9]) == pytest.approx(1.0)


def test_word_pair_file_evaluation(vectors, tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text(
        "# a comment\nWord 1\tWord 2\tHuman (mean)\nking\tqueen\t3.0\nman\twoman\t8.0\n"
        "king\tapple\t1.0\nqueen,prince,5\n", encoding="utf-8",
    )
    result = vectors.evaluate_word_pairs(str(path))
    human = [3.0, 8.0, 1.0]
    model = [vectors.similarity(a, b) for a, b in (("king", "queen"), ("man", "woman"), ("king", "apple"))]
    assert result == {"spearman": pytest.approx(spearman(human, model)), "pairs": 3, "oov": 1}


def test_analogy_file_evaluation_by_section(vectors, tmp_path):
    path = tmp_path / "questions-words.txt"
    path.write_text(": family\nking queen man woman\nman woman king queen\n: other\nKing Queen man apple\n"
                    "king prince man woman\n", encoding="utf-8")
    result = vectors.evaluate_analogies(str(path))
    assert (result["correct"], result["questions"], result["oov"]) == (2, 3, 1)
    assert result["sections"]["family"]["accuracy"] == 1.0 and result["sections"]["other"]["accuracy"] == 0.0
    restricted = vectors.evaluate_analogies(str(path), restrict=3)  # "woman" is the 4th word
    assert restricted["questions"] == 0 and restricted["oov"] == 4
    bad = tmp_path / "bad.txt"
    bad.write_text("a b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected 4 words"):
        vectors.evaluate_analogies(str(bad))


RNG_VECTORS = np.random.default_rng(0)
VOCABULARY = list(SPECIAL_TOKENS) + ["play", "##ing", "##ed", "the", "cat", "sat", "on", "mat", "."]


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    model = build_mlm_model(ModelConfig.from_preset("tiny", vocabulary_size=len(VOCABULARY)))
    table = np.arange(len(VOCABULARY) * 128, dtype=np.float32).reshape(len(VOCABULARY), 128) / 1000.0
    model.encoder.embedding.token_embeddings.assign(table)
    return model, table


def test_static_vectors_from_the_mlm_are_means_of_the_pieces(tiny_model):
    model, table = tiny_model
    vectors = WordVectors.from_masked_lm(model, VOCABULARY, words=["playing", "Cat", "zzz", "played"])
    index = {t: i for i, t in enumerate(VOCABULARY)}
    assert vectors.words == ["playing", "Cat", "played"]  # "zzz" is [UNK] only
    np.testing.assert_allclose(vectors["playing"], (table[index["play"]] + table[index["##ing"]]) / 2, rtol=1e-6)
    np.testing.assert_allclose(vectors["Cat"], table[index["cat"]])
    default = WordVectors.from_masked_lm(model, VOCABULARY)
    assert default.words == ["play", "the", "cat", "sat", "on", "mat", "."]


def test_contextual_vectors_average_the_encoder_over_occurrences(tiny_model):
    model, _ = tiny_model
    documents = ["the cat sat on the mat.", "the cat played"]
    vectors = WordVectors.contextual(model, VOCABULARY, documents, seq_len=16)
    assert vectors.words[0] == "the" and dict(zip(vectors.words, vectors.counts))["the"] == 3
    tokenizer = make_tokenizer(VOCABULARY)
    ids = [2] + np.asarray(tokenizer.tokenize(documents[1])).tolist() + [3]  # [CLS] the cat play ##ed [SEP]
    row = np.array([ids], dtype=np.int32)
    hidden = np.asarray(model.encoder({"token_ids": row, "segment_ids": np.zeros_like(row),
                                       "document_ids": np.ones_like(row)}))[0]
    np.testing.assert_allclose(vectors["played"], hidden[3:5].mean(axis=0), rtol=1e-4, atol=1e-5)


def test_init_embeddings_put_the_vectors_in_the_right_rows(tiny_model):
    _, table = tiny_model
    given = WordVectors(["cat", "mat", "The", "ing", "zebra"], RNG_VECTORS.normal(size=(5, 128)))
    new, rows = embedding_table_from_vectors(given, VOCABULARY, table)
    index = {t: i for i, t in enumerate(VOCABULARY)}
    assert sorted(rows.tolist()) == sorted([index["cat"], index["mat"]])  # "The" is not lowercase in the file
    scale = new[index["cat"]][0] / given["cat"][0]
    np.testing.assert_allclose(new[index["cat"]], given["cat"] * scale, rtol=1e-5)
    np.testing.assert_allclose(new[index["mat"]], given["mat"] * scale, rtol=1e-5)
    assert new[rows].std() == pytest.approx(table[rows].std(), rel=1e-4)
    untouched = [i for i in range(len(VOCABULARY)) if i not in rows]  # specials, "##ing", "the", ...
    np.testing.assert_array_equal(new[untouched], table[untouched])
    with_the = WordVectors(["the"], np.ones((1, 128)))
    assert embedding_table_from_vectors(with_the, VOCABULARY, table)[1].tolist() == [index["the"]]


def test_init_embeddings_fit_a_linear_map_when_sizes_differ(tiny_model):
    _, table = tiny_model
    words = ["play", "the", "cat", "sat", "on", "mat"]
    for dim in (300, 7):
        given = WordVectors(words, RNG_VECTORS.normal(size=(6, dim)))
        new, rows = embedding_table_from_vectors(given, VOCABULARY, table)
        assert new.shape == table.shape and len(rows) == 6
        # the new rows are an exact affine function of the given vectors
        design = np.hstack([given.vectors, np.ones((6, 1))])
        fitted, *_ = np.linalg.lstsq(design, new[rows], rcond=None)
        np.testing.assert_allclose(design @ fitted, new[rows], atol=1e-4)
    with pytest.raises(ValueError, match="no token of the"):
        embedding_table_from_vectors(WordVectors(["zebra"], np.ones((1, 4))), VOCABULARY, table)


def test_init_token_embeddings_assigns_the_model_table():
    keras.utils.set_random_seed(1)
    model = build_mlm_model(ModelConfig.from_preset("tiny", vocabulary_size=len(VOCABULARY)))
    given = WordVectors(["cat", "sat"], RNG_VECTORS.normal(size=(2, 128)))
    expected, _ = embedding_table_from_vectors(given, VOCABULARY, np.asarray(model.encoder.embedding.token_embeddings))
    assert init_token_embeddings(model, VOCABULARY, given) == 2
    np.testing.assert_allclose(np.asarray(model.encoder.embedding.token_embeddings), expected)


@pytest.mark.slow
def test_pretrain_init_embeddings_flag(tmp_path, capsys):
    from kmlm.cli.main import main
    from kmlm.run_directory import load_run

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"the {a} sat on the {b} mat." for a in ("cat", "dog", "fox") for b in ("red", "big"))
                      * 10 + "\n", encoding="utf-8")
    words = ["the", "cat", "dog", "mat", "sat"]
    vectors_path = tmp_path / "vectors.txt"
    WordVectors(words, RNG_VECTORS.normal(size=(5, 20))).save(str(vectors_path))  # 20 != tiny's 128: a linear map
    out = tmp_path / "run"
    argv = ["pretrain", "--corpus", str(corpus), "--out", str(out), "--preset", "tiny", "--steps", "1",
            "--seq-len", "16", "--batch-size", "2", "--vocab-size", "128", "--learning-rate", "1e-12",
            "--eval-batches", "0", "--log-points", "1", "--no-jit", "--init-embeddings", str(vectors_path)]
    assert main(argv) == 0
    assert "initialised 5 token embeddings" in capsys.readouterr().out
    run = load_run(str(out))
    assert run.config.training["init_embeddings"] == str(vectors_path)
    table = np.asarray(run.model.encoder.embedding.token_embeddings)
    rows = [run.vocabulary.index(w) for w in words]
    design = np.hstack([WordVectors.load(str(vectors_path)).vectors, np.ones((5, 1))])
    fitted, *_ = np.linalg.lstsq(design, table[rows], rcond=None)
    np.testing.assert_allclose(design @ fitted, table[rows], atol=1e-4)  # one step at lr 1e-12 moves nothing
    assert main(["vectors", str(out), "--similar", "cat", "--top-n", "3", "--json"]) == 0  # a run directory
    answer = json.loads(capsys.readouterr().out)
    static = WordVectors.from_masked_lm(run, None)
    assert [w for w, _ in answer["similar"]["cat"]] == [w for w, _ in static.most_similar("cat", top_n=3)]
    assert main(argv[:-1] + [str(tmp_path / "missing.txt"), "--overwrite"]) == 2
    assert "is not a word vectors file" in capsys.readouterr().err


def test_the_store_needs_numpy_only():
    import subprocess
    import sys

    code = ("import sys, kmlm.wordvec.vectors as v; v.WordVectors(['a'], [[1.0]]).most_similar('a'); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_classmethods_and_functions_give_the_same_vectors(tiny_model):
    model, _ = tiny_model
    static = static_vectors(model, VOCABULARY, words=["playing", "cat"])
    via_class = WordVectors.from_masked_lm(model, VOCABULARY, words=["playing", "cat"])
    assert static.words == via_class.words
    np.testing.assert_array_equal(static.vectors, via_class.vectors)
    documents = ["the cat sat on the mat.", "the cat played"]
    contextual = contextual_vectors(model, VOCABULARY, documents, seq_len=16, min_count=2, batch_size=1)
    assert contextual.words == ["the", "cat"] and contextual.counts.tolist() == [3, 2]
    np.testing.assert_allclose(WordVectors.contextual(model, VOCABULARY, documents, seq_len=16, min_count=2).vectors,
                               contextual.vectors, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="give the model's vocabulary"):
        static_vectors(model, None)


def test_vectors_directory_is_written_whole(vectors, tmp_path):
    import dataclasses
    import os

    from kmlm.wordvec.vectors import write_vectors_directory

    @dataclasses.dataclass
    class Settings:
        dim: int = 3

    out = tmp_path / "out"
    write_vectors_directory(str(out), vectors, "record.json", settings=Settings(), corpus="c.txt", extra={"loss": [1.0]})
    assert sorted(os.listdir(out)) == ["record.json", "vectors.txt", "vocab.txt"]  # no partial files left
    assert WordVectors.load(str(out / "vectors.txt")).words == WORDS
    assert (out / "vocab.txt").read_text(encoding="utf-8").splitlines()[0] == "king 60"
    assert json.loads((out / "record.json").read_text()) == {"corpus": "c.txt", "settings": {"dim": 3},
                                                             "vocabulary_size": 6, "loss": [1.0]}


def test_vectors_from_a_masked_lm_leave_out_reserved_tokens():
    from kmlm.wordvec.from_mlm import static_vectors
    from tests.tiny_run import VOCABULARY, WORDS, tiny_model

    vectors = static_vectors(tiny_model(), VOCABULARY)
    assert "[unused0]" in VOCABULARY and "[unused0]" not in vectors.words
    assert vectors.words == [word for word in WORDS if not word.startswith("##")]

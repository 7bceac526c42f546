"""word2vec: the in-graph example pipeline against hand computation, and training that
recovers structure planted in a synthetic corpus."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from kmlm.cli.main import main
from kmlm.wordvec.vectors import WordVectors
from kmlm.wordvec.word2vec import (
    Word2VecSettings,
    huffman_paths,
    keep_probabilities,
    sampling_table,
    train_word2vec,
    word2vec_examples,
)
from kmlm.wordvec.words import build_vocabulary, count_words
from tests.helpers import write_corpus
from tests.wordvec.corpora import GROUPS, neighbour_purity, planted_analogy, planted_groups

FAST = dict(dim=32, window=3, min_count=1, batch_size=256, table_size=100_000)


def _documents(texts):
    return tf.data.Dataset.from_tensor_slices(list(texts))


def test_sampling_table_follows_unigram_to_the_three_quarters():
    # 16^0.75 = 8 and 1^0.75 = 1: word 0 gets 8 of 9 entries, word 1 the last one.
    np.testing.assert_array_equal(sampling_table(np.array([16, 1]), 9), [0, 0, 0, 0, 0, 0, 0, 0, 1])
    counts = np.array([81, 16, 1, 1])  # ^0.75 -> 27, 8, 1, 1 of 37
    table = sampling_table(counts, 3700)
    np.testing.assert_array_equal(np.bincount(table, minlength=4), [2700, 800, 100, 100])
    assert np.all(np.diff(table) >= 0)


def test_keep_probabilities_follow_the_word2vec_formula():
    # f = 0.9, 0.09, 0.01 with t = 0.01: (sqrt(f/t) + 1) * t / f.
    keep = keep_probabilities(np.array([900, 90, 10]), 0.01)
    np.testing.assert_allclose(keep, [(math.sqrt(90) + 1) / 90, 4 / 9, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(keep_probabilities(np.array([5, 1]), 0.0), [1.0, 1.0])


def test_subsampling_keeps_a_frequent_word_at_its_rate():
    texts = ["the " * 50 + "cat dog"] * 40
    counts = count_words(_documents(texts))
    vocabulary, frequencies = build_vocabulary(counts, 1)
    settings = Word2VecSettings(model="cbow", window=1, min_count=1, subsample=0.05, batch_size=64, table_size=1000)
    examples = word2vec_examples(_documents(texts), vocabulary, frequencies, settings, shuffle=False)
    kept = np.concatenate([y["output_ids"][:, 0] for y, _, _ in examples.as_numpy_iterator()])
    expected = keep_probabilities(frequencies, 0.05)[vocabulary.index("the")]
    # every kept "the" with a kept neighbour is a CBOW target; nearly all have one
    assert abs(np.mean(kept == vocabulary.index("the")) * len(kept) / 2000 - expected) < 0.05


def test_window_one_skipgram_pairs_are_exactly_the_neighbours_within_a_document():
    texts = ["a b c", "d e"]
    vocabulary = ["a", "b", "c", "d", "e"]
    settings = Word2VecSettings(window=1, min_count=1, subsample=0, negatives=2, batch_size=100, table_size=50)
    (inputs, labels, weights), = word2vec_examples(
        _documents(texts), vocabulary, np.ones(5), settings, shuffle=False
    ).as_numpy_iterator()
    pairs = sorted(zip(inputs["input_ids"][:, 0].tolist(), inputs["output_ids"][:, 0].tolist()))
    assert pairs == sorted([(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)])
    assert inputs["output_ids"].shape == (6, 3)
    np.testing.assert_array_equal(labels[:, 0], 1.0)
    np.testing.assert_array_equal(labels[:, 1:], 0.0)
    np.testing.assert_array_equal(weights, 1.0)


def test_window_one_cbow_contexts_are_left_and_right_neighbours():
    settings = Word2VecSettings(model="cbow", window=1, min_count=1, subsample=0, batch_size=100, table_size=50)
    (inputs, _, _), = word2vec_examples(
        _documents(["a b c", "d"]), ["a", "b", "c", "d"], np.ones(4), settings, shuffle=False
    ).as_numpy_iterator()
    rows = {int(t): c.tolist() for t, c in zip(inputs["output_ids"][:, 0], inputs["input_ids"])}
    assert rows == {0: [-1, 1], 1: [0, 2], 2: [1, -1]}  # "d" alone has no context: no example


def test_pairs_never_leave_the_reduced_window():
    texts = ["a b c d e f g h"] * 20
    vocabulary = list("abcdefgh")
    settings = Word2VecSettings(window=3, min_count=1, subsample=0, batch_size=64, table_size=64)
    distances = []
    for inputs, _, _ in word2vec_examples(_documents(texts), vocabulary, np.ones(8), settings).as_numpy_iterator():
        distances.extend(np.abs(inputs["input_ids"][:, 0] - inputs["output_ids"][:, 0]).tolist())
    distances = np.bincount(distances)
    assert distances[0] == 0 and len(distances) == 4
    # word2vec's reduced window: distance d is used with probability (W - d + 1) / W
    assert distances[1] > distances[2] > distances[3]


def test_negatives_are_drawn_from_the_smoothed_unigram_distribution():
    counts = np.array([81, 16, 1, 1])
    settings = Word2VecSettings(window=1, min_count=1, subsample=0, negatives=20, batch_size=512, table_size=3700)
    texts = ["a b"] * 200
    negatives = np.concatenate([
        inputs["output_ids"][:, 1:].ravel()
        for inputs, _, _ in word2vec_examples(_documents(texts), list("abcd"), counts, settings).as_numpy_iterator()
    ])
    np.testing.assert_allclose(np.bincount(negatives, minlength=4) / len(negatives), [27 / 37, 8 / 37, 1 / 37, 1 / 37],
                               atol=0.01)


def test_huffman_codes_are_prefix_free_and_short_for_frequent_words():
    counts = np.array([40, 30, 10, 10, 5, 5])
    nodes, codes, lengths = huffman_paths(counts)
    paths = ["".join(map(str, codes[w, : lengths[w]])) for w in range(6)]
    assert all(not b.startswith(a) for a in paths for b in paths if a != b)
    assert lengths.tolist() == [1, 2, 4, 4, 4, 4]
    # Hand-built Huffman tree: depths 1, 2, 4, 4, 4, 4 -> 2.2 bits per word.
    assert float((counts * lengths).sum() / counts.sum()) == pytest.approx(2.2)
    assert nodes.max() == len(counts) - 2 and np.all(nodes[:, 0] == nodes[0, 0])  # all paths start at the root


@pytest.mark.parametrize(
    "model, hierarchical_softmax, epochs, threshold",
    [("skipgram", False, 5, 0.9), ("cbow", False, 10, 0.7), ("skipgram", True, 5, 0.9)],
)
def test_training_recovers_planted_word_groups(model, hierarchical_softmax, epochs, threshold):
    settings = Word2VecSettings(model=model, hierarchical_softmax=hierarchical_softmax,
                                negatives=0 if hierarchical_softmax else 5, epochs=epochs, **FAST)
    result = train_word2vec(_documents(planted_groups(3000)), settings)
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert neighbour_purity(result.vectors) >= threshold
    assert len(result.words_per_second) == epochs and min(result.words_per_second) > 0


def test_training_solves_the_planted_analogy():
    settings = Word2VecSettings(subsample=0, epochs=4, **{**FAST, "window": 4})
    vectors = train_word2vec(_documents(planted_analogy(2500)), settings).vectors
    for method in ("add", "mul"):
        assert vectors.analogy("man", "king", "woman", method=method)[0][0] == "queen"
        assert vectors.analogy("man", "woman", "boy", method=method)[0][0] == "girl"


def test_cli_writes_vectors_and_counts(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus, planted_groups(600))
    out = tmp_path / "w2v"
    code = main(["word2vec", "--corpus", str(corpus), "--out", str(out), "--dim", "16", "--epochs", "2",
                 "--min-count", "2", "--batch-size", "256", "--quiet"])
    assert code == 0
    assert "words/s" in capsys.readouterr().out
    vectors = WordVectors.load(str(out / "vectors.txt"))
    assert vectors.dim == 16 and "cat" in vectors
    counts = dict(line.split() for line in (out / "vocab.txt").read_text(encoding="utf-8").splitlines())
    expected = count_words(_documents(planted_groups(600)))
    assert {w: int(n) for w, n in counts.items()} == {w: n for w, n in expected.items() if n >= 2}
    assert list(counts) == vectors.words
    assert os.path.isfile(out / "word2vec.json")


def test_cli_rejects_bad_settings_in_one_line(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c\n", encoding="utf-8")
    code = main(["word2vec", "--corpus", str(corpus), "--out", str(tmp_path / "o"), "--negatives", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("kmlm word2vec: error:") and "--hs" in err and err.count("\n") == 1
    code = main(["word2vec", "--corpus", str(corpus), "--out", str(tmp_path / "o"), "--min-count", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "lower --min-count" in err

"""GloVe: co-occurrence counts against a brute-force count, the weighting function, and
training that lowers the loss and recovers planted word groups."""

import json

import numpy as np
import pytest
import tensorflow as tf

from kmlm.cli.main import main
from kmlm.wordvec.glove import GloveSettings, cooccurrence_counts, glove_weights, train_glove
from kmlm.wordvec.vectors import WordVectors
from tests.helpers import write_corpus
from tests.wordvec.corpora import neighbour_purity, planted_groups

TEXTS = ["The cat sat on the mat, the end.", "A dog; the cat!", "cat"]


def _brute_force(texts, vocabulary, window, symmetric, distance_weighting):
    counts = {}
    for text in texts:
        words = [w for w in "".join(c if c.isalpha() else " " for c in text.lower()).split() if w in vocabulary]
        for i, left in enumerate(words):
            for j in range(i + 1, min(len(words), i + window + 1)):
                weight = 1.0 / (j - i) if distance_weighting else 1.0
                pairs = [(left, words[j])] + ([(words[j], left)] if symmetric else [])
                for a, b in pairs:
                    counts[(a, b)] = counts.get((a, b), 0.0) + weight
    return counts


@pytest.mark.parametrize("symmetric, distance_weighting, window", [(True, True, 3), (False, False, 2), (True, True, 10)])
def test_cooccurrence_counts_equal_a_brute_force_count(symmetric, distance_weighting, window):
    vocabulary = ["the", "cat", "sat", "mat", "end", "dog"]  # "on" and "a" are removed before windowing
    rows, cols, values = cooccurrence_counts(tf.data.Dataset.from_tensor_slices(TEXTS), vocabulary, window,
                                             symmetric, distance_weighting)
    counted = {(vocabulary[r], vocabulary[c]): v for r, c, v in zip(rows, cols, values)}
    expected = _brute_force(TEXTS, set(vocabulary), window, symmetric, distance_weighting)
    assert counted.keys() == expected.keys()
    for key, value in expected.items():
        assert counted[key] == pytest.approx(value), key
    keys = rows.astype(np.int64) * len(vocabulary) + cols
    assert np.all(np.diff(keys) > 0)


def test_weighting_function():
    np.testing.assert_allclose(glove_weights([1, 100, 250], x_max=100, alpha=0.75), [0.01**0.75, 1.0, 1.0])


def test_training_lowers_the_loss_and_recovers_planted_groups():
    settings = GloveSettings(dim=16, window=5, min_count=1, epochs=50, batch_size=64, learning_rate=0.3)
    result = train_glove(tf.data.Dataset.from_tensor_slices(planted_groups(3000)), settings)
    losses = result.history["loss"]
    assert losses[-1] < 0.2 * losses[0] and all(b < a for a, b in zip(losses, losses[1:]))
    assert neighbour_purity(result.vectors) >= 0.75
    np.testing.assert_allclose(result.vectors.vectors, result.model.word_vectors())


def test_cli_writes_glove_text(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus, planted_groups(300))
    out = tmp_path / "glove"
    code = main(["glove", "--corpus", str(corpus), "--out", str(out), "--dim", "8", "--epochs", "2",
                 "--min-count", "1", "--format", "glove", "--quiet"])
    assert code == 0 and "co-occurrences" in capsys.readouterr().out
    assert len((out / "vectors.txt").read_text(encoding="utf-8").splitlines()[0].split()) == 9  # no header
    vectors = WordVectors.load(str(out / "vectors.txt"))
    assert vectors.dim == 8 and "cat" in vectors
    record = json.loads((out / "glove.json").read_text())
    assert record["settings"]["dim"] == 8 and len(record["loss"]) == 2
    code = main(["glove", "--corpus", str(corpus), "--out", str(out), "--x-max", "-1"])
    assert code == 2 and "must be positive" in capsys.readouterr().err

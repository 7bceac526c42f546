"""GloVe: co-occurrence counts against a brute-force count, the weighting function, and
training that lowers the loss, recovers planted word groups and repeats itself with one
worker."""

import json

import numpy as np
import pytest
import tensorflow as tf

from kmlm.cli.main import main
from kmlm.wordvec.glove import GloveSettings, cooccurrence_counts, glove_weights, train_glove
from kmlm.wordvec.vectors import WordVectors
from tests.helpers import write_corpus
from tests.wordvec.corpora import GROUPS, neighbour_purity, planted_groups

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
    settings = GloveSettings(dim=16, window=5, min_count=1, epochs=50, workers=2)
    result = train_glove(tf.data.Dataset.from_tensor_slices(planted_groups(3000)), settings)
    losses = result.history["loss"]
    assert losses[-1] < 0.2 * losses[0] and all(b < a for a, b in zip(losses[:10], losses[1:10]))
    assert neighbour_purity(result.vectors) >= 0.75
    within, across = _cluster_similarities(result.vectors)
    assert within > across + 0.3
    np.testing.assert_allclose(result.vectors.vectors, result.tables.word + result.tables.context)
    assert len(result.entries_per_second) == 50 and min(result.entries_per_second) > 0


def _cluster_similarities(vectors):
    """Mean cosine between words of the same planted group and between words of different ones."""
    words = [w for group in GROUPS.values() for w in group]
    group_of = {w: name for name, group in GROUPS.items() for w in group}
    rows = np.array([vectors[w] for w in words])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    cosines = rows @ rows.T
    same = np.array([[group_of[a] == group_of[b] for b in words] for a in words])
    np.fill_diagonal(same, False)
    different = ~same
    np.fill_diagonal(different, False)
    return cosines[same].mean(), cosines[different].mean()


def test_one_worker_and_a_seed_give_the_same_vectors():
    documents = tf.data.Dataset.from_tensor_slices(planted_groups(300))
    settings = GloveSettings(dim=8, window=3, min_count=1, epochs=3, workers=1, seed=5)
    first, second = (train_glove(documents, settings).vectors.vectors for _ in range(2))
    np.testing.assert_array_equal(first, second)


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
    assert record["settings"]["workers"] == 0 and len(record["cooccurrences_per_second"]) == 2
    code = main(["glove", "--corpus", str(corpus), "--out", str(out), "--x-max", "-1"])
    assert code == 2 and "must be positive" in capsys.readouterr().err

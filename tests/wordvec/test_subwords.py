"""Character n-grams and their hashes against gensim's fastText implementation, and word
vectors built from n-gram rows against a hand computation."""

import numpy as np
import pytest

from kmlm.wordvec.subwords import SubwordVectors, character_ngrams, ngram_buckets, ngram_hashes, subword_rows

gensim_fasttext = pytest.importorskip("gensim.models.fasttext")

WORDS = ["where", "a", "été", "Привет", "naïve", "北京大学", "co-operate", "x" * 30, "🙂ok"]


@pytest.mark.parametrize("min_n,max_n", [(3, 6), (1, 3), (2, 4), (5, 5)])
def test_ngrams_are_gensims_in_the_same_order(min_n, max_n):
    for word in WORDS:
        assert character_ngrams(word, min_n, max_n) == gensim_fasttext.compute_ngrams_bytes(word, min_n, max_n), word


def test_hashes_are_fasttexts_fnv1a_over_signed_bytes():
    ngrams = [g for word in WORDS for g in character_ngrams(word, 1, 6)]
    assert any(b >= 0x80 for g in ngrams for b in g)  # the signed-char case is exercised
    ours = ngram_hashes(ngrams)
    assert ours.dtype == np.uint32
    assert ours.tolist() == [gensim_fasttext.ft_hash_bytes(g) for g in ngrams]


def test_buckets_are_gensims_ngram_hashes():
    for word in WORDS:
        assert ngram_buckets(word, 3, 6, 2_000_000).tolist() == gensim_fasttext.ft_ngram_hashes(word, 3, 6, 2_000_000)
    buckets, splits = subword_rows(WORDS, 3, 6, 1000)
    for i, word in enumerate(WORDS):
        assert buckets[splits[i] : splits[i + 1]].tolist() == gensim_fasttext.ft_ngram_hashes(word, 3, 6, 1000)


def test_unseen_word_is_the_mean_of_its_ngram_rows_and_a_seen_word_includes_its_own_row():
    rng = np.random.default_rng(1)
    words = ["walk", "talk"]
    word_rows, ngram_rows = rng.normal(size=(2, 5)), rng.normal(size=(97, 5))
    vectors = SubwordVectors(words, word_rows, ngram_rows, 3, 6)
    rows = gensim_fasttext.ft_ngram_hashes("walking", 3, 6, 97)
    np.testing.assert_allclose(vectors.vector("walking"), ngram_rows[rows].mean(axis=0), rtol=1e-5)
    rows = gensim_fasttext.ft_ngram_hashes("walk", 3, 6, 97)
    expected = (word_rows[0] + ngram_rows[rows].sum(axis=0)) / (1 + len(rows))
    np.testing.assert_allclose(vectors.vector("walk"), expected, rtol=1e-5)
    np.testing.assert_allclose(vectors["walk"], vectors.vectors[0])
    assert vectors.has_vector("walking") and "walking" not in vectors
    assert [w for w, _ in vectors.most_similar("walking", top_n=2)] == sorted(
        words, key=lambda w: -vectors.similarity("walking", w))


def test_a_word_without_ngrams_names_itself():
    vectors = SubwordVectors(["walk"], np.ones((1, 4)), np.ones((10, 4)), 0, 0)
    assert not vectors.has_vector("running")
    with pytest.raises(KeyError, match="'running' is not in the vocabulary and has no character n-grams"):
        vectors.vector("running")

"""Words of the vector trainers: the in-graph splitter, counts, vocabulary and id lookup
against plain Python."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from kmlm.wordvec.words import build_vocabulary, count_words, known_word_ids, split_words, word_id_table

TEXTS = ["The cat sat on the mat.", "A dog; the cat!", "cat", ""]


def test_split_words_lowercases_splits_on_non_letters_and_isolates_cjk():
    words = split_words(tf.constant(["Don't PANIC: 42 Éclairs!", "我爱NLP模型"])).to_list()
    assert [w.decode() for w in words[0]] == ["don", "t", "panic", "éclairs"]
    assert [w.decode() for w in words[1]] == ["我", "爱", "nlp", "模", "型"]


def _python_words(text):
    return "".join(c if c.isalpha() else " " for c in text.lower()).split()


def test_counts_and_vocabulary_match_python():
    counts = count_words(tf.data.Dataset.from_tensor_slices(TEXTS))
    assert counts == dict(collections.Counter(w for text in TEXTS for w in _python_words(text)))
    vocabulary, frequencies = build_vocabulary(counts, 2)
    assert vocabulary == ["cat", "the"] and frequencies.tolist() == [3, 3]  # ties alphabetical
    with pytest.raises(ValueError, match="no word occurs --min-count 9 times \\(the most frequent occurs 3 times\\)"):
        build_vocabulary(counts, 9)


def test_known_word_ids_drop_other_words_and_keep_the_text_of_each():
    vocabulary = ["the", "cat", "mat", "dog"]
    ids, texts = known_word_ids(tf.constant(TEXTS), word_id_table(vocabulary))
    expected = [(vocabulary.index(w), n) for n, text in enumerate(TEXTS) for w in _python_words(text) if w in vocabulary]
    assert list(zip(ids.numpy().tolist(), texts.numpy().tolist())) == expected
    assert ids.dtype == tf.int32 and texts.dtype == tf.int32
    np.testing.assert_array_equal(word_id_table(vocabulary).lookup(tf.constant(["dog", "zebra"])).numpy(), [3, -1])

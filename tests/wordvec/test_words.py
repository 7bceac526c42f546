"""Words of the vector trainers: the in-graph splitter, counts, vocabulary and id lookup
against plain Python."""

import collections
import os
import re

import jieba
import numpy as np
import pytest
import tensorflow as tf

from kmlm.wordvec.word2vec import Word2VecSettings, corpus_vocabulary
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


CHINESE = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "chinese_sentences.txt"),
               encoding="utf-8").read().split()
HAN = re.compile("[\u4e00-\u9fd5]+")


def test_with_jieba_chinese_words_are_jieba_words_and_other_text_splits_as_before():
    reference = jieba.Tokenizer()  # jieba on its own; the punctuation of these sentences is not a word
    words = split_words(tf.constant(CHINESE), "jieba").to_list()
    for text, row in zip(CHINESE, words):
        assert [w.decode() for w in row] == [w for w in reference.lcut(text) if HAN.fullmatch(w)]
    english = TEXTS + ["Don't PANIC: 42 Éclairs!", "x86 e.g. [MASK]"]
    assert split_words(tf.constant(english), "jieba").to_list() == split_words(tf.constant(english)).to_list()


def test_chinese_word_vectors_are_vectors_of_multi_character_words():
    documents = tf.data.Dataset.from_tensor_slices(CHINESE * 3)
    counts = count_words(documents, "jieba")
    reference = jieba.Tokenizer()
    expected = collections.Counter(w for text in CHINESE * 3 for w in reference.lcut(text) if HAN.fullmatch(w))
    assert counts == dict(expected)
    settings = Word2VecSettings(min_count=3, segmenter="jieba")
    vocabulary, _ = corpus_vocabulary(documents, settings)  # what word2vec and fastText train on
    multi = [w for w in vocabulary if len(w) > 1]
    assert {"学习", "计算机", "公司"} <= set(multi) and len(multi) > len(vocabulary) / 2
    assert set(vocabulary) == {w for w, n in expected.items() if n >= 3}
    ids, rows = known_word_ids(tf.constant(CHINESE[:5]), word_id_table(vocabulary), "jieba")
    assert ids.numpy().tolist() == [vocabulary.index(w) for text in CHINESE[:5] for w in reference.lcut(text)
                                    if w in vocabulary]
    without = count_words(documents)
    assert all(len(w) == 1 for w in without if HAN.fullmatch(w))  # characters without the segmenter
    with pytest.raises(ValueError, match=r"^unknown segmenter 'thulac'; use one of jieba \(or none: no segmentation\)$"):
        Word2VecSettings(segmenter="thulac").validate()

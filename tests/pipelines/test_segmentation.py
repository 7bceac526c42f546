"""Chinese word segmentation: pieces against jieba run on its own, unchanged tokens, word
marks, the refusals, and a quiet first use."""

import logging
import os
import re

import jieba
import pytest
import tensorflow as tf

from kmlm.pipelines import MaskingConfig, learn_vocabulary, make_tokenizer
from kmlm.pipelines.segmentation import chinese_word_pieces, segment_texts, tokenize_words, word_cutter

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "chinese_sentences.txt")
SENTENCES = open(DATA, encoding="utf-8").read().split()
MIXED = ["用Python写代码很有意思，e.g. 机器学习 [MASK] 模型", "Don't panic: 42 cats", "", "  北京  ",
         "T恤衫和卡拉OK", "深度学习x86服务器"]


# jieba on its own, as a user would run it: the reference of every check here.
REFERENCE = jieba.Tokenizer()


def test_pieces_put_the_multi_character_han_words_of_jieba_at_odd_places():
    for text in SENTENCES + MIXED:
        pieces = chinese_word_pieces(text, "jieba")
        assert "".join(pieces) == text and len(pieces) % 2 == 1
        expected = [w for w in REFERENCE.lcut(text) if len(w) >= 2 and all("\u4e00" <= c <= "\u9fd5" for c in w)]
        assert pieces[1::2] == expected
    assert chinese_word_pieces("", "jieba") == [""]


def test_segment_texts_in_the_graph_matches_python():
    ragged = segment_texts(tf.constant(SENTENCES[:5] + MIXED), "jieba")
    rows = [[piece.decode() for piece in row] for row in ragged.to_list()]
    assert rows == [chinese_word_pieces(text, "jieba") for text in SENTENCES[:5] + MIXED]


def test_tokens_stay_those_of_the_tokenizer_and_only_word_characters_continue():
    texts = SENTENCES + MIXED
    vocabulary = learn_vocabulary(texts, 600)
    tokenize = tf.function(make_tokenizer(vocabulary).tokenize)
    token_ids, continues = tokenize_words(make_tokenizer(vocabulary), tf.constant(texts), "jieba")
    assert token_ids.to_list() == tokenize(tf.constant(texts)).to_list()
    # Expected: 1 on every Han character but the first of a multi-character jieba word; the
    # text between those words is tokenized as a whole (all 0).
    parts = []
    for text in texts:
        other, row = "", []
        for word in REFERENCE.lcut(text):
            if len(word) > 1 and re.fullmatch("[\u4e00-\u9fd5]+", word):
                row += [other, word]
                other = ""
            else:
                other += word
        parts.append(row + [other])
    others = tokenize(tf.constant([p for row in parts for p in row[0::2]])).to_list()
    for row, ids, marks in zip(parts, token_ids.to_list(), continues.to_list()):
        expected = []
        for i, part in enumerate(row):
            expected += [0] + [1] * (len(part) - 1) if i % 2 else [0] * len(others.pop(0))
        assert marks == expected and len(marks) == len(ids), row


def test_bad_segmenters_are_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match=r"^unknown segmenter 'ltp'; use one of jieba \(or none: no segmentation\)$"):
        MaskingConfig(strategy="whole_word", segmenter="ltp")
    with pytest.raises(ValueError, match="^segmenter 'jieba' only changes whole_word and span masking; use "
                                         r"--masking whole_word \(or span\), or leave --segmenter out$"):
        MaskingConfig(strategy="token", segmenter="jieba")
    assert MaskingConfig(strategy="span", segmenter="jieba").segmenter == "jieba"


def test_first_use_prints_nothing(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="jieba")
    word_cutter.cache_clear()  # load the dictionary again, as a fresh process does
    assert "/".join(word_cutter("jieba")("我爱北京天安门")) == "我/爱/北京/天安门"
    out, err = capfd.readouterr()
    assert out == "" and "prefix dict" not in err and caplog.records == [], (err, caplog.text)
    jieba.Tokenizer().initialize()  # jieba on its own does log it: the check above can fail
    assert "Building prefix dict" in caplog.text

"""Chinese whole-word masking (Chinese BERT-wwm): over many batches, the masked characters
are always whole jieba words (jieba run on its own on the same text), at the configured
rate; English text masks exactly as without a segmenter."""

import os

import jieba
import numpy as np
import pytest
import tensorflow as tf

from kmlm.pipelines import MaskingConfig, learn_vocabulary, mlm_dataset

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "chinese_sentences.txt")
SENTENCES = open(DATA, encoding="utf-8").read().split()
SEQ_LEN, BATCH = 64, 32


@pytest.fixture(scope="module")
def chinese():
    """400 documents of one or two sentences (each fits a row), and their vocabulary."""
    rng = np.random.default_rng(0)
    documents = ["".join(rng.choice(SENTENCES, size=rng.integers(1, 3))) for _ in range(400)]
    return documents, learn_vocabulary(documents, 2000)


def _masked_rows(documents, vocabulary, segmenter, rate=0.15, strategy="whole_word"):
    """Per document: its masked character positions (checking that each character is a
    token of its own, none of them special)."""
    masking = MaskingConfig(strategy=strategy, rate=rate, seed=7, segmenter=segmenter)
    batches = mlm_dataset(tf.data.Dataset.from_tensor_slices(documents), vocabulary, seq_len=SEQ_LEN,
                          batch_size=BATCH, masking=masking, packing=False, deterministic_eval=True)
    rows = []
    for x, _, weights in batches.as_numpy_iterator():
        for token_ids, positions, used in zip(x["token_ids"], x["mask_positions"], weights):
            if (token_ids != 0).any():
                assert (token_ids != 0).sum() - 2 == len(documents[len(rows)]) and 1 not in token_ids
                rows.append({int(p) - 1 for p, u in zip(positions, used) if u})  # character index
    return rows


def _split_words(masked, words):
    """The jieba words that are partly, not wholly, masked."""
    split, start = [], 0
    for word in words:
        span = set(range(start, start + len(word)))
        if span & masked and not span <= masked:
            split.append(word)
        start += len(word)
    return split


def test_masked_characters_are_whole_jieba_words_at_the_configured_rate(chinese):
    documents, vocabulary = chinese
    reference = jieba.Tokenizer()
    masked_rows = _masked_rows(documents, vocabulary, "jieba")
    assert len(masked_rows) == len(documents)
    masked = characters = in_words = 0
    for document, rows in zip(documents, masked_rows):
        words = reference.lcut(document)
        assert _split_words(rows, words) == [], (document, sorted(rows))
        masked += len(rows)
        characters += len(document)
        starts = np.cumsum([0] + [len(w) for w in words])
        in_words += sum(len(w) for w, start in zip(words, starts) if len(w) > 1 and start in rows)
    assert abs(masked / characters - 0.15) < 0.01, masked / characters
    # Multi-character words are masked, as often as their share of the text.
    word_share = sum(len(w) for d in documents for w in reference.lcut(d) if len(w) > 1) / characters
    assert abs(in_words / masked - word_share) < 0.1, (in_words / masked, word_share)

    # Without the segmenter, the same check fails: characters are masked one by one.
    plain = _masked_rows(documents, vocabulary, None)
    assert sum(len(_split_words(rows, reference.lcut(d))) for d, rows in zip(documents, plain)) > 50


def test_span_masking_takes_whole_jieba_words_too(chinese):
    documents, vocabulary = chinese
    reference = jieba.Tokenizer()
    masked_rows = _masked_rows(documents[:96], vocabulary, "jieba", rate=0.3, strategy="span")
    for document, rows in zip(documents, masked_rows):
        assert _split_words(rows, reference.lcut(document)) == [], document
    rate = sum(map(len, masked_rows)) / sum(map(len, documents[:96]))
    assert abs(rate - 0.3) < 0.03, rate  # spans of several words land less exactly than words


def test_english_masks_are_identical_with_and_without_the_segmenter(python_docs, vocabulary):
    documents = tf.data.Dataset.from_tensor_slices(python_docs[:200])

    def batches(segmenter):
        masking = MaskingConfig(strategy="whole_word", rate=0.3, seed=3, segmenter=segmenter)
        dataset = mlm_dataset(documents, vocabulary, seq_len=128, batch_size=16, masking=masking, shuffle_buffer=64)
        return list(dataset.take(3).as_numpy_iterator())

    with_segmenter, without = batches("jieba"), batches(None)
    for (x1, y1, w1), (x2, y2, w2) in zip(with_segmenter, without):
        assert sorted(x1) == sorted(x2)
        for name in x1:
            np.testing.assert_array_equal(x1[name], x2[name], err_msg=name)
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(w1, w2)
    assert sum(w.sum() for _, _, w in without) > 0


def test_the_run_config_records_the_segmenter_and_the_command_line_takes_it():
    from kmlm.cli.main import build_parser
    from kmlm.pretraining.job import run_record
    from kmlm.pretraining.objectives import objective_for
    from kmlm.pretraining.settings import PretrainSettings
    from kmlm.run_directory import RunConfig

    args = build_parser().parse_args(["pretrain", "--masking", "whole_word", "--segmenter", "jieba", "--out", "x"])
    assert args.segmenter == "jieba" and build_parser().parse_args(["pretrain", "--out", "x"]).segmenter == "none"
    settings = PretrainSettings(preset="tiny", masking="whole_word", segmenter="jieba")
    settings.validate()
    assert settings.masking_config().segmenter == "jieba"
    record = run_record(settings, objective_for(settings), vocabulary_size=100)
    assert record.to_dict()["data"]["segmenter"] == "jieba"
    assert RunConfig.from_dict(record.to_dict()) == record
    plain = PretrainSettings(preset="tiny", masking="whole_word")
    assert "segmenter" not in run_record(plain, objective_for(plain), vocabulary_size=100).to_dict()["data"]
    with pytest.raises(ValueError, match=r"^--segmenter jieba needs --objective mlm \(sentence pairs are masked "
                                         r"without a segmenter\)$"):
        PretrainSettings(masking="whole_word", segmenter="jieba", objective="mlm+sop").validate()

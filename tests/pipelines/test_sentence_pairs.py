"""Sentence-pair examples for NSP / SOP: balanced labels, true and false pairs, row layout."""

import numpy as np
import pytest
import tensorflow as tf

from kmlm.pipelines import SPECIAL_TOKENS, MaskingConfig
from kmlm.pipelines.sentence_pairs import SentencePairSampler, pair_rows, sentence_pair_dataset, split_sentences

# Document d is the sentences "sD_0 ." ... "sD_k ." : every sentence names its document and place.
DOCUMENTS = [" ".join(f"s{d}x{i} w." for i in range(3 + d % 4)) for d in range(41)]


def _sentences(text):
    return [s.split()[0] for s in split_sentences(text)]


def test_split_sentences():
    assert split_sentences("One two. Three!  Four?\nFive 今天很好。明天") == ["One two.", "Three!", "Four?", "Five 今天很好。", "明天"]


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_pairs_are_half_positive_and_labels_say_what_happened(objective):
    sampler = SentencePairSampler(DOCUMENTS, objective, seq_len=24, seed=5)
    pairs = sampler.pairs(epoch=0)
    assert len(pairs) == len(DOCUMENTS)  # one pair per document (all have >= 2 sentences)
    labels = [label for _, _, label in pairs]
    assert abs(sum(labels) - len(labels) / 2) <= 0.5  # 50/50 within one pair
    for a, b, label in pairs:
        a_ids, b_ids = _sentences(a), _sentences(b)
        doc_a, doc_b = {s.split("x")[0] for s in a_ids}, {s.split("x")[0] for s in b_ids}
        assert len(doc_a) == 1 and len(doc_b) == 1
        a_pos, b_pos = [int(s.split("x")[1]) for s in a_ids], [int(s.split("x")[1]) for s in b_ids]
        assert a_pos == list(range(a_pos[0], a_pos[-1] + 1)) and b_pos == list(range(b_pos[0], b_pos[-1] + 1))
        if objective == "nsp" and label == 1:
            assert doc_a != doc_b  # B comes from another document
        elif objective == "nsp":
            assert doc_a == doc_b and b_pos[0] == a_pos[-1] + 1  # B is what follows A
        elif label == 1:
            assert doc_a == doc_b and a_pos[0] == b_pos[-1] + 1  # swapped
        else:
            assert doc_a == doc_b and b_pos[0] == a_pos[-1] + 1
    assert sampler.pairs(epoch=0) == pairs  # reproducible
    assert sampler.pairs(epoch=1) != pairs  # new draws every pass
    many = [label for epoch in range(10) for _, _, label in sampler.pairs(epoch)]
    assert np.mean(many) == pytest.approx(0.5, abs=0.02)


def test_pair_sampler_errors():
    with pytest.raises(ValueError, match="no document has two sentences"):
        SentencePairSampler(["one sentence only", "another"], "sop", 32)
    with pytest.raises(ValueError, match="at least two documents"):
        SentencePairSampler(["One. Two."], "nsp", 32)
    with pytest.raises(ValueError, match="unknown sentence-pair objective 'xyz'"):
        SentencePairSampler(DOCUMENTS, "xyz", 32)


def _layout(a, b, seq_len):
    """Reference layout: pop from the longer side (B on ties) until the pair fits."""
    a, b = list(a), list(b)
    while len(a) + len(b) > seq_len - 3:
        (a if len(a) > len(b) else b).pop()
    tokens = [2] + a + [3] + b + [3]
    segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    pad = seq_len - len(tokens)
    return tokens + [0] * pad, segments + [0] * pad, [1] * len(tokens) + [0] * pad


def test_pair_rows_truncate_longest_first():
    rng = np.random.default_rng(0)
    seq_len = 16
    a = [list(rng.integers(5, 50, size=n)) for n in rng.integers(0, 20, size=40)]
    b = [list(rng.integers(5, 50, size=n)) for n in rng.integers(0, 20, size=40)]
    rows = pair_rows(tf.ragged.constant(a, dtype=tf.int32), tf.ragged.constant(b, dtype=tf.int32), seq_len,
                     cls_id=2, sep_id=3)
    for i in range(40):
        tokens, segments, documents = _layout(a[i], b[i], seq_len)
        assert rows["token_ids"][i].numpy().tolist() == tokens
        assert rows["segment_ids"][i].numpy().tolist() == segments
        assert rows["document_ids"][i].numpy().tolist() == documents


def test_dataset_batches_carry_labels_and_segments():
    vocabulary = list(SPECIAL_TOKENS) + ["w", "."] + sorted({s.split()[0] for d in DOCUMENTS for s in split_sentences(d)})
    dataset = sentence_pair_dataset(DOCUMENTS, vocabulary, objective="nsp", seq_len=24, batch_size=8,
                                    masking=MaskingConfig(seed=1), deterministic_eval=True)
    labels, rows = [], 0
    for features, targets, weights in dataset:
        assert features["token_ids"].shape == (8, 24) and features["mask_positions"].shape == (8, 8)
        assert targets["masked_lm"].shape == (8, 8) and targets["next_sentence"].shape == (8,)
        real = weights["next_sentence"].numpy() > 0
        labels += targets["next_sentence"].numpy()[real].tolist()
        rows += int(real.sum())
        segments = features["segment_ids"].numpy()[real]
        assert (segments[:, 0] == 0).all() and (segments.max(1) == 1).all()
    assert rows == len(DOCUMENTS) and abs(sum(labels) - rows / 2) <= 0.5

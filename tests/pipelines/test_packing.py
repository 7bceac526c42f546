"""pack_documents / pad_documents against a plain-Python reference."""

import math

import numpy as np
import pytest
import tensorflow as tf

from kmlm.pipelines import pack_documents, pad_documents

CLS, SEP = 2, 3


def random_documents(rng, count, longest):
    """Token lists with ids >= 5 (never special), some empty, some longer than a row."""
    return [list(rng.integers(5, 1000, size=rng.integers(0, longest + 1))) for _ in range(count)]


def ragged(documents):
    return tf.ragged.constant(documents, dtype=tf.int32, ragged_rank=1, inner_shape=())


def expected_stream(documents):
    """(tokens, owner) of the stream [CLS] doc [SEP] ... over the non-empty documents."""
    tokens, owner = [], []
    for index, document in enumerate(d for d in documents if d):
        segment = [CLS, *document, SEP]
        tokens += segment
        owner += [index] * len(segment)
    return tokens, owner


@pytest.mark.parametrize("seq_len", [8, 13, 64])
@pytest.mark.parametrize("seed", range(6))
def test_pack_keeps_every_token_in_order_and_numbers_documents(seq_len, seed):
    rng = np.random.default_rng(seed)
    documents = random_documents(rng, count=int(rng.integers(1, 30)), longest=3 * seq_len)
    rows = {k: v.numpy() for k, v in pack_documents(
        ragged(documents), seq_len, cls_id=CLS, sep_id=SEP).items()}
    tokens, owner = expected_stream(documents)

    assert rows["token_ids"].dtype == np.int32 and rows["document_ids"].dtype == np.int32
    assert rows["token_ids"].shape == (math.ceil(len(tokens) / seq_len), seq_len)
    flat = rows["token_ids"].reshape(-1)
    np.testing.assert_array_equal(flat[: len(tokens)], tokens)
    # Padding only at the end of the last row.
    np.testing.assert_array_equal(flat[len(tokens):], 0)
    np.testing.assert_array_equal(rows["segment_ids"], 0)

    expected_ids = []
    for start in range(0, len(flat), seq_len):
        row_owner = owner[start:start + seq_len]
        numbering = {doc: i + 1 for i, doc in enumerate(dict.fromkeys(row_owner))}
        ids = [numbering[doc] for doc in row_owner]
        expected_ids.append(ids + [0] * (seq_len - len(ids)))
    np.testing.assert_array_equal(rows["document_ids"], expected_ids)


def test_pack_inside_dataset_map_has_static_row_length():
    documents = tf.data.Dataset.from_tensor_slices(ragged([[5, 6], [7], [], [8, 9, 10]]))
    rows = documents.batch(3).map(lambda docs: pack_documents(docs, 8, cls_id=CLS, sep_id=SEP))
    assert rows.element_spec["token_ids"].shape.as_list() == [None, 8]
    tokens = np.concatenate([r["token_ids"].reshape(-1) for r in rows.as_numpy_iterator()])
    assert [t for t in tokens if t] == [CLS, 5, 6, SEP, CLS, 7, SEP, CLS, 8, 9, 10, SEP]


def test_pack_of_only_empty_documents_gives_no_rows():
    rows = pack_documents(ragged([[], []]), 8, cls_id=CLS, sep_id=SEP)
    assert rows["token_ids"].shape == (0, 8)


@pytest.mark.parametrize("seed", range(4))
def test_pad_truncates_and_pads_one_document_per_row(seed):
    rng = np.random.default_rng(seed)
    seq_len = 16
    documents = random_documents(rng, count=20, longest=30)
    rows = {k: v.numpy() for k, v in pad_documents(
        ragged(documents), seq_len, cls_id=CLS, sep_id=SEP).items()}
    kept = [d for d in documents if d]
    assert rows["token_ids"].shape == (len(kept), seq_len)
    for document, tokens, ids in zip(kept, rows["token_ids"], rows["document_ids"]):
        segment = [CLS, *document[: seq_len - 2], SEP]
        padding = seq_len - len(segment)
        np.testing.assert_array_equal(tokens, segment + [0] * padding)
        np.testing.assert_array_equal(ids, [1] * len(segment) + [0] * padding)
    np.testing.assert_array_equal(rows["segment_ids"], 0)


@pytest.mark.parametrize("function", [pack_documents, pad_documents])
def test_too_short_seq_len_is_refused(function):
    with pytest.raises(ValueError) as error:
        function(ragged([[5]]), 4, cls_id=CLS, sep_id=SEP)
    assert str(error.value) == (
        "seq_len=4 is too short; use an integer of at least 8 (e.g. --seq-len 128)"
    )


def test_dense_input_is_refused():
    with pytest.raises(ValueError, match="must be a tf.RaggedTensor"):
        pack_documents(tf.constant([[5, 6]]), 8, cls_id=CLS, sep_id=SEP)

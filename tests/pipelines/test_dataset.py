"""mlm_dataset end to end on the builtin corpus."""

import numpy as np
import pytest
import tensorflow as tf

from kmlm.pipelines import (
    MaskingConfig,
    load_documents,
    max_predictions_for,
    mlm_dataset,
    special_ids,
    split_documents,
)

SEQ_LEN, BATCH = 64, 16


@pytest.fixture(scope="module")
def documents():
    return load_documents("builtin:python-docs")


def numpy_batches(dataset, count=None):
    if count is not None:
        dataset = dataset.take(count)
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset]


def test_training_batches_have_the_model_contract(documents, vocabulary):
    masking = MaskingConfig(strategy="whole_word", rate=0.3)
    dataset = mlm_dataset(documents, vocabulary, seq_len=SEQ_LEN, batch_size=BATCH,
                          masking=masking, shuffle_buffer=256)
    predictions = max_predictions_for(SEQ_LEN, 0.3)
    features, mask_ids, weights = dataset.element_spec
    assert set(features) == {"token_ids", "segment_ids", "document_ids", "mask_positions"}
    for name in ("token_ids", "segment_ids", "document_ids"):
        assert features[name] == tf.TensorSpec([BATCH, SEQ_LEN], tf.int32)
    assert features["mask_positions"] == tf.TensorSpec([BATCH, predictions], tf.int32)
    assert mask_ids == tf.TensorSpec([BATCH, predictions], tf.int32)
    assert weights == tf.TensorSpec([BATCH, predictions], tf.float32)
    mask_id = special_ids(vocabulary).mask
    for features, mask_ids, weights in numpy_batches(dataset, 5):
        assert weights.sum() > 0.2 * BATCH * SEQ_LEN * 0.8
        slots = weights > 0
        rows = np.nonzero(slots)[0]
        corrupted = features["token_ids"][rows, features["mask_positions"][slots]]
        assert np.mean(corrupted == mask_id) > 0.6


def test_training_mode_repeats_and_shuffles(vocabulary):
    small = tf.data.Dataset.from_tensor_slices(["A short document about the same thing."] * 10
                                               + [f"Document number {i}." for i in range(10)])
    dataset = mlm_dataset(small, vocabulary, seq_len=16, batch_size=4, shuffle_buffer=8)
    # The corpus holds far fewer than 50 batches of rows; training mode never runs out.
    assert len(numpy_batches(dataset, 50)) == 50


def test_eval_mode_is_deterministic_and_loses_nothing(documents, vocabulary):
    held_out = split_documents(documents, "eval")

    def build():
        return mlm_dataset(held_out, vocabulary, seq_len=SEQ_LEN, batch_size=BATCH,
                           masking=MaskingConfig(strategy="span"), deterministic_eval=True)

    dataset = build()
    first = numpy_batches(dataset)
    again = numpy_batches(dataset)
    rebuilt = numpy_batches(build())
    assert len(first) >= 2
    for a, b, c in zip(first, again, rebuilt, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
        tf.nest.map_structure(np.testing.assert_array_equal, a, c)
    # The last batch is filled up with empty rows (no weight) instead of being dropped.
    features, _, weights = first[-1]
    assert features["token_ids"].shape == (BATCH, SEQ_LEN)
    empty = ~np.any(features["document_ids"], axis=1)
    assert not np.any(weights[empty])
    # Every held-out token is in some batch: count the [SEP]s, one per document.
    sep = special_ids(vocabulary).sep
    n_documents = sum(1 for _ in held_out)
    assert sum(np.sum(b[0]["token_ids"] == sep) for b in first) == n_documents


def test_packing_wastes_far_less_than_padding(documents, vocabulary):
    def pad_fraction(packing):
        batches = numpy_batches(mlm_dataset(documents.take(2000), vocabulary, seq_len=128,
                                            batch_size=32,
                                            packing=packing, deterministic_eval=True))
        document_ids = np.concatenate([features["document_ids"] for features, _, _ in batches])
        return np.mean(document_ids == 0), len(document_ids)

    packed, packed_rows = pad_fraction(True)
    padded, padded_rows = pad_fraction(False)
    assert packed < 0.05 and padded > 0.4
    assert packed_rows < 0.6 * padded_rows


def test_input_context_gives_each_replica_its_own_documents(vocabulary):
    texts = tf.data.Dataset.from_tensor_slices([f"document {i} is here" for i in range(40)])
    sep = special_ids(vocabulary).sep

    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    batches = numpy_batches(mlm_dataset(texts, vocabulary, seq_len=16, batch_size=4,
                                        deterministic_eval=True, input_context=context))
    # Pipeline 1 of 2 gets every other document: 20 of them, one [SEP] each.
    assert sum(np.sum(b[0]["token_ids"] == sep) for b in batches) == 20


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seq_len": 4},
         "seq_len=4 is too short; use an integer of at least 8 (e.g. --seq-len 128)"),
        ({"batch_size": 0}, "batch_size=0 must be a positive integer"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message, vocabulary):
    with pytest.raises(ValueError) as raised:
        mlm_dataset(tf.data.Dataset.from_tensor_slices(["text"]), vocabulary, **kwargs)
    assert str(raised.value) == message

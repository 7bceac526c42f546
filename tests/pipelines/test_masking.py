"""Masker statistics on real tokenized text, and its invariants, against independent checks."""

import math
from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf

from kmlm.pipelines import (
    SPECIAL_TOKENS,
    STRATEGIES,
    Masker,
    MaskingConfig,
    max_predictions_for,
    special_ids,
)

SEQ_LEN = 128  # the row length of the `packed_rows` fixture (conftest.py)
BATCH = 32
STEPS = 200


def batch_at(rows, step, batch=BATCH):
    index = (np.arange(batch) + step * batch) % len(rows["token_ids"])
    return {name: values[index] for name, values in rows.items()}


def run(masker, rows, steps=STEPS):
    """Masks `steps` batches; yields numpy (batch, features, mask_ids, mask_weights)."""
    spec = {name: tf.TensorSpec([BATCH, SEQ_LEN], tf.int32) for name in rows}
    call = tf.function(masker, input_signature=[spec, tf.TensorSpec([], tf.int64)])
    for step in range(steps):
        batch = batch_at(rows, step)
        features, mask_ids, weights = call(batch, tf.constant(step, tf.int64))
        features = {name: value.numpy() for name, value in features.items()}
        yield batch, features, mask_ids.numpy(), weights.numpy()


def flags(vocabulary):
    special = np.array([token in SPECIAL_TOKENS for token in vocabulary])
    continuation = np.array([token.startswith("##") and len(token) > 2 for token in vocabulary])
    return special, continuation


def selected_grid(features, weights):
    """[B, S] bool: which positions the masker chose, rebuilt from the [B, P] slots."""
    grid = np.zeros(features["token_ids"].shape, bool)
    rows, slots = np.nonzero(weights)
    grid[rows, features["mask_positions"][rows, slots]] = True
    return grid


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq_len", [8, 64, 100, 128, 512])
@pytest.mark.parametrize("rate", [0.1, 0.15, 0.3, 0.5, 0.95])
def test_max_predictions_is_rate_times_length_rounded_up_to_eight(seq_len, rate):
    needed = math.ceil(Fraction(str(rate)) * seq_len)
    assert max_predictions_for(seq_len, rate) == min(seq_len, 8 * math.ceil(needed / 8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rate": 1.5}, "mask rate 1.5 is outside (0, 1); use e.g. --mask-rate 0.15"),
        ({"rate": 0.0}, "mask rate 0.0 is outside (0, 1); use e.g. --mask-rate 0.15"),
        ({"strategy": "words"},
         "unknown masking strategy 'words'; use one of token, whole_word, span"),
        ({"mask_token_rate": 0.95, "random_token_rate": 0.1},
         "mask_token_rate=0.95 plus random_token_rate=0.1 exceeds 1; the rest (kept tokens) "
         "cannot be negative"),
        ({"random_token_rate": -0.1},
         "random_token_rate=-0.1 must be within [0, 1], e.g. 0.8 and 0.1"),
    ],
)
def test_bad_masking_config_is_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError) as error:
        MaskingConfig(**kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_masking_statistics_and_invariants_on_real_text(strategy, rate, vocabulary, packed_rows):
    masker = Masker(vocabulary, MaskingConfig(strategy=strategy, rate=rate), SEQ_LEN)
    mask_id = special_ids(vocabulary).mask
    special, continuation = flags(vocabulary)
    counts = dict(candidates=0, selected=0, masked=0, kept=0, replaced=0)
    for batch, features, mask_ids, weights in run(masker, packed_rows):
        tokens, documents = batch["token_ids"], batch["document_ids"]
        candidate = (documents != 0) & ~special[tokens]
        selected = selected_grid(features, weights)
        used = weights > 0
        # Slots: used ones first, positions strictly ascending; unused ones all zero.
        assert np.all(np.diff(weights, axis=1) <= 0)
        unused_last = SEQ_LEN + np.arange(weights.shape[1])
        positions = np.where(used, features["mask_positions"], unused_last)
        assert np.all(np.diff(positions, axis=1) > 0)
        assert np.all(features["mask_positions"][~used] == 0) and np.all(mask_ids[~used] == 0)
        np.testing.assert_array_equal(
            mask_ids[used], tokens[np.nonzero(used)[0], features["mask_positions"][used]]
        )
        # Never padding, never a special token.
        assert not np.any(selected & ~candidate)
        # Outside the targets nothing changes; the other inputs pass through.
        np.testing.assert_array_equal(features["token_ids"][~selected], tokens[~selected])
        np.testing.assert_array_equal(features["document_ids"], documents)
        np.testing.assert_array_equal(features["segment_ids"], batch["segment_ids"])
        corrupted = features["token_ids"][selected]
        original = tokens[selected]
        randoms = corrupted[(corrupted != mask_id) & (corrupted != original)]
        assert not np.any(special[randoms])
        # Whole words: a `##` piece right after a candidate shares its selection.
        link = candidate[:, 1:] & candidate[:, :-1] & continuation[tokens[:, 1:]]
        if strategy != "token":
            np.testing.assert_array_equal(selected[:, 1:][link], selected[:, :-1][link])
        counts["candidates"] += candidate.sum()
        counts["selected"] += selected.sum()
        counts["masked"] += np.sum(corrupted == mask_id)
        counts["kept"] += np.sum(corrupted == original)
        counts["replaced"] += randoms.size
    assert counts["selected"] / counts["candidates"] == pytest.approx(rate, rel=0.03)
    # Random replacements land on the original token once in |vocabulary| draws.
    chance = 0.1 / (len(vocabulary) - len(SPECIAL_TOKENS))
    assert counts["masked"] / counts["selected"] == pytest.approx(0.8, abs=0.01)
    assert counts["kept"] / counts["selected"] == pytest.approx(0.1 + chance, abs=0.01)
    assert counts["replaced"] / counts["selected"] == pytest.approx(0.1 - chance, abs=0.01)


def test_token_strategy_does_split_words(vocabulary, packed_rows):
    """The whole-word check above can fail: plain token masking breaks words apart."""
    masker = Masker(vocabulary, MaskingConfig(strategy="token", rate=0.3), SEQ_LEN)
    special, continuation = flags(vocabulary)
    split = 0
    for batch, features, _, weights in run(masker, packed_rows, steps=20):
        tokens = batch["token_ids"]
        candidate = (batch["document_ids"] != 0) & ~special[tokens]
        selected = selected_grid(features, weights)
        link = candidate[:, 1:] & candidate[:, :-1] & continuation[tokens[:, 1:]]
        split += np.sum(selected[:, 1:][link] != selected[:, :-1][link])
    assert split > 0


def test_replacement_rates_are_configurable(vocabulary, packed_rows):
    config = MaskingConfig(rate=0.3, mask_token_rate=0.5, random_token_rate=0.5)
    masker = Masker(vocabulary, config, SEQ_LEN)
    mask_id = special_ids(vocabulary).mask
    masked = total = 0
    for batch, features, _, weights in run(masker, packed_rows, steps=20):
        selected = selected_grid(features, weights)
        masked += np.sum(features["token_ids"][selected] == mask_id)
        total += selected.sum()
    assert masked / total == pytest.approx(0.5, abs=0.03)


def units_per_row(units, row):
    values = units[row]
    return {u: np.flatnonzero(values == u) for u in np.unique(values[values > 0])}


def test_span_units_are_runs_of_whole_words_selected_together(vocabulary, packed_rows):
    masker = Masker(vocabulary, MaskingConfig(strategy="span", rate=0.3), SEQ_LEN)
    special, continuation = flags(vocabulary)
    for step in range(10):
        batch = batch_at(packed_rows, step)
        units = masker.units(batch, step).numpy()
        features, _, weights = masker(batch, step)
        selected = selected_grid({k: v.numpy() for k, v in features.items()}, weights.numpy())
        tokens = batch["token_ids"]
        candidate = (batch["document_ids"] != 0) & ~special[tokens]
        np.testing.assert_array_equal(units > 0, candidate)
        after_candidate = np.pad(candidate[:, :-1], ((0, 0), (1, 0)))
        word_start = candidate & ~(continuation[tokens] & after_candidate)
        for row in range(BATCH):
            for positions in units_per_row(units, row).values():
                # Contiguous, starting on a word, ending before the next word, 1..10 words.
                assert positions[-1] - positions[0] + 1 == len(positions)
                assert word_start[row, positions[0]]
                after = positions[-1] + 1
                assert after == SEQ_LEN or not candidate[row, after] or word_start[row, after]
                assert 1 <= word_start[row, positions].sum() <= 10
                assert len(set(selected[row, positions])) == 1


def truncated_geometric_mean(p, longest):
    lengths = np.arange(1, longest + 1)
    weights = p * (1 - p) ** (lengths - 1)
    return float(np.sum(lengths * weights) / np.sum(weights))


def test_span_lengths_follow_the_truncated_geometric_distribution(vocabulary):
    """On rows that are one long run of single-piece words, span lengths in words follow
    SpanBERT's truncated geometric distribution.

    Only spans starting in the first half of a row count: they all end inside the row, and
    "starts before a fixed position" is a stopping time, so (Wald) the pooled lengths are
    an unbiased sample, unlike "every span but the one cut by the row end".
    """
    special, continuation = flags(vocabulary)
    words = np.flatnonzero(~special & ~continuation)
    cls, sep = special_ids(vocabulary).cls, special_ids(vocabulary).sep
    masker = Masker(vocabulary, MaskingConfig(strategy="span"), SEQ_LEN)
    rng = np.random.default_rng(0)
    lengths = []
    for step in range(100):
        tokens = rng.choice(words, size=(BATCH, SEQ_LEN))
        tokens[:, 0], tokens[:, -1] = cls, sep
        batch = {"token_ids": tokens, "document_ids": np.ones_like(tokens)}
        units = masker.units(batch, step).numpy()
        for row in range(BATCH):
            _, starts, sizes = np.unique(units[row], return_index=True, return_counts=True)
            lengths.extend(sizes[(units[row][starts] > 0) & (starts < SEQ_LEN // 2)])
    lengths = np.array(lengths)
    assert lengths.min() >= 1 and lengths.max() <= 10
    assert lengths.mean() == pytest.approx(truncated_geometric_mean(0.2, 10), rel=0.01)
    # And the whole distribution, not only its mean.
    pmf = 0.2 * 0.8 ** np.arange(10)
    pmf /= pmf.sum()
    observed = np.bincount(lengths, minlength=11)[1:] / len(lengths)
    np.testing.assert_allclose(observed, pmf, atol=0.01)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_and_step_give_the_same_masks(strategy, vocabulary, packed_rows):
    config = MaskingConfig(strategy=strategy, seed=7)
    batch = batch_at(packed_rows, 3)
    first = Masker(vocabulary, config, SEQ_LEN)(batch, 5)
    again = Masker(vocabulary, config, SEQ_LEN)(batch, tf.constant(5, tf.int64))
    tf.nest.map_structure(np.testing.assert_array_equal, first, again)
    for other in (Masker(vocabulary, config, SEQ_LEN)(batch, 6),
                  Masker(vocabulary, MaskingConfig(strategy=strategy, seed=8), SEQ_LEN)(batch, 5)):
        assert not np.array_equal(first[0]["mask_positions"], other[0]["mask_positions"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_static_shapes_in_a_traced_function(strategy, vocabulary):
    masker = Masker(vocabulary, MaskingConfig(strategy=strategy), SEQ_LEN)
    spec = {name: tf.TensorSpec([BATCH, SEQ_LEN], tf.int32)
            for name in ("token_ids", "segment_ids", "document_ids")}
    concrete = tf.function(masker).get_concrete_function(spec, tf.TensorSpec([], tf.int64))
    features, mask_ids, weights = concrete.structured_outputs
    predictions = max_predictions_for(SEQ_LEN, 0.15)
    for name in ("token_ids", "segment_ids", "document_ids"):
        assert features[name].shape.as_list() == [BATCH, SEQ_LEN]
        assert features[name].dtype == tf.int32
    assert features["mask_positions"].shape.as_list() == [BATCH, predictions]
    assert features["mask_positions"].dtype == tf.int32
    assert mask_ids.shape.as_list() == [BATCH, predictions] and mask_ids.dtype == tf.int32
    assert weights.shape.as_list() == [BATCH, predictions] and weights.dtype == tf.float32


def test_rows_without_candidates_get_no_targets(vocabulary):
    ids = special_ids(vocabulary)
    tokens = np.zeros((2, 16), np.int32)
    tokens[1, :3] = [ids.cls, ids.mask, ids.sep]
    documents = np.zeros_like(tokens)
    documents[1, :3] = 1
    masker = Masker(vocabulary, MaskingConfig(), 16)
    features, mask_ids, weights = masker({"token_ids": tokens, "document_ids": documents}, 0)
    assert not np.any(weights.numpy()) and not np.any(mask_ids.numpy())
    np.testing.assert_array_equal(features["token_ids"], tokens)


def test_bert_style_vocabulary_reserved_tokens_are_never_used():
    """Special ids need not be 0..4, and `[unusedN]` entries are never drawn or selected."""
    words = [f"w{i}" for i in range(50)]
    vocabulary = (["[PAD]"] + [f"[unused{i}]" for i in range(20)]
                  + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)
    ids = special_ids(vocabulary)
    assert (ids.pad, ids.unk, ids.cls, ids.sep, ids.mask) == (0, 21, 22, 23, 24)
    config = MaskingConfig(rate=0.5, mask_token_rate=0.0, random_token_rate=1.0)
    masker = Masker(vocabulary, config, 32)
    rng = np.random.default_rng(1)
    tokens = rng.integers(25, len(vocabulary), size=(64, 32)).astype(np.int32)
    tokens[:, 5] = rng.integers(1, 21, size=64)  # reserved tokens inside the text
    features, _, weights = masker({"token_ids": tokens, "document_ids": np.ones_like(tokens)}, 0)
    selected = selected_grid({k: v.numpy() for k, v in features.items()}, weights.numpy())
    assert not np.any(selected[:, 5])
    assert np.all(features["token_ids"].numpy()[selected] >= 25)


def test_inverse_permutation_matches_numpy():
    from kmlm.pipelines.masking import _inverse_permutation

    order = np.stack([np.random.default_rng(seed).permutation(9) for seed in range(5)]).astype("int32")
    np.testing.assert_array_equal(_inverse_permutation(tf.constant(order)).numpy(), np.argsort(order, axis=1))

"""Batched, vectorized, seeded masking for masked language modeling.

The masker works on a whole batch of dense [B, S] rows at once and returns fixed [B, P]
targets, so the model (and XLA) only ever sees static shapes. How it chooses targets:

1. Candidates are the positions with `document_ids != 0` holding a non-special token.
2. Candidates are grouped into *units*: single tokens (`token`), whole words (`whole_word`:
   a piece plus the `##` pieces after it) or spans of whole words (`span`: SpanBERT span
   lengths in words from a geometric distribution, p=0.2, truncated to 1..10; spans never
   cross a special token, so never a document boundary). With a segmenter
   (`kmlm.pipelines.segmentation`), a batch also carries `continues_word`: 1 on a Chinese
   character that continues the segmented word before it, which joins that word's
   characters into one word (Chinese BERT-wwm) while each stays a token of its own.
3. Every unit gets a random score; tokens are ordered by (unit score, position), which
   keeps each unit's tokens adjacent. A row with c candidates aims at
   n = min(P, max(1, round(rate * c))) targets: a unit is taken if its midpoint in that
   order falls before n (a unit straddling n exactly in half is taken on a coin flip, so
   the expected count is n) and it ends before P. Units are never split.
4. Of the targets, 80% become `[MASK]`, 10% a random non-special token, 10% stay
   (configurable).

All randomness is stateless, derived from `(seed, step)`: the same seed and step give the
same masks on every run, and consecutive steps differ.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from kmlm.pipelines.segmentation import check_segmenter
from kmlm.pipelines.tokenizer import special_ids
from kmlm.pipelines.vocabulary import CONTINUATION_PREFIX, SPECIAL_TOKENS, never_predicted, resolve_vocabulary

STRATEGIES = ("token", "whole_word", "span")


def max_predictions_for(seq_len: int, rate: float) -> int:
    """The number P of prediction slots per row: ceil(rate * S) rounded up to a multiple of 8.

    The multiple of 8 keeps matmul shapes friendly; P never exceeds `seq_len`.

    Args:
        seq_len: Row length S.
        rate: Masking rate in (0, 1).

    Returns:
        P, an int.

    Example:
        >>> max_predictions_for(128, 0.15)
        24
        >>> max_predictions_for(512, 0.3)
        160
    """
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise ValueError(f"seq_len={seq_len!r} must be a positive integer, e.g. 128")
    _check_rate(rate)
    # The small epsilon keeps float noise (0.3 * 10 = 3.0000000000000004) from adding a slot.
    needed = math.ceil(rate * seq_len - 1e-9)
    return min(seq_len, -(-needed // 8) * 8)


def _check_rate(rate: float) -> None:
    if not isinstance(rate, (int, float)) or not 0.0 < rate < 1.0:
        raise ValueError(f"mask rate {rate} is outside (0, 1); use e.g. --mask-rate 0.15")


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """How to choose and corrupt the tokens to predict.

    Attributes:
        strategy: `"token"` (BERT), `"whole_word"` (all pieces of a word together) or
            `"span"` (SpanBERT: spans of whole words).
        rate: Share of the candidate tokens to predict, in (0, 1); 0.15 is BERT's, 0.3 the
            modern choice.
        mask_token_rate: Share of the targets replaced by `[MASK]`.
        random_token_rate: Share of the targets replaced by a random non-special token;
            the rest keep their token.
        span_p: Parameter p of the geometric span length distribution (span strategy).
        max_span_words: Longest span, in words (span strategy).
        seed: Seed of the stateless randomness, combined with the step.
        segmenter: `None`, or a name from `kmlm.pipelines.segmentation.SEGMENTERS` (e.g.
            `"jieba"`): `mlm_dataset` then segments Chinese text so that `whole_word` and
            `span` masking take whole Chinese words. The tokens do not change.

    Example:
        >>> MaskingConfig(strategy="whole_word", rate=0.3).rate
        0.3
    """

    strategy: str = "token"
    rate: float = 0.15
    mask_token_rate: float = 0.8
    random_token_rate: float = 0.1
    span_p: float = 0.2
    max_span_words: int = 10
    seed: int = 0
    segmenter: str | None = None

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown masking strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}"
            )
        _check_rate(self.rate)
        for name in ("mask_token_rate", "random_token_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} must be within [0, 1], e.g. 0.8 and 0.1")
        if self.mask_token_rate + self.random_token_rate > 1.0 + 1e-9:
            raise ValueError(
                f"mask_token_rate={self.mask_token_rate} plus random_token_rate="
                f"{self.random_token_rate} exceeds 1; the rest (kept tokens) cannot be negative"
            )
        if not isinstance(self.span_p, (int, float)) or not 0.0 < self.span_p <= 1.0:
            raise ValueError(f"span_p={self.span_p!r} is outside (0, 1]; SpanBERT uses 0.2")
        if not isinstance(self.max_span_words, int) or self.max_span_words < 1:
            raise ValueError(
                f"max_span_words={self.max_span_words!r} must be a positive integer, e.g. 10"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed={self.seed!r} must be an integer")
        check_segmenter(self.segmenter)
        if self.segmenter is not None and self.strategy == "token":
            raise ValueError(
                f"segmenter {self.segmenter!r} only changes whole_word and span masking; "
                "use --masking whole_word (or span), or leave --segmenter out"
            )


class Masker:
    """Chooses and corrupts prediction targets for a batch of rows.

    Args:
        vocabulary: The tokens in id order (or a vocabulary file path).
        config: A `MaskingConfig`.
        seq_len: Row length S of the batches it will see.

    Attributes:
        max_predictions: P, the number of target slots per row.

    Call arguments:
        batch: dict of int32 [B, S] tensors `token_ids`, `document_ids` and (optional)
            `segment_ids` and `continues_word` (1 where a token continues the segmented
            word before it), e.g. rows from `pack_documents`.
        step: int scalar (tensor), the batch number; with `config.seed` it seeds the masks.

    Returns:
        `(features, mask_ids, mask_weights)`: `features` holds the masked `token_ids`,
        `segment_ids`, `document_ids` [B, S] and `mask_positions` [B, P] int32 (targets
        left-packed in ascending position order); `mask_ids` [B, P] int32 are the original
        tokens; `mask_weights` [B, P] float32 are 1 on used slots and 0 on unused ones,
        whose position and id are 0.

    Example:
        >>> vocab = list(SPECIAL_TOKENS) + ["the", "cat", "sat", "##s"]
        >>> masker = Masker(vocab, MaskingConfig(rate=0.3), seq_len=8)
        >>> rows = {"token_ids": tf.constant([[2, 5, 6, 8, 7, 3, 0, 0]]),
        ...         "document_ids": tf.constant([[1, 1, 1, 1, 1, 1, 0, 0]])}
        >>> features, mask_ids, mask_weights = masker(rows, step=0)
        >>> features["mask_positions"].shape
        TensorShape([1, 8])
    """

    def __init__(self, vocabulary: list[str] | str, config: MaskingConfig, seq_len: int):
        vocabulary = resolve_vocabulary(vocabulary)
        if not isinstance(config, MaskingConfig):
            raise ValueError(f"config must be a MaskingConfig, got {type(config).__name__}")
        self.config = config
        self.seq_len = seq_len
        self.max_predictions = max_predictions_for(seq_len, config.rate)
        self.mask_id = special_ids(vocabulary).mask
        special = never_predicted(vocabulary).tolist()
        continuation = [
            t.startswith(CONTINUATION_PREFIX) and len(t) > len(CONTINUATION_PREFIX)
            for t in vocabulary
        ]
        replacements = [i for i, is_special in enumerate(special) if not is_special]
        if not replacements:
            raise ValueError("the vocabulary has only special tokens; learn a real vocabulary")
        self._special = tf.constant(special, tf.bool)
        self._continuation = tf.constant(continuation, tf.bool)
        self._replacements = tf.constant(replacements, tf.int32)

    def __call__(self, batch: dict[str, tf.Tensor], step) -> tuple[dict, tf.Tensor, tf.Tensor]:
        token_ids, document_ids = self._rows(batch)
        seeds = self._seeds(step)
        units = self._units(token_ids, document_ids, seeds[0], batch.get("continues_word"))
        selected = self._select(units, seeds[1], seeds[2])
        masked = self._corrupt(token_ids, selected, seeds[3], seeds[4])
        positions, weights = self._left_pack(selected)
        mask_ids = tf.where(weights > 0, tf.gather(token_ids, positions, batch_dims=1), 0)
        segment_ids = batch.get("segment_ids")
        features = {
            "token_ids": masked,
            "segment_ids": tf.zeros_like(token_ids) if segment_ids is None
            else tf.cast(segment_ids, tf.int32),
            "document_ids": document_ids,
            "mask_positions": positions,
        }
        return features, mask_ids, weights

    def units(self, batch: dict[str, tf.Tensor], step) -> tf.Tensor:
        """The masking units of a batch: [B, S] int32, 0 off candidates, 1, 2, ... per row.

        Positions with the same non-zero id in a row are masked together or not at all;
        this is what `__call__` uses, exposed for inspection and tests.

        Example:
            >>> vocab = list(SPECIAL_TOKENS) + ["the", "cat", "##s"]
            >>> masker = Masker(vocab, MaskingConfig(strategy="whole_word"), seq_len=8)
            >>> rows = {"token_ids": tf.constant([[2, 5, 6, 7, 3, 0, 0, 0]]),
            ...         "document_ids": tf.constant([[1, 1, 1, 1, 1, 0, 0, 0]])}
            >>> masker.units(rows, 0).numpy().tolist()
            [[0, 1, 2, 2, 0, 0, 0, 0]]
        """
        token_ids, document_ids = self._rows(batch)
        return self._units(token_ids, document_ids, self._seeds(step)[0], batch.get("continues_word"))

    def _rows(self, batch):
        token_ids = tf.cast(batch["token_ids"], tf.int32)
        document_ids = tf.cast(batch["document_ids"], tf.int32)
        if token_ids.shape.rank != 2 or token_ids.shape[1] not in (None, self.seq_len):
            raise ValueError(
                f"token_ids has shape {token_ids.shape}; this Masker expects [batch, "
                f"{self.seq_len}] (its seq_len)"
            )
        return token_ids, document_ids

    def _seeds(self, step) -> tf.Tensor:
        seed = tf.stack([tf.constant(self.config.seed, tf.int64), tf.cast(step, tf.int64)])
        return tf.random.experimental.stateless_split(seed, num=6)

    def _units(self, token_ids, document_ids, seed, continues_word=None) -> tf.Tensor:
        candidate = (document_ids != 0) & ~tf.gather(self._special, token_ids)
        positions = tf.broadcast_to(tf.range(1, self.seq_len + 1), tf.shape(token_ids))
        if self.config.strategy == "token":
            return tf.where(candidate, positions, 0)
        after_candidate = tf.pad(candidate[:, :-1], [[0, 0], [1, 0]])
        # A `##` piece (or a character inside a segmented word) continues the word before
        # it, unless nothing word-like precedes it.
        continues = tf.gather(self._continuation, token_ids)
        if continues_word is not None:
            continues |= tf.cast(continues_word, tf.bool)
        word_start = candidate & (~continues | ~after_candidate)
        word_number = tf.cumsum(tf.cast(word_start, tf.int32), axis=1)
        if self.config.strategy == "whole_word":
            return tf.where(candidate, word_number, 0)
        # Spans: lay a sequence of span lengths (in words) over each run of consecutive
        # candidate words, starting each run at its own offset in the sequence so that
        # spans never reach across a special token.
        word = tf.maximum(word_number - 1, 0)
        run_start = candidate & ~after_candidate
        run_first_word = _forward_fill(word, run_start)
        lengths = self._span_lengths(tf.shape(token_ids), seed)
        ends = tf.cumsum(lengths, axis=1)
        offset = tf.gather(ends - lengths, run_first_word, batch_dims=1)
        span = tf.searchsorted(ends, offset + word - run_first_word, side="right")
        return tf.where(candidate, tf.cast(span, tf.int32) + 1, 0)

    def _span_lengths(self, shape, seed) -> tf.Tensor:
        """Truncated geometric span lengths in 1..max_span_words, by inverse CDF."""
        p, longest = self.config.span_p, self.config.max_span_words
        if p >= 1.0:
            return tf.ones(shape, tf.int32)
        q = 1.0 - p
        uniform = tf.random.stateless_uniform(shape, seed)
        lengths = tf.math.ceil(tf.math.log1p(-uniform * (1.0 - q**longest)) / math.log(q))
        return tf.clip_by_value(tf.cast(lengths, tf.int32), 1, longest)

    def _select(self, units, score_seed, tie_seed) -> tf.Tensor:
        shape = tf.shape(units)
        batch, slots = shape[0], self.seq_len + 1
        candidate = units > 0
        score = tf.gather(
            tf.random.stateless_uniform([batch, slots], score_seed), units, batch_dims=1
        )
        order = tf.argsort(tf.where(candidate, score, 2.0), axis=1, stable=True)
        rank = _inverse_permutation(order)
        segment = units + slots * tf.range(batch)[:, None]
        first = tf.gather(tf.math.unsorted_segment_min(rank, segment, batch * slots), segment)
        size = tf.gather(
            tf.math.unsorted_segment_sum(tf.ones_like(rank), segment, batch * slots), segment
        )
        last = first + size - 1
        count = tf.reduce_sum(tf.cast(candidate, tf.float32), axis=1, keepdims=True)
        budget = tf.cast(tf.math.floor(self.config.rate * count + 0.5), tf.int32)
        budget = tf.where(count > 0, tf.clip_by_value(budget, 1, self.max_predictions), 0)
        # Compare twice the unit's midpoint with 2n - 1 to stay in integers.
        twice_middle, limit = first + last, 2 * budget - 1
        coin = tf.random.stateless_uniform([batch, 1], tie_seed) < 0.5
        take = (twice_middle < limit) | ((twice_middle == limit) & coin)
        return candidate & take & (last < self.max_predictions)

    def _corrupt(self, token_ids, selected, choice_seed, token_seed) -> tf.Tensor:
        config = self.config
        choice = tf.random.stateless_uniform(tf.shape(token_ids), choice_seed)
        random_ids = tf.gather(
            self._replacements,
            tf.random.stateless_uniform(
                tf.shape(token_ids), token_seed, minval=0,
                maxval=tf.shape(self._replacements)[0], dtype=tf.int32,
            ),
        )
        to_mask = selected & (choice < config.mask_token_rate)
        to_random = selected & ~to_mask & (
            choice < config.mask_token_rate + config.random_token_rate
        )
        corrupted = tf.where(to_random, random_ids, token_ids)
        return tf.where(to_mask, self.mask_id, corrupted)

    def _left_pack(self, selected) -> tuple[tf.Tensor, tf.Tensor]:
        """Selected positions in ascending order in the first slots; 0 and weight 0 after.

        A selected position goes to slot (selected positions before it); `_select` never
        picks more than P per row. A scatter instead of a sort: linear, not n log n.
        """
        shape = tf.shape(selected)
        slot = tf.cumsum(tf.cast(selected, tf.int32), axis=1) - 1
        rows = tf.broadcast_to(tf.range(shape[0])[:, None], shape)
        where = tf.where(selected & (slot < self.max_predictions))
        index = tf.stack([tf.gather_nd(rows, where), tf.gather_nd(slot, where)], axis=1)
        packed_shape = tf.stack([shape[0], self.max_predictions])
        positions = tf.scatter_nd(index, tf.cast(where[:, 1], tf.int32), packed_shape)
        used = tf.scatter_nd(index, tf.ones_like(index[:, 0], tf.float32), packed_shape)
        static = [selected.shape[0], self.max_predictions]
        return tf.ensure_shape(positions, static), tf.ensure_shape(used, static)


def _inverse_permutation(order: tf.Tensor) -> tf.Tensor:
    """Row-wise inverse of [B, n] permutations: result[b, order[b, i]] = i (a scatter, no sort)."""
    shape = tf.shape(order)
    rows = tf.broadcast_to(tf.range(shape[0])[:, None], shape)
    index = tf.stack([rows, tf.cast(order, tf.int32)], axis=-1)
    return tf.scatter_nd(index, tf.broadcast_to(tf.range(shape[1]), shape), shape)


def _forward_fill(values: tf.Tensor, starts: tf.Tensor) -> tf.Tensor:
    """Along each row, the value of `values` at the latest `starts` position (0 before any).

    `values` must be non-negative.
    """
    shape = tf.shape(values)
    group = tf.cumsum(tf.cast(starts, tf.int32), axis=1)
    segment = group + (shape[1] + 1) * tf.range(shape[0])[:, None]
    at_start = tf.math.unsorted_segment_max(
        tf.where(starts, values, 0), segment, shape[0] * (shape[1] + 1)
    )
    return tf.gather(at_start, segment)

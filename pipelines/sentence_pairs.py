"""Sentence-pair examples for next-sentence prediction (NSP) and sentence-order prediction
(SOP), masked for MLM in the same batches.

Each document is split into sentences. A pair is two adjacent runs of sentences A and B of
one document, `[CLS] A [SEP] B [SEP]` with segment ids 0 then 1, and a label:

- `nsp` (BERT): label 0 when B really follows A, 1 when B was replaced by a run of
  sentences from another document;
- `sop` (ALBERT): label 0 when A and B are in their original order, 1 when swapped.

Labels are exactly balanced: every pass over the documents deals a shuffled deck of half
0s and half 1s. Pairs are chosen in Python (documents are held in memory), tokenized,
truncated (longer side first) and laid out in the graph, then batched and masked like
`mlm_dataset` batches.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf

from kmlm.pipelines.masking import Masker, MaskingConfig
from kmlm.pipelines.packing import check_seq_len
from kmlm.pipelines.tokenizer import make_tokenizer, special_ids
from kmlm.pipelines.vocabulary import resolve_vocabulary

PAIR_OBJECTIVES = ("nsp", "sop")

# A sentence ends at . ! ? (followed by space) or a CJK full stop, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*|\s*\n\s*")
# Rough WordPiece tokens per whitespace word, to size the runs of sentences before tokenizing.
_PIECES_PER_WORD = 1.3


def split_sentences(text: str) -> list[str]:
    """Splits a document into sentences.

    Example:
        >>> split_sentences("One. Two!\\nThree")
        ['One.', 'Two!', 'Three']
    """
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _length(sentence: str) -> float:
    # CJK text has no spaces; count its characters instead.
    return max(len(sentence.split()), len(re.findall(r"[\u3400-\u9fff]", sentence))) * _PIECES_PER_WORD


class SentencePairSampler:
    """Draws (A, B, label) text pairs from documents, 50% label 1, reproducibly.

    Args:
        documents: document strings.
        objective: "nsp" or "sop".
        seq_len: row length S; runs of sentences are grown to about S - 3 tokens.
        seed: seed of every random choice; pass `epoch` to `pairs` for new draws.

    Example:
        >>> sampler = SentencePairSampler(["A b. C d. E f.", "G h. I j."], "sop", 32)
        >>> a, b, label = sampler.pairs(epoch=0)[0]
    """

    def __init__(self, documents: list[str], objective: str, seq_len: int, seed: int = 0):
        if objective not in PAIR_OBJECTIVES:
            raise ValueError(f"unknown sentence-pair objective {objective!r}; choose one of {', '.join(PAIR_OBJECTIVES)}")
        self.objective = objective
        self.budget = max(2, seq_len - 3)
        self.seed = seed
        self.documents = [split_sentences(d) for d in documents]
        self.documents = [d for d in self.documents if d]
        self.pairable = [i for i, sentences in enumerate(self.documents) if len(sentences) >= 2]
        if not self.pairable:
            raise ValueError(
                f"no document has two sentences, so {objective} pairs cannot be made; give documents of "
                "several sentences (ending in . ! ? or on separate lines)"
            )
        if objective == "nsp" and len(self.documents) < 2:
            raise ValueError("nsp needs at least two documents to draw random next sentences from")

    def pairs(self, epoch: int = 0) -> list[tuple[str, str, int]]:
        """One pair per document with two or more sentences, in a shuffled order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.pairable)
        labels = rng.permutation(np.arange(len(order)) % 2)
        return [self._pair(int(d), int(label), rng) for d, label in zip(order, labels)]

    def _pair(self, document: int, label: int, rng) -> tuple[str, str, int]:
        sentences = self.documents[document]
        split = int(rng.integers(1, len(sentences)))
        half = self.budget / 2
        start, used = split - 1, _length(sentences[split - 1])
        while start > 0 and used + _length(sentences[start - 1]) <= half:
            start -= 1
            used += _length(sentences[start])
        a = " ".join(sentences[start:split])
        if self.objective == "nsp" and label == 1:
            other = int(rng.integers(len(self.documents) - 1))
            other += other >= document  # any document but this one
            sentences, split = self.documents[other], int(rng.integers(len(self.documents[other])))
        end, used_b = split + 1, _length(sentences[split])
        while end < len(sentences) and used + used_b + _length(sentences[end]) <= self.budget:
            used_b += _length(sentences[end])
            end += 1
        b = " ".join(sentences[split:end])
        if self.objective == "sop" and label == 1:
            a, b = b, a
        return a, b, label


def pair_rows(a: tf.RaggedTensor, b: tf.RaggedTensor, seq_len: int, *, cls_id: int, sep_id: int,
              pad_id: int = 0) -> dict[str, tf.Tensor]:
    """Lays tokenized pairs out as `[CLS] A [SEP] B [SEP]` rows of `seq_len`.

    When a pair is too long, tokens are cut from the end of the longer side first (BERT's
    rule), so both sides keep at least half of the room when they need it.

    Args:
        a: int32 ragged [N, None] tokens of side A.
        b: int32 ragged [N, None] tokens of side B.
        seq_len: row length S.
        cls_id, sep_id, pad_id: special token ids.

    Returns:
        dict of int32 [N, S] `token_ids`, `segment_ids` (0 for [CLS] A [SEP], 1 for B [SEP])
        and `document_ids` (1 on real tokens).

    Example:
        >>> a = tf.ragged.constant([[7, 8, 9]]); b = tf.ragged.constant([[5]])
        >>> pair_rows(a, b, 8, cls_id=2, sep_id=3)["token_ids"].numpy().tolist()
        [[2, 7, 8, 9, 3, 5, 3, 0]]
    """
    budget = seq_len - 3
    len_a, len_b = a.row_lengths(), b.row_lengths()
    # BERT's longest-first truncation (pop from the longer side, from B on a tie) in closed
    # form: B keeps what A leaves, but at least half the budget (rounded down) if it has it.
    keep_b = tf.minimum(len_b, tf.maximum(budget - len_a, budget // 2))
    keep_a = tf.minimum(len_a, budget - keep_b)
    a = tf.ragged.boolean_mask(a, tf.ragged.range(len_a) < keep_a[:, None])
    b = tf.ragged.boolean_mask(b, tf.ragged.range(len_b) < keep_b[:, None])
    n = tf.shape(len_a, out_type=tf.int64)[0]

    def column(value):
        return tf.RaggedTensor.from_row_lengths(tf.fill([n], tf.constant(value, tf.int32)), tf.ones([n], tf.int64))

    tokens = tf.concat([column(cls_id), a, column(sep_id), b, column(sep_id)], axis=1)
    segments = tf.concat([tf.zeros_like(column(0)), tf.zeros_like(a), tf.zeros_like(column(0)),
                          tf.ones_like(b), tf.ones_like(column(0))], axis=1)
    token_ids = tokens.to_tensor(default_value=pad_id, shape=[None, seq_len])
    segment_ids = segments.to_tensor(default_value=0, shape=[None, seq_len])
    document_ids = tf.sequence_mask(tokens.row_lengths(), seq_len, dtype=tf.int32)
    return {"token_ids": token_ids, "segment_ids": segment_ids, "document_ids": document_ids}


def sentence_pair_dataset(
    documents: tf.data.Dataset | list[str],
    vocabulary: list[str] | str,
    *,
    objective: str = "nsp",
    seq_len: int = 128,
    batch_size: int = 32,
    masking: MaskingConfig = MaskingConfig(),
    lowercase: bool = True,
    deterministic_eval: bool = False,
    shuffle_seed: int | None = None,
    tokenize_batch: int = 256,
    start_batch: int = 0,
) -> tf.data.Dataset:
    """Masked sentence-pair batches for joint MLM + NSP/SOP training.

    Training mode draws new pairs on every pass and repeats forever, dropping a last partial
    batch. With `deterministic_eval=True` one fixed set of pairs is served once, the last
    batch filled with all-padding rows of weight 0.

    Args:
        documents: document strings, or a `tf.data.Dataset` of them (read once into memory).
        vocabulary: tokens in id order, or a vocabulary file.
        objective: "nsp" or "sop".
        seq_len: row length S.
        batch_size: rows per batch B.
        masking: a `MaskingConfig` for the MLM targets.
        lowercase: whether the tokenizer lowercases.
        deterministic_eval: evaluation mode, see above.
        shuffle_seed: seed of the pair draws (default `masking.seed`).
        tokenize_batch: pairs tokenized together.
        start_batch: training only: begin at this batch of the stream, with the pairs and masks
            it would have had (a resumed run continues where it stopped).

    Returns:
        A dataset of `(features, targets, weights)`: `features` as `mlm_dataset` gives them,
        `targets = {"masked_lm": mask_ids [B, P], "next_sentence": labels [B]}` and
        `weights = {"masked_lm": mask_weights [B, P], "next_sentence": [B]}`.

    Example:
        >>> ds = sentence_pair_dataset(docs, vocab, objective="sop", seq_len=64)  # doctest: +SKIP
    """
    check_seq_len(seq_len)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if isinstance(documents, tf.data.Dataset):
        documents = [d.decode("utf-8", errors="replace") for d in documents.as_numpy_iterator()]
    vocabulary = resolve_vocabulary(vocabulary)
    seed = masking.seed if shuffle_seed is None else shuffle_seed
    sampler = SentencePairSampler(list(documents), objective, seq_len, seed=seed)
    tokenizer = make_tokenizer(vocabulary, lowercase=lowercase)
    ids = special_ids(vocabulary)
    masker = Masker(vocabulary, masking, seq_len)
    training = not deterministic_eval

    def generate():
        epoch = 0
        while True:
            yield from sampler.pairs(epoch)
            if not training:
                return
            epoch += 1

    spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32))
    pairs = tf.data.Dataset.from_generator(generate, output_signature=spec)

    @tf.autograph.experimental.do_not_convert
    def to_rows(a, b, labels):
        rows = pair_rows(tokenizer.tokenize(a), tokenizer.tokenize(b), seq_len, cls_id=ids.cls, sep_id=ids.sep,
                         pad_id=ids.pad)
        rows["labels"] = labels
        rows["label_weights"] = tf.ones_like(labels, tf.float32)
        return rows

    rows = pairs.batch(tokenize_batch).map(to_rows, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if training:
        batches = rows.shuffle(2048, seed=seed).batch(batch_size, drop_remainder=True)
    else:
        batches = rows.batch(batch_size).map(
            tf.autograph.experimental.do_not_convert(lambda batch: _fill_batch(batch, batch_size)))

    @tf.autograph.experimental.do_not_convert
    def mask(step, batch):
        features, mask_ids, mask_weights = masker(batch, step)
        targets = {"masked_lm": mask_ids, "next_sentence": batch["labels"]}
        weights = {"masked_lm": mask_weights, "next_sentence": batch["label_weights"]}
        return features, targets, weights

    if not isinstance(start_batch, int) or start_batch < 0 or (start_batch and not training):
        raise ValueError(f"start_batch={start_batch!r} must be a non-negative integer (and 0 in evaluation mode)")
    return (batches.enumerate().skip(start_batch).map(mask, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def _fill_batch(batch: dict[str, tf.Tensor], batch_size: int) -> dict[str, tf.Tensor]:
    """Pads a partial batch with all-padding rows (weight 0) up to `batch_size`."""
    missing = batch_size - tf.shape(batch["token_ids"])[0]

    def fill(values):
        padding = [[0, missing]] + [[0, 0]] * (values.shape.rank - 1)
        values = tf.pad(values, padding)
        return tf.ensure_shape(values, [batch_size] + values.shape[1:].as_list())

    return {name: fill(values) for name, values in batch.items()}

"""Extractive question answering: windows over long contexts, span targets, and the search
for the best answer span. Fine-tuning, `kmlm predict` and the exported `predict` signature
share these functions, so a served model reads answers exactly as it was evaluated.

A question and its context become one or more windows of at most S tokens,
`[CLS] question [SEP] context pieces [SEP]`, with segment ids 0 then 1. The question keeps
its first `max_query_length` pieces; a window holds S - 3 - (question pieces) context
pieces, and windows start every `doc_stride` pieces (never more than a window holds, so no
piece is skipped) until one reaches the end of the context.

Offsets: the context is split into words as the tokenizer splits text (on whitespace and
punctuation, and around every CJK character), and every piece carries the UTF-8 byte span
of its word. An answer runs from the start of its first piece's word to the end of its last
piece's word, so answers begin and end on word boundaries (in Chinese, on characters).
Character offsets count Unicode code points of the original context, as Python indexes it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from keras_hub.src.tokenizers.word_piece_tokenizer import (  # the tokenizer's own word-splitting patterns
    PUNCTUATION_AND_CJK_REGEX,
    WHITESPACE_PUNCTUATION_AND_CJK_REGEX,
    get_special_tokens_pattern,
)

from kmlm.pipelines.vocabulary import SPECIAL_TOKENS
from kmlm.tasks.encoding import to_dense

DOC_STRIDE = 128
MAX_QUERY_LENGTH = 64
MAX_ANSWER_LENGTH = 30
_NO_SPAN = -1e30  # the score of a window without a possible span (finite: segment reductions keep it)
OFF_CONTEXT = -1  # byte offset of tokens that are not context ([CLS], question, [SEP], padding)

_SPECIALS = get_special_tokens_pattern(list(SPECIAL_TOKENS))
_WORD_DELIMITERS = f"{_SPECIALS}|{WHITESPACE_PUNCTUATION_AND_CJK_REGEX}"
_KEPT_DELIMITERS = f"{_SPECIALS}|{PUNCTUATION_AND_CJK_REGEX}"


@dataclasses.dataclass(frozen=True)
class WindowSettings:
    """How questions and contexts become windows: S, the step between window starts, and
    the question pieces kept."""

    seq_len: int
    doc_stride: int = DOC_STRIDE
    max_query_length: int = MAX_QUERY_LENGTH

    def validate(self):
        if self.doc_stride < 1:
            raise ValueError(f"doc_stride={self.doc_stride} must be at least 1")
        if self.max_query_length < 1:
            raise ValueError(f"max_query_length={self.max_query_length} must be at least 1")
        if self.seq_len - 3 - self.max_query_length < 1:
            raise ValueError(f"seq_len={self.seq_len} leaves no room for the context after max_query_length="
                             f"{self.max_query_length} question pieces and 3 special tokens; use --seq-len >= "
                             f"{self.max_query_length + 4} or a smaller --max-query-length")


def context_words(context):
    """The words of contexts [B] as the tokenizer splits them, with their UTF-8 byte spans:
    (words, starts, ends), each ragged [B, None].

    Example:
    >>> words, starts, ends = context_words(tf.constant(["The cat, 猫."]))
    >>> [w.decode() for w in words[0].numpy()], starts[0].numpy().tolist(), ends[0].numpy().tolist()
    (['The', 'cat', ',', '猫', '.'], [0, 4, 7, 9, 12], [3, 7, 8, 12, 13])
    """
    return tf_text.regex_split_with_offsets(context, _WORD_DELIMITERS, _KEPT_DELIMITERS)


def _slice_rows(ragged, begin, size):
    """Items begin[i] .. begin[i] + size[i] - 1 of row i of a ragged [W, None] tensor."""
    position = tf.ragged.range(ragged.row_lengths())
    keep = (position >= tf.expand_dims(begin, 1)) & (position < tf.expand_dims(begin + size, 1))
    return tf.ragged.boolean_mask(ragged, keep)


def qa_windows(tokenizer, ids, question, context, settings):
    """The windows of questions and contexts [B] (see the module docstring).

    Returns a dict:
        tokens, segments: ragged [W, None] int32 token and segment ids;
        starts, ends: ragged [W, None] int64 byte span in the context of each token's word
            (`OFF_CONTEXT` for [CLS], question and [SEP]);
        example: [W] int64, the question each window belongs to (windows of one question
            are consecutive);
        first_piece: [W] int64, the index among the context's pieces of the window's first.
    """
    question_pieces = tf.cast(tokenizer.tokenize(question), tf.int32)[:, : settings.max_query_length]
    words, word_starts, word_ends = context_words(context)
    pieces = tf.cast(tokenizer.tokenize(words.flat_values), tf.int32)  # [all words, None]
    piece_word = pieces.value_rowids()
    context_pieces = tf.RaggedTensor.from_row_splits(pieces, words.row_splits).merge_dims(1, 2)
    piece_starts = context_pieces.with_flat_values(tf.gather(word_starts.flat_values, piece_word))
    piece_ends = context_pieces.with_flat_values(tf.gather(word_ends.flat_values, piece_word))

    budget = settings.seq_len - 3 - question_pieces.row_lengths()
    step = tf.minimum(tf.constant(settings.doc_stride, tf.int64), budget)
    context_length = context_pieces.row_lengths()
    overflow = tf.maximum(context_length - budget, 0)
    windows = 1 + (overflow + step - 1) // step
    example = tf.repeat(tf.range(tf.size(windows, out_type=tf.int64)), windows)
    first_piece = tf.ragged.range(windows).flat_values * tf.gather(step, example)
    size = tf.minimum(tf.gather(budget, example), tf.gather(context_length, example) - first_piece)

    count = tf.shape(example)[0]
    cls = tf.fill([count, 1], tf.constant(ids.cls, tf.int32))
    sep = tf.fill([count, 1], tf.constant(ids.sep, tf.int32))
    head = tf.concat([cls, tf.gather(question_pieces, example), sep], axis=1)
    tail = tf.concat([_slice_rows(tf.gather(context_pieces, example), first_piece, size), sep], axis=1)
    off_head = head.with_flat_values(tf.fill(tf.shape(head.flat_values), tf.constant(OFF_CONTEXT, tf.int64)))
    off_end = tf.fill([count, 1], tf.constant(OFF_CONTEXT, tf.int64))

    def offsets(piece_offsets):
        return tf.concat([off_head, _slice_rows(tf.gather(piece_offsets, example), first_piece, size), off_end], 1)

    return {"tokens": tf.concat([head, tail], axis=1),
            "segments": tf.concat([tf.zeros_like(head), tf.ones_like(tail)], axis=1),
            "starts": offsets(piece_starts), "ends": offsets(piece_ends), "example": example,
            "first_piece": first_piece}


def dense_windows(windows, ids, length):
    """The model features of windows padded to [W, length], and their byte spans:
    ({token_ids, segment_ids, document_ids}, starts [W, length], ends [W, length])."""
    features = to_dense(windows["tokens"], windows["segments"], ids, length)
    shape = tf.shape(features["token_ids"], out_type=tf.int64)
    starts = windows["starts"].to_tensor(default_value=OFF_CONTEXT, shape=shape)
    ends = windows["ends"].to_tensor(default_value=OFF_CONTEXT, shape=shape)
    return features, starts, ends


def span_targets(starts, ends, answer_bytes):
    """The start and end token of each window's answer, or 0 ([CLS]) for a window without
    an answer or whose context does not hold the whole answer.

    Args:
        starts, ends: [W, S] byte spans of the tokens (`OFF_CONTEXT` off the context).
        answer_bytes: [W, 2] the answer's byte span [start, end) in the context, or (-1, -1).

    Returns:
        (start_positions, end_positions), int32 [W] each.

    Example:
    >>> starts = np.array([[-1, -1, -1, 0, 4, 4, 9, -1]])  # [CLS] q [SEP] "abc" "de" "##f" "gh" [SEP]
    >>> ends = np.array([[-1, -1, -1, 3, 7, 7, 11, -1]])
    >>> span_targets(starts, ends, np.array([[4, 7]])), span_targets(starts, ends, np.array([[9, 14]]))
    ((array([4], dtype=int32), array([5], dtype=int32)), (array([0], dtype=int32), array([0], dtype=int32)))
    """
    starts, ends, answer_bytes = np.asarray(starts), np.asarray(ends), np.asarray(answer_bytes)
    in_context = starts >= 0
    answer_start, answer_end = answer_bytes[:, :1], answer_bytes[:, 1:]
    covered = (np.where(in_context, starts, np.iinfo(np.int64).max).min(axis=1, keepdims=True) <= answer_start) & (
        np.where(in_context, ends, -1).max(axis=1, keepdims=True) >= answer_end)
    found = covered[:, 0] & (answer_start[:, 0] >= 0)
    first = np.argmax(in_context & (ends > answer_start), axis=1)
    last = starts.shape[1] - 1 - np.argmax((in_context & (starts < answer_end))[:, ::-1], axis=1)
    return np.where(found, first, 0).astype(np.int32), np.where(found, last, 0).astype(np.int32)


def answer_byte_span(context, text, answer_start):
    """The UTF-8 byte span [start, end) of an answer given by its text and character start,
    or None when the context does not hold that text there (nor anywhere else).

    Example:
    >>> answer_byte_span("价格是 42 元", "42", 4), answer_byte_span("a b", "c", 0)
    ((10, 12), None)
    """
    if not text or context[answer_start: answer_start + len(text)] != text:
        answer_start = context.find(text) if text else -1
        if answer_start < 0:
            return None
    start = len(context[:answer_start].encode("utf-8"))
    return start, start + len(text.encode("utf-8"))


def best_spans(context, start_logits, end_logits, starts, ends, example, *, max_answer_length,
               null_threshold=None):
    """The best answer of each question over all its windows.

    A span is a start and end token inside one window's context, the end not before the
    start and at most `max_answer_length` tokens long; it scores start logit + end logit.
    The no-answer score is the smallest [CLS] start + end over the question's windows; with
    a `null_threshold` the answer is empty when no-answer score - best span score exceeds it.

    Args:
        context: [B] string contexts.
        start_logits, end_logits: [W, S] float.
        starts, ends: [W, S] int64 byte spans of the tokens (`dense_windows`).
        example: [W] int64 question of each window.
        max_answer_length: longest answer in tokens.
        null_threshold: None to always answer (SQuAD v1.1), else the threshold (v2.0).

    Returns:
        A dict of dense [B] tensors: `answer` (string, "" for no answer), `start`, `end`
        (int32 character offsets, end exclusive; -1 for no answer), `score` (float32: the
        span's start probability times its end probability in its window, or those of
        [CLS] for no answer), `null_score_diff` (float32 no-answer score minus best span score).
    """
    start_logits = tf.cast(start_logits, tf.float32)
    end_logits = tf.cast(end_logits, tf.float32)
    rows = tf.shape(context)[0]
    length = tf.shape(starts)[1]
    in_context = starts >= 0
    position = tf.range(length)
    band = (position[None, :] >= position[:, None]) & (position[None, :] - position[:, None] < max_answer_length)
    allowed = band[None] & in_context[:, :, None] & in_context[:, None, :]
    scores = start_logits[:, :, None] + end_logits[:, None, :]
    scores = tf.reshape(tf.where(allowed, scores, _NO_SPAN), [tf.shape(starts)[0], -1])
    flat_best = tf.argmax(scores, axis=1, output_type=tf.int32)
    window_best = tf.reduce_max(scores, axis=1)
    first, last = flat_best // length, flat_best % length

    example = tf.cast(example, tf.int32)
    window = tf.range(tf.shape(example)[0])
    best = tf.math.unsorted_segment_max(window_best, example, rows)
    chosen = tf.math.unsorted_segment_min(
        tf.where(window_best >= tf.gather(best, example), window, tf.int32.max), example, rows)
    null_window = start_logits[:, 0] + end_logits[:, 0]
    null = tf.math.unsorted_segment_min(null_window, example, rows)
    null_chosen = tf.math.unsorted_segment_min(
        tf.where(null_window <= tf.gather(null, example), window, tf.int32.max), example, rows)

    first, last = tf.gather(first, chosen), tf.gather(last, chosen)
    byte_start = tf.gather_nd(starts, tf.stack([chosen, first], 1))
    byte_end = tf.gather_nd(ends, tf.stack([chosen, last], 1))
    has_span = best > _NO_SPAN
    byte_start = tf.cast(tf.where(has_span, byte_start, 0), tf.int32)
    byte_end = tf.cast(tf.where(has_span, byte_end, 0), tf.int32)

    start_probabilities = tf.nn.softmax(start_logits, axis=-1)
    end_probabilities = tf.nn.softmax(end_logits, axis=-1)
    span_score = (tf.gather_nd(start_probabilities, tf.stack([chosen, first], 1))
                  * tf.gather_nd(end_probabilities, tf.stack([chosen, last], 1)))
    null_score = tf.gather(start_probabilities[:, 0] * end_probabilities[:, 0], null_chosen)
    null_score_diff = tf.where(has_span, null - best, np.inf)
    answered = has_span if null_threshold is None else has_span & (null_score_diff <= null_threshold)

    zero = tf.zeros_like(byte_start)
    char_start = tf.strings.length(tf.strings.substr(context, zero, byte_start), unit="UTF8_CHAR")
    char_end = tf.strings.length(tf.strings.substr(context, zero, byte_end), unit="UTF8_CHAR")
    answer = tf.strings.substr(context, byte_start, byte_end - byte_start)
    return {"answer": tf.where(answered, answer, ""), "start": tf.where(answered, char_start, -1),
            "end": tf.where(answered, char_end, -1), "score": tf.where(answered, span_score, null_score),
            "null_score_diff": null_score_diff, "null_score": null_score}


def apply_null_threshold(found, null_threshold):
    """`best_spans(..., null_threshold=None)`'s NumPy outputs as `best_spans(...,
    null_threshold)` would have given them: a question whose `null_score_diff` exceeds the
    threshold (compared in float32, as in the graph) gets no answer and the no-answer score."""
    if null_threshold is None:
        return found
    unanswered = ~(found["null_score_diff"] <= np.float32(null_threshold))
    return {**found, "answer": np.where(unanswered, b"", found["answer"]),
            "start": np.where(unanswered, -1, found["start"]), "end": np.where(unanswered, -1, found["end"]),
            "score": np.where(unanswered, found["null_score"], found["score"])}


def best_null_threshold(answers, null_score_diffs, gold_answers):
    """The no-answer threshold with the best mean F1 over questions: a question is answered
    when its `null_score_diff` is at most the threshold, else left unanswered.

    Args:
        answers: the best span's text per question (found without a threshold).
        null_score_diffs: no-answer score minus best span score per question.
        gold_answers: the gold answer texts per question (empty: unanswerable).

    Example:
    >>> best_null_threshold(["x", "y", "z"], [-2.0, 0.5, 3.0], [["x"], [], ["z"]])  # answering z costs y
    -2.0
    """
    from kmlm.tasks.metrics import answer_f1

    answered = [max(answer_f1(answer, gold) for gold in golds or [""]) for answer, golds in zip(answers, gold_answers)]
    unanswered = [float(not golds) for golds in gold_answers]
    diffs = np.asarray(null_score_diffs, np.float64)
    finite = np.flatnonzero(np.isfinite(diffs))
    if finite.size == 0:
        return 0.0
    order = finite[np.argsort(diffs[finite], kind="stable")]
    total = best_total = sum(unanswered)
    best = float(diffs[order[0]]) - 1.0  # below every question: answer none
    for index in order:
        total += answered[index] - unanswered[index]
        if total > best_total + 1e-12:
            best_total, best = total, float(diffs[index])
    return best


_TEXT_PAIR_SIGNATURE = (tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string))


def window_arrays(examples, tokenizer, ids, settings, chunk=256):
    """Every window of QA examples as NumPy arrays [W, S]: the model features, the targets
    `start_positions`/`end_positions` (the first gold answer; [CLS] where it is absent or
    outside the window) and `example` [W]. Returns (arrays, unlocated): the number of
    answers whose text is not in their context (trained as no answer)."""
    @tf.function(input_signature=_TEXT_PAIR_SIGNATURE)  # one trace for every chunk size
    def encode(question, context):
        windows = qa_windows(tokenizer, ids, question, context, settings)
        return (*dense_windows(windows, ids, settings.seq_len), windows["example"])

    parts, unlocated = [], 0
    for begin in range(0, len(examples.texts), chunk):
        questions, contexts = examples.texts[begin: begin + chunk], examples.text_pairs[begin: begin + chunk]
        features, starts, ends, example = encode(tf.constant(questions), tf.constant(contexts))
        spans = []
        for context, answers in zip(contexts, examples.answers[begin: begin + chunk]):
            span = answer_byte_span(context, answers[0]["text"], answers[0]["answer_start"]) if answers else None
            unlocated += bool(answers) and span is None
            spans.append(span or (-1, -1))
        example = example.numpy()
        start_positions, end_positions = span_targets(starts.numpy(), ends.numpy(), np.asarray(spans)[example])
        part = {name: value.numpy() for name, value in features.items()}
        part.update(start_positions=start_positions, end_positions=end_positions, example=example + begin)
        parts.append(part)
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}, unlocated


def window_dataset(arrays, *, seq_len, batch_size, shuffle=False, seed=0):
    """Batches of (features, {"start_logits": starts, "end_logits": ends}) from
    `window_arrays`, each batch cut to its longest row rounded up to 32 (at most seq_len)."""
    features = {name: arrays[name] for name in ("token_ids", "segment_ids", "document_ids")}
    targets = {"start_logits": arrays["start_positions"], "end_logits": arrays["end_positions"]}
    dataset = tf.data.Dataset.from_tensor_slices((features, targets))
    if shuffle:
        dataset = dataset.shuffle(len(arrays["example"]), seed=seed, reshuffle_each_iteration=True)

    def trim(features, targets):
        longest = tf.reduce_max(tf.reduce_sum(features["document_ids"], axis=1))
        length = tf.minimum(seq_len, (longest + 31) // 32 * 32)
        return {name: value[:, :length] for name, value in features.items()}, targets

    return dataset.batch(batch_size).map(trim, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class SpanReader:
    """Answers questions with a span model: windows, the model, the best span.

    Args:
        model: the Keras span model (`kmlm.tasks.models.build_span_labeler`).
        tokenizer, ids: the run's tokenizer and `SpecialIds`.
        settings: `WindowSettings`.
        max_answer_length: longest answer in tokens.
        null_threshold: None to always answer, else the v2.0 no-answer threshold. It is applied
            to the graph's thresholdless answers (as `best_spans` applies it, in float32), so it
            may change between calls without tracing the graph again.
    """

    def __init__(self, model, tokenizer, ids, settings, *, max_answer_length=MAX_ANSWER_LENGTH, null_threshold=None):
        self.settings = settings
        self.max_answer_length = int(max_answer_length)
        self.null_threshold = null_threshold

        def read(question, context):
            windows = qa_windows(tokenizer, ids, question, context, settings)
            longest = tf.cast(tf.reduce_max(windows["tokens"].row_lengths()), tf.int32)
            length = tf.minimum(settings.seq_len, (longest + 31) // 32 * 32)
            features, starts, ends = dense_windows(windows, ids, length)
            logits = model(features, training=False)
            return best_spans(context, logits["start_logits"], logits["end_logits"], starts, ends, windows["example"],
                              max_answer_length=self.max_answer_length, null_threshold=None)

        # One trace for every batch size: tracing the tokenizer's graph costs seconds.
        self._read = tf.function(read, input_signature=_TEXT_PAIR_SIGNATURE)

    def answers(self, questions, contexts, batch_size=32):
        """One dict per question: `answer`, `start`, `end` (character offsets in its context,
        end exclusive; -1 without an answer), `score`, `null_score_diff`."""
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts; give one context each")
        results = []
        for begin in range(0, len(questions), batch_size):
            found = self._read(tf.constant(list(questions[begin: begin + batch_size]), tf.string),
                               tf.constant(list(contexts[begin: begin + batch_size]), tf.string))
            found = {name: value.numpy() for name, value in found.items()}
            found = apply_null_threshold(found, self.null_threshold)
            for row in range(len(found["answer"])):
                results.append({"answer": found["answer"][row].decode("utf-8"), "start": int(found["start"][row]),
                                "end": int(found["end"][row]), "score": float(found["score"][row]),
                                "null_score_diff": float(found["null_score_diff"][row])})
        return results

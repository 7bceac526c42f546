"""Task metrics computed on whole evaluation sets: accuracy, macro-F1, entity-level
precision/recall/F1 over BIO tags, and answer exact match and F1 for question answering
(correlations live in `kmlm.statistics`)."""

from __future__ import annotations

import collections
import re
import string

import numpy as np


def accuracy(gold, predicted) -> float:
    """Share of positions where `predicted` equals `gold`.

    Example:
    >>> accuracy([0, 1, 1], [0, 1, 0])
    0.6666666666666666
    """
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    if gold.shape != predicted.shape or gold.size == 0:
        raise ValueError(f"need equal, non-empty label arrays; got shapes {gold.shape} and {predicted.shape}")
    return float(np.mean(gold == predicted))


def macro_f1(gold, predicted, num_classes: int | None = None) -> float:
    """Unweighted mean of the per-class F1 over the classes that occur in `gold` or
    `predicted` (a class never seen in either is not counted).

    Example:
    >>> macro_f1([0, 0, 1, 1], [0, 1, 1, 1])
    0.7333333333333334
    """
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    classes = np.union1d(gold, predicted) if num_classes is None else np.arange(num_classes)
    scores = []
    for c in classes:
        true_positive = np.sum((gold == c) & (predicted == c))
        predicted_c, gold_c = np.sum(predicted == c), np.sum(gold == c)
        if predicted_c == 0 and gold_c == 0:
            continue
        scores.append(2 * true_positive / (predicted_c + gold_c))
    return float(np.mean(scores)) if scores else 0.0


def bio_entities(tags) -> set[tuple[str, int, int]]:
    """The entity spans of one BIO (IOB2) tag sequence as (type, start, end) with `end`
    exclusive, read as the conlleval script does: an `I-X` that does not continue an
    entity of type X starts a new one, and any other tag ends the open entity.

    Example:
    >>> sorted(bio_entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"]))
    [('LOC', 3, 4), ('LOC', 4, 5), ('PER', 0, 2)]
    """
    spans, open_type, start = set(), None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, kind = tag.partition("-")
        continues = prefix == "I" and kind == open_type
        if open_type is not None and not continues:
            spans.add((open_type, start, i))
            open_type = None
        if prefix in ("B", "I") and not continues:
            open_type, start = kind, i
    return spans


def entity_scores(gold_sequences, predicted_sequences) -> dict:
    """Entity-level micro precision, recall and F1 over sentences of BIO tags (an entity
    counts as correct only when its type and both boundaries match).

    Example:
    >>> entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])["f1"]
    0.0
    """
    if len(gold_sequences) != len(predicted_sequences):
        raise ValueError(f"{len(gold_sequences)} gold sentences but {len(predicted_sequences)} predicted")
    correct = found = expected = 0
    for gold, predicted in zip(gold_sequences, predicted_sequences):
        if len(gold) != len(predicted):
            raise ValueError(f"a sentence has {len(gold)} gold tags but {len(predicted)} predicted")
        gold_spans, predicted_spans = bio_entities(gold), bio_entities(predicted)
        correct += len(gold_spans & predicted_spans)
        found += len(predicted_spans)
        expected += len(gold_spans)
    precision = correct / found if found else 0.0
    recall = correct / expected if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "entities": expected, "found": found,
            "correct": correct}


_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff])")


def normalize_answer(text: str) -> str:
    """An answer as SQuAD compares answers: lowercased, ASCII punctuation removed, the
    articles a/an/the removed, whitespace runs collapsed to one space and trimmed.

    Example:
    >>> normalize_answer("  The Eiffel-Tower, (Paris)! ")
    'eiffeltower paris'
    """
    text = "".join(character for character in text.lower() if character not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    """The words of a normalised answer that F1 counts: whitespace-separated, and every CJK
    character a word of its own (Chinese has no spaces between words).

    Example:
    >>> answer_tokens("The 北京 airport")
    ['北', '京', 'airport']
    """
    return _CJK.sub(r" \1 ", normalize_answer(text)).split()


def answer_f1(predicted: str, gold: str) -> float:
    """Word-overlap F1 of two answers after normalisation; when either is empty (no answer),
    1 if both are, else 0.

    Example:
    >>> answer_f1("the big red fox", "red fox jumps")  # 2 shared words: precision 2/3, recall 2/3
    0.6666666666666666
    """
    predicted_tokens, gold_tokens = answer_tokens(predicted), answer_tokens(gold)
    if not predicted_tokens or not gold_tokens:
        return float(predicted_tokens == gold_tokens)
    shared = sum((collections.Counter(predicted_tokens) & collections.Counter(gold_tokens)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted_tokens), shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def answer_scores(predicted, gold_answers) -> dict:
    """Exact match and F1 over questions, each the best over the question's gold answers (an
    unanswerable question has none; its only right answer is ""). With unanswerable
    questions also the scores on the answerable (`has_answer_*`) and unanswerable
    (`no_answer_*`) ones.

    Args:
        predicted: one answer text per question ("" for no answer).
        gold_answers: per question, the list of its gold answer texts.

    Example:
    >>> scores = answer_scores(["Paris", "", "blue"], [["paris", "in Paris"], [], ["red"]])
    >>> scores["exact_match"], scores["has_answer_exact_match"], scores["no_answer_f1"]
    (0.6666666666666666, 0.5, 1.0)
    """
    if len(predicted) != len(gold_answers):
        raise ValueError(f"{len(predicted)} predicted answers for {len(gold_answers)} questions")
    if not predicted:
        raise ValueError("no questions to score")
    exact, f1 = [], []
    for answer, golds in zip(predicted, gold_answers):
        golds = list(golds) or [""]
        exact.append(max(float(normalize_answer(answer) == normalize_answer(gold)) for gold in golds))
        f1.append(max(answer_f1(answer, gold) for gold in golds))
    exact, f1 = np.array(exact), np.array(f1)
    scores = {"exact_match": float(exact.mean()), "f1": float(f1.mean()), "questions": len(predicted)}
    answerable = np.array([bool(golds) for golds in gold_answers])
    if not answerable.all():
        for name, subset in (("has_answer", answerable), ("no_answer", ~answerable)):
            scores[f"{name}_questions"] = int(subset.sum())
            scores[f"{name}_exact_match"] = float(exact[subset].mean()) if subset.any() else 0.0
            scores[f"{name}_f1"] = float(f1[subset].mean()) if subset.any() else 0.0
    return scores

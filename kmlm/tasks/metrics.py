"""Task metrics computed on whole evaluation sets: accuracy, macro-F1 and entity-level
precision/recall/F1 over BIO tags (correlations live in `kmlm.statistics`)."""

from __future__ import annotations

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

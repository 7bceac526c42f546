import numpy as np
import pytest

from kmlm.tasks.metrics import accuracy, bio_entities, entity_scores, macro_f1


def test_accuracy_and_macro_f1_by_hand():
    gold = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 2, 2]
    assert accuracy(gold, predicted) == pytest.approx(4 / 6)
    # class 0: tp 2, pred 2, gold 3 -> 4/5; class 1: tp 1, pred 2, gold 2 -> 1/2; class 2: tp 1, pred 2, gold 1 -> 2/3
    assert macro_f1(gold, predicted) == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    # a class that never occurs in gold or predicted is not counted
    assert macro_f1(gold, predicted, num_classes=4) == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)


def test_accuracy_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match=r"need equal, non-empty label arrays; got shapes \(2,\) and \(3,\)"):
        accuracy([0, 1], [0, 1, 1])


def test_bio_entities_follow_conlleval():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-PER", "B-ORG"]
    assert bio_entities(tags) == {("PER", 0, 2), ("LOC", 3, 5), ("LOC", 5, 6), ("PER", 6, 7), ("ORG", 7, 8)}


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "I-ORG", "B-PER"]]
    # gold entities: PER(0,2) LOC(3,4) | ORG(0,1) PER(2,3) = 4; predicted: PER(0,2) | ORG(0,2) PER(2,3) = 3;
    # correct: PER(0,2), PER(2,3) = 2 (ORG has the wrong end)
    scores = entity_scores(gold, predicted)
    assert (scores["correct"], scores["found"], scores["entities"]) == (2, 3, 4)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))


@pytest.mark.parametrize("seed", range(4))
def test_macro_f1_matches_scikit_learn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 5, 60)
    predicted = np.where(rng.random(60) < 0.6, gold, rng.integers(0, 6, 60))  # class 5 only ever predicted
    assert macro_f1(gold, predicted) == pytest.approx(metrics.f1_score(gold, predicted, average="macro"), abs=1e-12)
    assert accuracy(gold, predicted) == pytest.approx(metrics.accuracy_score(gold, predicted), abs=1e-12)


def _entity_scores_by_hand(gold_sequences, predicted_sequences):
    """conlleval's counts, written out independently: walk the tags and close an entity
    whenever a tag does not continue it."""
    def spans(tags):
        found, current = [], None
        for i, tag in enumerate(tags):
            kind = tag[2:] if tag != "O" else None
            if current and not (tag.startswith("I-") and kind == current[0]):
                found.append((current[0], current[1], i))
                current = None
            if tag != "O" and current is None:
                current = (kind, i)
        if current:
            found.append((current[0], current[1], len(tags)))
        return found

    gold = [(n, s) for n, sentence in enumerate(gold_sequences) for s in spans(sentence)]
    predicted = [(n, s) for n, sentence in enumerate(predicted_sequences) for s in spans(sentence)]
    correct = len(set(gold) & set(predicted))
    precision, recall = correct / len(predicted), correct / len(gold)
    return precision, recall, 2 * precision * recall / (precision + recall)


def test_entity_scores_match_a_hand_computation_on_random_tags():
    rng = np.random.default_rng(7)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [[tags[i] for i in rng.integers(0, 5, 12)] for _ in range(30)]
    predicted = [[t if rng.random() < 0.8 else tags[rng.integers(0, 5)] for t in row] for row in gold]
    precision, recall, f1 = _entity_scores_by_hand(gold, predicted)
    scores = entity_scores(gold, predicted)
    assert 0 < scores["f1"] < 1
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((precision, recall, f1), abs=1e-12)

import numpy as np
import pytest
import scipy.stats

from kmlm.tasks.metrics import accuracy, average_ranks, bio_entities, entity_scores, macro_f1, pearson, spearman


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


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 80).astype(float)
    y = x + rng.normal(size=80)
    assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
    assert pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-12)
    np.testing.assert_array_equal(average_ranks(x), scipy.stats.rankdata(x))


def test_spearman_by_hand():
    # ranks x: 1 2 3 4, ranks y: 2 1 4 3 -> rho = 1 - 6 * 4 / (4 * 15) = 0.6
    assert spearman([1, 2, 3, 4], [20, 10, 40, 30]) == pytest.approx(0.6)

"""Question answering without training: windows over a context longer than S, the byte
spans of their tokens, span targets, the best-span search and the answer metrics, each
against a hand computation or a brute-force search."""

import json

import numpy as np
import pytest
import tensorflow as tf

from kmlm.pipelines import make_tokenizer, special_ids
from kmlm.tasks.examples import load_task_examples
from kmlm.tasks.metrics import answer_f1, answer_scores, normalize_answer
from kmlm.tasks.qa import (WindowSettings, answer_byte_span, apply_null_threshold, best_null_threshold, best_spans,
                           dense_windows, qa_windows, span_targets)

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "the", "code", "?",
              "a", "b", "c", "d", "e", "##s", "价", "格"]
CLS, SEP = 2, 3
QUESTIONS = ["What is the code?", "a"]
# characters: a0 b2 c4 d6 e8 s9 e11 a13 价15 格16; UTF-8 bytes: 价 15-18, 格 18-21
CONTEXTS = ["a b c d es e a 价格", ""]
SETTINGS = WindowSettings(seq_len=10, doc_stride=2, max_query_length=3)
# The context's ten pieces a b c d e ##s e a 价 格 and the byte span of each one's word.
PIECES = [10, 11, 12, 13, 14, 15, 14, 10, 16, 17]
PIECE_STARTS = [0, 2, 4, 6, 8, 8, 11, 13, 15, 18]
PIECE_ENDS = [1, 3, 5, 7, 10, 10, 12, 14, 18, 21]


@pytest.fixture(scope="module")
def windows():
    tokenizer, ids = make_tokenizer(VOCABULARY), special_ids(VOCABULARY)
    encode = tf.function(lambda question, context: qa_windows(tokenizer, ids, question, context, SETTINGS))
    found = encode(tf.constant(QUESTIONS), tf.constant(CONTEXTS))
    return found, dense_windows(found, ids, SETTINGS.seq_len)


def test_a_long_context_splits_into_overlapping_windows(windows):
    found, _ = windows
    # 3 question pieces kept (what is the), so 10 - 3 - 3 = 4 context pieces a window,
    # starting every 2 pieces: 0, 2, 4, 6 (the last reaches the end); the empty context has one.
    head = [CLS, 5, 6, 7, SEP]
    expected = [head + PIECES[start: start + 4] + [SEP] for start in (0, 2, 4, 6)] + [[CLS, 10, SEP, SEP]]
    assert found["tokens"].to_list() == expected
    assert found["segments"].to_list() == [[0] * 5 + [1] * 5] * 4 + [[0, 0, 0, 1]]
    assert found["example"].numpy().tolist() == [0, 0, 0, 0, 1]
    assert found["first_piece"].numpy().tolist() == [0, 2, 4, 6, 0]
    off = [-1] * 5
    assert found["starts"].to_list() == [off + PIECE_STARTS[s: s + 4] + [-1] for s in (0, 2, 4, 6)] + [[-1] * 4]
    assert found["ends"].to_list() == [off + PIECE_ENDS[s: s + 4] + [-1] for s in (0, 2, 4, 6)] + [[-1] * 4]


def test_a_stride_beyond_the_window_skips_no_piece():
    tokenizer, ids = make_tokenizer(VOCABULARY), special_ids(VOCABULARY)
    settings = WindowSettings(seq_len=10, doc_stride=100, max_query_length=3)
    found = tf.function(lambda q, c: qa_windows(tokenizer, ids, q, c, settings))(
        tf.constant(QUESTIONS[:1]), tf.constant(CONTEXTS[:1]))
    # steps of 4, what a window holds: pieces 0-3, 4-7 and the last two, 8-9
    assert found["first_piece"].numpy().tolist() == [0, 4, 8]
    assert found["tokens"].to_list()[2] == [CLS, 5, 6, 7, SEP] + PIECES[8:] + [SEP]


def test_answers_map_to_the_tokens_of_the_windows_that_hold_them(windows):
    _, (_, starts, ends) = windows
    starts, ends = starts.numpy()[:4], ends.numpy()[:4]
    english = answer_byte_span(CONTEXTS[0], "es e", 8)
    chinese = answer_byte_span(CONTEXTS[0], "价格", 15)
    assert (english, chinese) == ((8, 12), (15, 21))
    # "es e" (pieces e ##s e) lies whole only in the window of pieces 4-7, at positions 5-7;
    # the others train on [CLS]
    first, last = span_targets(starts, ends, np.array([english] * 4))
    assert (first.tolist(), last.tolist()) == ([0, 0, 5, 0], [0, 0, 7, 0])
    first, last = span_targets(starts, ends, np.array([chinese] * 4))
    assert (first.tolist(), last.tolist()) == ([0, 0, 0, 7], [0, 0, 0, 8])
    first, last = span_targets(starts, ends, np.array([[-1, -1]] * 4))  # no answer
    assert (first.tolist(), last.tolist()) == ([0] * 4, [0] * 4)
    # an answer_start a little off is found by its text; a text not in the context is not
    assert answer_byte_span(CONTEXTS[0], "价格", 3) == (15, 21) and answer_byte_span(CONTEXTS[0], "zz", 0) is None


def _search(windows, start_logits, end_logits, **options):
    _, (_, starts, ends) = windows
    found = best_spans(tf.constant(CONTEXTS), tf.constant(start_logits), tf.constant(end_logits), starts, ends,
                       windows[0]["example"], **options)
    return {name: value.numpy().tolist() for name, value in found.items()}


def test_the_best_span_is_read_back_as_characters_of_the_context(windows):
    start, end = np.zeros([5, 10], np.float32), np.zeros([5, 10], np.float32)
    start[3, 7], end[3, 8] = 10.0, 10.0  # window 3: 价 at position 7, 格 at 8
    found = _search(windows, start, end, max_answer_length=30)
    assert found["answer"][0].decode() == "价格" and (found["start"][0], found["end"][0]) == (15, 17)
    assert CONTEXTS[0][15:17] == "价格"
    probabilities = np.exp(start[3]) / np.exp(start[3]).sum() * np.exp(end[3, 8]) / np.exp(end[3]).sum()
    assert found["score"][0] == pytest.approx(probabilities[7], rel=1e-5)
    # the empty context has no span: no answer, whatever the threshold
    assert (found["answer"][1], found["start"][1], found["end"][1]) == (b"", -1, -1)
    # one token at most: 价 (score 10 + 0) comes before 格 (0 + 10) in the search order
    found = _search(windows, start, end, max_answer_length=1)
    assert found["answer"][0].decode() == "价" and (found["start"][0], found["end"][0]) == (15, 16)
    # a [CLS] score 20 above the best span: no answer from threshold 0, an answer from 25
    start[:, 0] = end[:, 0] = 20.0
    assert _search(windows, start, end, max_answer_length=30, null_threshold=0.0)["answer"][0] == b""
    found = _search(windows, start, end, max_answer_length=30, null_threshold=25.0)
    assert found["answer"][0].decode() == "价格" and found["null_score_diff"][0] == pytest.approx(20.0)


def test_the_search_equals_a_brute_force_search_over_all_windows(windows):
    _, (_, starts, ends) = windows
    starts, ends = starts.numpy(), ends.numpy()
    rng = np.random.default_rng(0)
    for trial in range(20):
        start, end = rng.normal(size=[2, 5, 10]).astype(np.float32)
        longest = int(rng.integers(1, 5))
        found = _search(windows, start, end, max_answer_length=longest)
        best, span = -np.inf, None
        for window in range(4):
            for i in range(10):
                for j in range(i, min(10, i + longest)):
                    if starts[window, i] >= 0 and starts[window, j] >= 0 and start[window, i] + end[window, j] > best:
                        best, span = start[window, i] + end[window, j], (starts[window, i], ends[window, j])
        text = CONTEXTS[0].encode()[span[0]: span[1]].decode()
        assert found["answer"][0].decode() == text, trial
        assert CONTEXTS[0][found["start"][0]: found["end"][0]] == text
        null = min(start[w, 0] + end[w, 0] for w in range(4))
        assert found["null_score_diff"][0] == pytest.approx(null - best, abs=1e-5)


def test_a_threshold_applied_after_the_graph_gives_the_graphs_thresholded_answers(windows):
    rng = np.random.default_rng(1)
    start, end = rng.normal(size=[2, 5, 10]).astype(np.float32)
    start[:, 0] += 1.5  # no-answer scores near the best spans': some thresholds cut, some not
    free = {name: np.asarray(value) for name, value in _search(windows, start, end, max_answer_length=30).items()}
    diffs = free["null_score_diff"][np.isfinite(free["null_score_diff"])]
    for threshold in (-5.0, 0.0, float(diffs[0]), float(diffs[0]) - 1e-3, 5.0):
        graph = _search(windows, start, end, max_answer_length=30, null_threshold=threshold)
        after = apply_null_threshold(free, threshold)
        for name in ("answer", "start", "end", "score", "null_score_diff"):
            assert np.asarray(after[name]).tolist() == graph[name], (threshold, name)
    assert apply_null_threshold(free, None) is free


@pytest.mark.parametrize("text, normalized", [
    ("The Cat", "cat"), ("  an  apple, a day!", "apple day"), ("theatre", "theatre"), ("A.B.C.", "abc"),
    ("Tom's (big) car.", "toms big car"), ("", ""),
])
def test_answers_are_normalized_as_squad_compares_them(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_and_f1_take_the_best_gold_answer():
    # "the blue car" vs "blue car park": 2 shared words of 2 and 3 -> P 1, R 2/3, F1 0.8
    assert answer_f1("the blue car", "blue car park") == pytest.approx(0.8)
    assert answer_f1("red", "blue") == 0.0 and answer_f1("", "") == 1.0 and answer_f1("x", "") == 0.0
    assert answer_f1("北京 airport", "北京") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))  # CJK: one word a character
    scores = answer_scores(["The Blue car!", "paris", "seven"],
                           [["blue car park", "blue car"], ["in Paris", "Paris, France"], ["six", "eight"]])
    # question 1: exact with its second gold; 2: F1 2/3 with either (P 1, R 1/2); 3: nothing
    assert scores == {"exact_match": pytest.approx(1 / 3), "f1": pytest.approx((1 + 2 / 3 + 0) / 3), "questions": 3}


def test_unanswerable_questions_score_separately():
    scores = answer_scores(["blue", "", "red", "x"], [["blue"], [], [], ["red"]])
    assert scores["exact_match"] == pytest.approx(0.5)
    assert (scores["has_answer_questions"], scores["has_answer_exact_match"], scores["has_answer_f1"]) == (2, 0.5, 0.5)
    assert (scores["no_answer_questions"], scores["no_answer_exact_match"], scores["no_answer_f1"]) == (2, 0.5, 0.5)


def test_the_null_threshold_maximises_f1():
    answers, golds = ["a", "b", "c", "d"], [["a"], [], ["c"], []]
    # answering in order of the difference: a (+1), b (-1), c (+1), d (-1); best after a or c, first one kept
    assert best_null_threshold(answers, [-3.0, -1.0, 2.0, 5.0], golds) == -3.0
    assert best_null_threshold(answers, [-3.0, 2.0, -1.0, 5.0], golds) == -1.0  # a and c answered, b and d not
    assert best_null_threshold(["a"], [float("inf")], [["a"]]) == 0.0  # nothing to answer


def _squad(version):
    paragraph = {"context": "Paris is the capital of France.", "qas": [
        {"id": "1", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 0},
                                                                   {"text": "Paris", "answer_start": 0}]},
        {"id": "2", "question": "What is the capital of Spain?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "Paris", "answer_start": 0}]},
    ]}
    return {"version": version, "data": [{"title": "France", "paragraphs": [paragraph]}]}


def test_squad_json_and_jsonl_files_load(tmp_path):
    v2 = tmp_path / "dev-v2.0.json"
    v2.write_text(json.dumps(_squad("v2.0")), encoding="utf-8")
    examples = load_task_examples(str(v2), "qa")
    assert examples.texts == ["What is the capital?", "What is the capital of Spain?"]
    assert examples.text_pairs == ["Paris is the capital of France."] * 2
    assert examples.answers == [[{"text": "Paris", "answer_start": 0}] * 2, []]
    lines = tmp_path / "train.jsonl"
    rows = [{"question": "q1", "context": "c one", "answers": {"text": ["one"], "answer_start": [2]}},
            {"question": "q2", "context": "c two", "answers": [{"text": "two", "answer_start": 2}]},
            {"question": "q3", "context": "c", "answers": []}]
    lines.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    examples = load_task_examples(str(lines), "qa")
    assert examples.answers == [[{"text": "one", "answer_start": 2}], [{"text": "two", "answer_start": 2}], []]
    assert len(examples.take(2)) == 2 and examples.take(2).answers == examples.answers[:2]


def test_a_qa_file_without_a_context_is_refused(tmp_path):
    lines = tmp_path / "bad.jsonl"
    lines.write_text(json.dumps({"question": "q", "answers": []}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"example 1 has no 'context' text, which task 'qa' needs; its fields are: "
                                         r"answers, question$"):
        load_task_examples(str(lines), "qa")


@pytest.mark.parametrize("name", ["squad", "squad/v2.0"])
def test_squad_loads_from_tfds_by_name(name):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        examples = load_task_examples(f"tfds:{name}:validation", "qa")
        raw = list(tfds.load(name, split="validation", download=False).as_numpy_iterator())
    assert examples.texts == [row["question"].decode() for row in raw]
    assert examples.text_pairs == [row["context"].decode() for row in raw]
    for answers, row in zip(examples.answers, raw):
        gold = row["answers"]
        expected = [{"text": t.decode(), "answer_start": int(s)} for t, s in zip(gold["text"], gold["answer_start"])]
        assert answers == ([] if row.get("is_impossible") else expected)

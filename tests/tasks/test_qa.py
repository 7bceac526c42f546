"""Question answering end to end: a tiny encoder pretrained on the task's own contexts is
fine-tuned to find a planted span among distractors, then predicted with (English and
Chinese contexts, contexts longer than one window) and exported."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from kmlm.tasks.examples import load_task_examples
from kmlm.tasks.finetune import FinetuneSettings, Tasker, finetune
from kmlm.tasks.qa import best_null_threshold, window_arrays
from tests.helpers import pretrain_tiny_run, run_cli, write_corpus
from tests.task_data import FILLER, write_jsonl

pytestmark = pytest.mark.slow
SERVE_EXPORT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "serving", "serve_export.py")
SEQ_LEN = 48
QA = dict(seq_len=SEQ_LEN, batch_size=16, learning_rate=1e-3, doc_stride=16, max_query_length=16)
# Each fact's value comes from its own list; the code is asked for, the others distract.
VALUES = {"code": ("k7", "x9 b2", "q4", "z3 m8", "r2 d2"), "color": ("red", "dark blue", "green", "light gray"),
          "city": ("paris", "new york", "oslo", "san jose"), "owner": ("alice", "bob smith", "carol", "dan lee")}
# Chinese filler too: its characters are three UTF-8 bytes each, so answer offsets counted in
# bytes instead of characters would miss in training, prediction and serving alike.
WORDS = FILLER + ("今天", "天气", "很好", "我们", "去", "公园", "。")
LONG_CONTEXT = ("the default value of this method is set . " * 4 + "the city is oslo . the code is z3 m8 . "
                + "it is in the name of the function . " * 4)


def planted_code_examples(count, seed, unanswerable=0.0):
    """qa rows: a context of one to four facts ("the city is oslo .") among filler words
    (English and Chinese);
    the question asks for the code, which is there unless the row is unanswerable."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        facts = rng.sample(["color", "city", "owner"], rng.randint(1, 3))
        if rng.random() >= unanswerable:
            facts.insert(rng.randrange(len(facts) + 1), "code")
        parts, answers = [], []
        for fact in facts:
            parts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) + " .")
            value = rng.choice(VALUES[fact])
            if fact == "code":
                answers.append({"text": value, "answer_start": len(" ".join(parts + ["the code is "]))})
            parts.append(f"the {fact} is {value} .")
        rows.append({"question": "what is the code ?", "context": " ".join(parts), "answers": answers})
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("qa")
    files = {"train": write_jsonl(base / "train.jsonl", planted_code_examples(300, 1)),
             "dev": write_jsonl(base / "dev.jsonl", planted_code_examples(100, 2)),
             "train_v2": write_jsonl(base / "train_v2.jsonl", planted_code_examples(96, 3, unanswerable=0.3)),
             "dev_v2": write_jsonl(base / "dev_v2.jsonl", planted_code_examples(48, 4, unanswerable=0.3))}
    corpus = write_corpus(base / "corpus.txt", [row["question"] + " " + row["context"]
                                                for row in planted_code_examples(300, 10)])
    run = pretrain_tiny_run(corpus, base / "run", seq_len=SEQ_LEN)
    return base, run, files


@pytest.fixture(scope="module")
def reader(data):
    base, run, files = data
    out = str(base / "qa")
    result = finetune(run, out, FinetuneSettings(task="qa", train=files["train"], eval=files["dev"], epochs=3,
                                                 patience=3, **QA), verbose=0)
    return out, result


def test_a_planted_span_is_found_among_distractors(reader, data):
    out, result = reader
    print("planted-code QA, dev:", result["eval"])
    assert result["eval"]["f1"] >= 0.9 and result["eval"]["exact_match"] >= 0.85, result
    assert result["eval"]["questions"] == 100
    record = json.load(open(os.path.join(out, "task.json")))
    assert record["task"] == "qa" and record["metrics"] == result
    assert (record["doc_stride"], record["max_query_length"], record["max_answer_length"]) == (16, 16, 30)
    assert record["null_threshold"] is None  # no unanswerable training question: always answer


def test_training_reads_long_contexts_in_several_windows(reader, data):
    _, run, files = data
    out, _ = reader
    tasker = Tasker.load(out)
    examples = load_task_examples(files["train"], "qa")
    arrays, unlocated = window_arrays(examples, tasker.tokenizer, tasker.ids,
                                      FinetuneSettings(task="qa", **QA).window_settings())
    counts = np.bincount(arrays["example"])
    assert unlocated == 0 and counts.max() > 1 and len(counts) == len(examples)
    # every question's answer is the target of at least one of its windows
    answered = np.zeros(len(examples), bool)
    answered[arrays["example"][arrays["start_positions"] > 0]] = True
    assert answered.all()


def test_answers_in_long_and_chinese_contexts_are_character_spans(reader):
    out, _ = reader
    tasker = Tasker.load(out)
    chinese = "今天天气很好，我们去公园。 the code is k7 . 天气 the city is rome ."
    contexts = [LONG_CONTEXT, chinese]
    found = tasker.answers(["what is the code ?"] * 2, contexts)
    assert [f["answer"] for f in found] == ["z3 m8", "k7"]
    for context, answer in zip(contexts, found):
        assert context[answer["start"]: answer["end"]] == answer["answer"]
        assert answer["start"] == context.index(answer["answer"])  # characters, not UTF-8 bytes
        assert 0 < answer["score"] <= 1


def test_predict_command_prints_the_answer_span_and_score(reader, capsys):
    out, _ = reader
    context = "the color is red . the code is x9 b2 . the owner is carol ."
    code, stdout, err = run_cli(["predict", out, "--question", "what is the code ?", "--context", context, "--json"],
                                capsys)
    assert code == 0, err
    shown = json.loads(stdout)
    expected = Tasker.load(out).answers(["what is the code ?"], [context])[0]
    assert shown == [{"question": "what is the code ?", "answer": "x9 b2", "start": 31, "end": 36,
                      "score": pytest.approx(expected["score"], abs=1e-6)}]
    code, stdout, _ = run_cli(["predict", out, "--question", "what is the code ?", "--context", context], capsys)
    assert code == 0 and stdout.split("\t")[:2] == ["x9 b2", "[31, 36)"]


@pytest.mark.parametrize("argv, message", [
    (["predict", "{qa}", "a text"], "kmlm predict: error: a qa model reads --question Q --context C, not TEXT arguments"),
    (["predict", "{qa}", "--question", "q"], "kmlm predict: error: a qa model needs --question Q and --context C"),
    (["predict", "{qa}", "--question", "q", "--question", "r", "--question", "s", "--context", "a", "--context", "b"],
     "kmlm predict: error: 2 --context for 3 --question; give one context, or one per question"),
    (["finetune", "{run}", "--task", "qa", "--train", "{train}", "--out", "{out}", "--seq-len", "32",
      "--max-query-length", "30"],
     "kmlm finetune: error: seq_len=32 leaves no room for the context after max_query_length=30 question pieces "
     "and 3 special tokens; use --seq-len >= 34 or a smaller --max-query-length"),
])
def test_errors_are_one_line(reader, data, tmp_path, capsys, argv, message):
    _, run, files = data
    values = {"qa": reader[0], "run": run, "out": str(tmp_path / "out"), **files}
    code, _, err = run_cli([a.format(**values) for a in argv], capsys)
    assert code == 2 and err.strip() == message.format(**values)


def test_unanswerable_questions_tune_the_null_threshold_on_eval(data):
    base, run, files = data
    out = str(base / "qa_v2")
    result = finetune(run, out, FinetuneSettings(task="qa", train=files["train_v2"], eval=files["dev_v2"], epochs=1,
                                                 **QA), verbose=0)
    scores = result["eval"]
    assert scores["has_answer_questions"] + scores["no_answer_questions"] == scores["questions"] == 48
    tasker = Tasker.load(out)
    assert tasker.info.null_threshold == result["null_threshold"]
    # the threshold is the best one for the model's answers on the evaluation set
    examples = load_task_examples(files["dev_v2"], "qa")
    tasker.info.null_threshold = None
    found = tasker.answers(examples.texts, examples.text_pairs)
    golds = [[g["text"] for g in answers] for answers in examples.answers]
    assert result["null_threshold"] == pytest.approx(
        best_null_threshold([f["answer"] for f in found], [f["null_score_diff"] for f in found], golds), abs=1e-5)


def test_export_serves_the_answers_of_the_keras_model_in_a_fresh_process(reader, tmp_path, capsys):
    out, _ = reader
    code, stdout, err = run_cli(["export", out, "--out", str(tmp_path / "qa")], capsys)
    assert code == 0, err
    questions = ["what is the code ?", "what is the code ?", "what is the code ?"]
    contexts = [LONG_CONTEXT, "今天天气很好 the code is k7 . 明天", "the owner is dan lee . the code is r2 d2 ."]
    request_file = tmp_path / "requests.json"
    request_file.write_text(json.dumps({"exports": {"qa": str(tmp_path / "qa" / "1")}, "requests": {
        "qa": {"predict": {"question": questions, "context": contexts}}}}), encoding="utf-8")
    results_file = tmp_path / "results.npz"
    result = subprocess.run([sys.executable, SERVE_EXPORT, str(request_file), str(results_file)],
                            capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    served = dict(np.load(results_file, allow_pickle=False))
    expected = Tasker.load(out).answers(questions, contexts)
    for loader in ("eager", "session"):
        assert served[f"qa/{loader}/predict/answer"].tolist() == [e["answer"] for e in expected]
        assert served[f"qa/{loader}/predict/start"].tolist() == [e["start"] for e in expected]
        assert served[f"qa/{loader}/predict/end"].tolist() == [e["end"] for e in expected]
        np.testing.assert_allclose(served[f"qa/{loader}/predict/score"], [e["score"] for e in expected], atol=1e-5)
    assert served["qa/session/predict/answer"].tolist()[0] == "z3 m8"
    assert any(key.startswith("qa/warmup/") for key in served) and served["leaked_modules"].size == 0

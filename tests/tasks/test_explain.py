"""Integrated-gradients attributions: completeness against the model's own logits, a planted
keyword classifier whose keyword gets the largest attribution, `kmlm predict --explain`, and
the HTML/PNG highlights."""

import dataclasses
import json
import os
import random

import numpy as np
import pytest

from kmlm.model import build_mlm_model
from kmlm.pipelines import save_vocabulary
from kmlm.run_directory import DataRecord, RunConfig
from kmlm.tasks.explain import Attribution, Explainer, highlight_html, plot_highlight
from kmlm.tasks.finetune import MODEL_FILE, TASK_FILE, VOCAB_FILE, FinetuneSettings, Tasker, finetune
from kmlm.tasks.models import build_classifier, build_tagger
from tests.helpers import run_cli
from tests.task_data import write_jsonl
from tests.tiny_run import VOCABULARY, tiny_model

FILLER = ("the", "cat", "dog", "sat", "on", "a", "mat", "ran", "big")
KEYWORD = "red"


def write_task_directory(path, task="classify", labels=("no", "yes"), seed=0):
    """An untrained task model on `tiny_model(seed)`'s encoder, written as `kmlm finetune`
    writes one (model.keras, vocab.txt, task.json); returns the path."""
    encoder = tiny_model(seed).encoder
    if task == "tag":
        model = build_tagger(encoder, len(labels), dropout=0.0)
    else:
        model = build_classifier(encoder, len(labels), dropout=0.0)
    os.makedirs(path, exist_ok=True)
    model.save(os.path.join(path, MODEL_FILE))
    save_vocabulary(VOCABULARY, os.path.join(path, VOCAB_FILE))
    with open(os.path.join(path, TASK_FILE), "w", encoding="utf-8") as file:
        json.dump({"task": task, "labels": list(labels), "seq_len": 32, "lowercase": True}, file)
    return str(path)


def keyword_examples(count, seed):
    """Filler sentences; half hold the keyword, and the label says whether it is there."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
        planted = rng.random() < 0.5
        if planted:
            words.insert(rng.randrange(len(words) + 1), KEYWORD)
        rows.append({"text": " ".join(words), "label": KEYWORD if planted else "plain"})
    return rows


def write_run(path, initializer_range=0.02):
    """A run directory like `make_tiny_run`'s with BERT's initializer scale: from tiny_run's
    0.5 a classifier learns the keyword too, but through interactions with the other words."""
    model = build_mlm_model(dataclasses.replace(tiny_model().config, initializer_range=initializer_range))
    os.makedirs(path, exist_ok=True)
    save_vocabulary(VOCABULARY, os.path.join(path, VOCAB_FILE))
    RunConfig(model=model.config, data=DataRecord(lowercase=True, seq_len=32)).write(path)
    model.save(os.path.join(path, MODEL_FILE))
    return str(path)


@pytest.fixture(scope="module")
def keyword_classifier(tmp_path_factory):
    base = tmp_path_factory.mktemp("keyword")
    run = write_run(base / "run")
    train = write_jsonl(base / "train.jsonl", keyword_examples(256, 1))
    dev = write_jsonl(base / "dev.jsonl", keyword_examples(64, 2))
    out = str(base / "classifier")
    result = finetune(run, out, FinetuneSettings(task="classify", train=train, eval=dev, seq_len=16, batch_size=32,
                                                 epochs=10, patience=10, learning_rate=3e-3), verbose=0)
    return out, result


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """Untrained task models by task: the completeness checks need no training."""
    base = tmp_path_factory.mktemp("untrained")
    return {"classify": write_task_directory(base / "classify", seed=2),
            "pair": write_task_directory(base / "pair", task="pair", labels=("different", "same"), seed=2)}


@pytest.fixture(scope="module")
def keyword_explainer(keyword_classifier):
    return Explainer(Tasker.load(keyword_classifier[0]), steps=16)


def logits_of(tasker, features):
    return np.asarray(tasker.model(features, training=False), np.float64)[0]


@pytest.mark.parametrize("task, pair, baseline", [("classify", None, "mask"), ("pair", "a dog ran on the mat", "pad")])
def test_attributions_add_up_to_the_logit_difference(task, pair, baseline, untrained):
    tasker = Tasker.load(untrained[task])
    text = "the big red cat sat on a mat"
    explainer = Explainer(tasker, baseline=baseline, steps=32, batch_size=128)
    coarse = explainer(text, pair)
    explainer.steps = 128
    attribution = explainer(text, pair)
    features = explainer.features(text, pair)
    ids = tasker.ids
    token_ids = features["token_ids"][0]
    expected_tokens = ["[CLS]"] + text.split() + ["[SEP]"] + ([] if pair is None else pair.split() + ["[SEP]"])
    assert attribution.tokens == expected_tokens
    # The baseline, built here: every token but [CLS] and [SEP] replaced; positions, segments kept.
    replacement = ids.mask if baseline == "mask" else ids.pad
    baseline_ids = np.where(np.isin(token_ids, [ids.cls, ids.sep]), token_ids, replacement)[None].astype("int32")
    logits = logits_of(tasker, features)
    target = int(np.argmax(logits))
    score = logits[target]
    baseline_score = logits_of(tasker, {**features, "token_ids": baseline_ids})[target]
    assert attribution.label == tasker.info.labels[target]
    assert attribution.score == pytest.approx(score, abs=1e-5)
    assert attribution.baseline_score == pytest.approx(baseline_score, abs=1e-5)
    difference = score - baseline_score
    assert abs(difference) > 0.05  # a difference to share out, not 0 = 0
    # Completeness: at 128 points the midpoint rule's error is far inside 1% of the
    # difference, and it falls as 1/steps^2 (a quarter of the 32-point error is generous).
    error = np.sum(attribution.scores) - difference
    assert abs(error) <= 0.01 * max(1.0, abs(difference))
    assert abs(error) <= abs(np.sum(coarse.scores) - difference) / 4
    assert attribution.completeness_error == pytest.approx(error, abs=1e-6)
    kept = np.isin(token_ids, [ids.cls, ids.sep])
    assert np.all(attribution.scores[kept] == 0.0) and np.any(attribution.scores[~kept] != 0.0)


def test_the_planted_keyword_gets_the_largest_attribution(keyword_classifier, keyword_explainer):
    _, result = keyword_classifier
    assert result["eval"]["accuracy"] >= 0.9, result
    explainer = keyword_explainer
    planted = [row["text"] for row in keyword_examples(40, 3) if row["label"] == KEYWORD]
    explained = [explainer(text) for text in planted]
    recognised = [a for a in explained if a.label == KEYWORD]
    assert len(recognised) >= 0.9 * len(planted), [(a.text, a.label, a.probability) for a in explained]
    for attribution in recognised:
        top = attribution.tokens[int(np.argmax(attribution.scores))]
        assert top == KEYWORD, (attribution.tokens, attribution.scores)
        assert attribution.scores[attribution.tokens.index(KEYWORD)] > 0


def test_predict_explain_prints_and_writes_the_attributions(keyword_classifier, keyword_explainer, tmp_path, capsys):
    out, _ = keyword_classifier
    texts = ["the cat sat on the red mat", "a big dog ran"]
    picture = tmp_path / "why.png"
    code, printed, _ = run_cli(["predict", out, *texts, "--explain", "--ig-steps", "16", "--json",
                                "--explain-out", str(picture)], capsys)
    assert code == 0
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads(printed)
    for text, result in zip(texts, results):
        expected = keyword_explainer(text)
        record = result["attribution"]
        assert record["label"] == result["label"] == expected.label
        assert record["tokens"] == expected.tokens and record["baseline"] == "mask" and record["steps"] == 16
        np.testing.assert_allclose(record["attributions"], expected.scores, atol=1e-5)
        assert record["completeness_error"] == pytest.approx(
            sum(record["attributions"]) - (record["score"] - record["baseline_score"]), abs=1e-4)
    assert results[0]["attribution"]["tokens"][int(np.argmax(results[0]["attribution"]["attributions"]))] == KEYWORD

    page = tmp_path / "why.html"
    code, printed, errors = run_cli(["predict", out, texts[0], "--explain", "--ig-steps", "16",
                                     "--explain-out", str(page)], capsys)
    assert code == 0 and errors.strip() == f"wrote the attributions to {page}"
    label_line, token_line = printed.strip().splitlines()
    assert label_line.split("\t")[0] == results[0]["label"] and label_line.endswith(texts[0])
    shown = token_line.split()
    assert shown[0::2] == results[0]["attribution"]["tokens"]
    assert [float(s) for s in shown[1::2]] == pytest.approx(results[0]["attribution"]["attributions"], abs=5e-4)
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count("<span title=") == len(shown) // 2


def _one_line_error(argv, capsys):
    code, _, errors = run_cli(argv, capsys)
    lines = errors.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("kmlm predict: error: "), errors
    return lines[0][len("kmlm predict: error: "):]


def test_explain_refusals_are_one_line(untrained, tmp_path, capsys):
    classifier = untrained["classify"]
    tagger = write_task_directory(tmp_path / "tagger", task="tag", labels=("O", "B-X", "I-X"))
    assert _one_line_error(["predict", tagger, "the cat", "--explain"], capsys) == (
        "--explain works for classify and pair models; this is a tag model")
    assert _one_line_error(["predict", classifier, "the cat", "--ig-steps", "8", "--baseline", "pad"], capsys) == (
        "--baseline, --ig-steps need --explain; add --explain")
    assert _one_line_error(["predict", classifier, "the cat", "--explain", "--explain-out", "why.txt"], capsys) == (
        "--explain-out 'why.txt' must end in .html or .png")
    missing = tmp_path / "missing" / "why.png"
    assert _one_line_error(["predict", classifier, "the cat", "--explain", "--explain-out", str(missing)],
                           capsys) == f"cannot write {str(missing)!r}: the directory {str(missing.parent)!r} does not exist"
    assert _one_line_error(["predict", classifier, "the cat", "--explain", "--target", "maybe"], capsys) == (
        "--target 'maybe' is not a label of this model; its labels are no, yes")


def _attribution(tokens, scores, text="x"):
    return Attribution(text=text, text_pair=None, tokens=tokens, scores=np.array(scores), label="yes",
                       probability=0.9, score=1.0, baseline_score=float(1.0 - np.sum(scores)), baseline="mask",
                       steps=8)


def test_highlight_html_escapes_tokens_and_shades_by_score():
    page = highlight_html([_attribution(["[CLS]", "<b>", "ok", "&", "[SEP]"], [0.0, 2.0, -1.0, 0.5, 0.0])])
    assert "&lt;b&gt;" in page and "<b>" not in page.split("<body", 1)[1].replace("<body", "")
    assert 'title="+2.0000" style="background: rgba(214, 38, 40, 1.00)' in page  # the largest: full red
    assert 'title="-1.0000" style="background: rgba(30, 119, 181, 0.50)' in page  # half as large, against: blue
    assert ">&amp;</span>" in page


def test_plot_highlight_draws_english_and_chinese(tmp_path):
    import matplotlib.image

    path = tmp_path / "highlight.png"
    plot_highlight([_attribution(["[CLS]", "the", "red", "cat", "[SEP]"], [0, -0.2, 1.5, 0.1, 0]),
                    _attribution(["[CLS]", "红", "色", "的", "猫", "[SEP]"], [0, 1.0, 0.4, -0.1, 0.2, 0])], str(path))
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 400

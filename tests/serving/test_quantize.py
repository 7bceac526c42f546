"""`kmlm export --format tflite` / `--quantize int8`: the TF Lite model against the float Keras
model, its runners against `FillMask` and `Tasker`, a fresh process that runs the file with
the TF Lite interpreter alone, and the one-line refusals."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kmlm.cli.main import main
from kmlm.inference.fill_mask import FillMask
from kmlm.model import build_encoder
from kmlm.pipelines import never_predicted, save_vocabulary
from kmlm.run_directory import load_run
from kmlm.serving.tflite import META_FILE, TFLITE_FILE, TFLiteClassifier, TFLiteFillMask, load_tflite
from kmlm.tasks.finetune import Tasker
from kmlm.tasks.models import build_classifier
from tests.tiny_run import VOCABULARY, make_tiny_run, tiny_model

pytestmark = pytest.mark.slow

TEXTS = ["the cat [MASK] on a [MASK] .", "a big red dog [MASK]", "[MASK] cats ran", "the mat , the [MASK] ."]
TOP_K = 4
# Dynamic-range int8 (per-channel int8 weights, activations quantized per row) on the tiny
# model, whose weights are large (stddev 0.5) and so quantize coarsely: log-scores within this
# of the float model's, up to a per-row constant (their spread is above 3), top-1 scores within
# INT8_SCORE_ATOL.
INT8_LOGIT_ATOL = 0.5
INT8_SCORE_ATOL = 0.1


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    base = tmp_path_factory.mktemp("tflite")
    run_dir = make_tiny_run(str(base / "run"), seed=2)
    for quantize in ("int8", "none"):
        assert main(["export", run_dir, "--format", "tflite", "--quantize", quantize, "--top-k", str(TOP_K),
                     "--out", str(base / quantize)]) == 0
    return {"base": base, "run": load_run(run_dir), "int8": str(base / "int8"), "none": str(base / "none")}


def _id_features(run, texts):
    """Model inputs built here in NumPy: [CLS] pieces [SEP] padded to the longest, [MASK] slots."""
    fill_mask = FillMask(run.model, run.vocabulary)
    rows = [[fill_mask.ids.cls, *fill_mask._pieces(text), fill_mask.ids.sep] for text in texts]
    width = max(map(len, rows))
    masks = [[i for i, t in enumerate(row) if t == fill_mask.ids.mask] for row in rows]
    features = {"token_ids": np.zeros([len(rows), width], np.int32), "segment_ids": np.zeros([len(rows), width], np.int32),
                "document_ids": np.zeros([len(rows), width], np.int32),
                "mask_positions": np.zeros([len(rows), max(map(len, masks))], np.int32)}
    for r, (row, found) in enumerate(zip(rows, masks)):
        features["token_ids"][r, : len(row)] = row
        features["document_ids"][r, : len(row)] = 1
        features["mask_positions"][r, : len(found)] = found
    return features


def _reference_scores(run, features):
    """The float Keras model's softmax over the predictable tokens, in float64."""
    logits = run.model({k: tf.constant(v) for k, v in features.items()}, training=False).numpy().astype(np.float64)
    logits[..., never_predicted(run.vocabulary)] = -np.inf
    scores = np.exp(logits - logits.max(-1, keepdims=True))
    return logits, scores / scores.sum(-1, keepdims=True)


def test_the_directory_holds_the_model_vocabulary_and_settings(exports):
    assert sorted(os.listdir(exports["int8"])) == sorted([TFLITE_FILE, META_FILE, "vocab.txt"])
    meta = json.load(open(os.path.join(exports["int8"], META_FILE)))
    assert meta["kind"] == "fill_mask" and meta["quantize"] == "int8" and meta["top_k"] == TOP_K
    assert meta["seq_len"] == 32 and meta["lowercase"] is True
    assert open(os.path.join(exports["int8"], "vocab.txt")).read().split("\n")[: len(VOCABULARY)] == VOCABULARY
    # int8 weights: the file is clearly smaller than the float one
    sizes = {q: os.path.getsize(os.path.join(exports[q], TFLITE_FILE)) for q in ("int8", "none")}
    assert sizes["int8"] < 0.75 * sizes["none"], sizes


def test_float_tflite_equals_the_keras_model(exports):
    run = exports["run"]
    runner = load_tflite(exports["none"])
    assert isinstance(runner, TFLiteFillMask)
    features = _id_features(run, TEXTS)
    _, scores = _reference_scores(run, features)
    out = runner.run_ids(**features)
    best = np.argsort(-scores, axis=-1, kind="stable")[..., :TOP_K]
    np.testing.assert_array_equal(out["top_k_ids"], best)
    np.testing.assert_allclose(out["top_k_scores"], np.take_along_axis(scores, best, -1), rtol=1e-4, atol=1e-6)


def test_int8_agrees_with_the_float_model(exports):
    """Top-1 agreement and scores close to the float model's, on every [MASK] of many texts."""
    run = exports["run"]
    runner = load_tflite(exports["int8"])
    rng = np.random.default_rng(0)
    words = [w for w in VOCABULARY[7:] if not w.startswith("##")]
    texts = []
    for _ in range(64):
        sentence = list(rng.choice(words, size=int(rng.integers(4, 12))))
        sentence[int(rng.integers(len(sentence)))] = "[MASK]"
        texts.append(" ".join(sentence))
    features = _id_features(run, texts)
    logits, scores = _reference_scores(run, features)
    out = runner.run_ids(**features)
    float_top1 = scores[:, 0].argmax(-1)
    # int8 may swap near-ties; where the float model's best logit leads the second by more
    # than twice the int8 logit tolerance it must keep the float model's choice.
    top2 = np.sort(logits[:, 0], axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * INT8_LOGIT_ATOL
    assert clear.sum() >= 16, clear.sum()
    agreement = (out["top_k_ids"][:, 0, 0] == float_top1)[clear].mean()
    assert agreement >= 0.95, agreement
    assert (out["top_k_ids"][:, 0, 0] == float_top1).mean() >= 0.8
    # The int8 top-1 score sits within the tolerance of the float model's score for that token
    # (19 in 20 of them; none beyond twice the tolerance).
    chosen = np.take_along_axis(scores[:, 0], out["top_k_ids"][:, 0, :1], -1)[:, 0]
    error = np.abs(out["top_k_scores"][:, 0, 0] - chosen)
    assert np.quantile(error, 0.95) <= INT8_SCORE_ATOL and error.max() <= 2 * INT8_SCORE_ATOL, error
    # Log-scores of the int8 top-k: the float model's log p up to a per-row constant (the softmax's).
    predictable = ~never_predicted(run.vocabulary)
    assert np.ptp(logits[:, 0, predictable], axis=-1).mean() > 3  # a model with peaked predictions
    int8_log = np.log(out["top_k_scores"][:, 0])
    float_log = np.log(np.take_along_axis(scores[:, 0], out["top_k_ids"][:, 0], -1))
    shift = int8_log - float_log
    np.testing.assert_allclose(shift - shift.mean(1, keepdims=True), 0, atol=INT8_LOGIT_ATOL)


def test_the_text_runner_gives_fill_masks_results(exports):
    run = exports["run"]
    fill_mask = FillMask(run.model, run.vocabulary)
    runner = load_tflite(exports["none"])
    for batch in (TEXTS[:1], TEXTS):  # one text (Python tokenizer) and a batch (in one TF graph)
        for text, got in zip(batch, runner(batch)):
            expected = fill_mask(text, top_k=TOP_K)
            assert [m["position"] for m in got] == [m["position"] for m in expected]
            for g, e in zip(got, expected):
                assert [p["token"] for p in g["predictions"]] == [p["token"] for p in e["predictions"]]
                np.testing.assert_allclose([p["score"] for p in g["predictions"]],
                                           [p["score"] for p in e["predictions"]], rtol=1e-4, atol=1e-6)
    int8 = load_tflite(exports["int8"])
    assert [p["token"] for p in int8(TEXTS[:1], top_k=2)[0][0]["predictions"]] == \
        [p["token"] for p in fill_mask(TEXTS[0], top_k=2)[0]["predictions"]]
    with pytest.raises(ValueError, match=r"text is 43 tokens long, more than the seq_len=32 of this export"):
        runner([" ".join(["the cat"] * 20) + " [MASK]"])
    with pytest.raises(ValueError, match=r"top_k=5 must be in \[1, 4\] \(the top_k of this export\)"):
        runner(TEXTS[:1], top_k=5)


FRESH_PROCESS = """
import json, sys
import numpy as np
sys.modules["kmlm"] = None  # the file must run without kmlm, keras or the rest of TensorFlow
sys.modules["keras"] = None
from ai_edge_litert.interpreter import Interpreter
request = json.load(open(sys.argv[2]))
runner = Interpreter(model_path=sys.argv[1]).get_signature_runner("serving_default")
out = runner(**{k: np.array(v, np.int32) for k, v in request.items()})
print(json.dumps({k: v.tolist() for k, v in out.items()}))
print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None
                        and m.split(".")[0] in ("tensorflow", "keras", "kmlm"))))
"""


def test_a_fresh_process_runs_the_file_with_the_litert_interpreter_alone(exports, tmp_path):
    pytest.importorskip("ai_edge_litert")
    run = exports["run"]
    features = _id_features(run, TEXTS)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({k: v.tolist() for k, v in features.items()}))
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, os.path.join(exports["int8"], TFLITE_FILE),
                             str(request)], capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs, modules = (json.loads(line) for line in result.stdout.strip().splitlines()[-2:])
    assert modules == []
    here = load_tflite(exports["int8"]).run_ids(**features)
    np.testing.assert_array_equal(outputs["top_k_ids"], here["top_k_ids"])
    np.testing.assert_allclose(outputs["top_k_scores"], here["top_k_scores"], rtol=1e-5, atol=1e-7)


def _write_classifier(path, task, labels, seed=3):
    keras.utils.set_random_seed(seed)
    model = build_classifier(build_encoder(tiny_model().config), len(labels), dropout=0.1)
    os.makedirs(path)
    save_vocabulary(VOCABULARY, os.path.join(path, "vocab.txt"))
    with open(os.path.join(path, "task.json"), "w", encoding="utf-8") as f:
        json.dump({"task": task, "labels": labels, "seq_len": 32, "lowercase": True}, f)
    model.save(os.path.join(path, "model.keras"))
    return str(path)


@pytest.mark.parametrize("task, labels", [("classify", ["a", "b", "c"]), ("pair", ["same", "different"])])
def test_a_classifier_exports_with_int8_and_keeps_its_predictions(tmp_path, task, labels, capsys):
    model_dir = _write_classifier(tmp_path / "model", task, labels)
    out = str(tmp_path / "tflite")
    assert main(["export", model_dir, "--quantize", "int8", "--out", out]) == 0  # --format tflite implied
    assert "TF Serving cannot serve it" in capsys.readouterr().out
    texts = ["the cat sat on the mat", "a big red dog ran", "the dogs sat", "cats ran on a red mat ."] * 3
    pairs = texts[::-1] if task == "pair" else None
    expected = Tasker.load(model_dir).class_probabilities(texts, pairs)
    runner = load_tflite(out)
    assert isinstance(runner, TFLiteClassifier) and runner.labels == labels
    got = runner.class_probabilities(texts, pairs)
    np.testing.assert_allclose(got, expected, atol=0.05)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)
    confident = np.sort(expected, 1)[:, -1] - np.sort(expected, 1)[:, -2] > 0.1
    np.testing.assert_array_equal(got.argmax(1)[confident], expected.argmax(1)[confident])
    one = runner(texts[:1], pairs[:1] if pairs else None)[0]
    assert one["label"] == labels[one["label_id"]] and one["score"] == pytest.approx(max(one["scores"]))
    with pytest.raises(ValueError, match=f"this is a {task} model: it takes"):
        runner.class_probabilities(texts, None if pairs else texts)


def test_refusals_are_one_line(exports, tmp_path, capsys):
    run_dir = exports["run"].path
    cases = [
        (["--format", "huggingface", "--quantize", "int8"],
         "--quantize applies to --format tflite only: TF Serving and Hugging Face exports stay float32; use "
         "--format tflite --quantize int8 (or leave --quantize out)"),
        (["--format", "tf-serving", "--quantize", "none"],
         "--quantize applies to --format tflite only: TF Serving and Hugging Face exports stay float32; use "
         "--format tflite --quantize none (or leave --quantize out)"),
        (["--format", "tflite", "--version", "2"], "--version applies to --format tf-serving only; leave it out "
         "with --format tflite"),
        (["--format", "tflite", "--seq-len", "600"], "seq_len=600 is outside [3, 64]: the model's max_position is "
         "64; export with --seq-len <= 64"),
    ]
    for flags, message in cases:
        assert main(["export", run_dir, "--out", str(tmp_path / "out"), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].endswith(message), err
    with pytest.raises(SystemExit) as exited:
        main(["export", run_dir, "--out", str(tmp_path / "out"), "--quantize", "int4"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == ("kmlm export: error: argument --quantize: invalid choice: 'int4' "
                                               "(choose from 'int8', 'none'); see `kmlm export --help`")
    assert not (tmp_path / "out").exists()
    assert main(["export", run_dir, "--quantize", "int8", "--out", exports["none"]]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"kmlm export: error: --out {exports['none']!r} already exists and is not empty; choose a new directory")
    qa_dir = tmp_path / "qa"
    _write_classifier(qa_dir, "classify", ["x", "y"])
    record = json.load(open(qa_dir / "task.json"))
    (qa_dir / "task.json").write_text(json.dumps({**record, "task": "tag"}))
    assert main(["export", str(qa_dir), "--format", "tflite", "--out", str(tmp_path / "tag")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"kmlm export: error: --format tflite exports fill-mask runs and classify and pair models; {str(qa_dir)!r} "
        "is a tag model: export it with --format tf-serving")
    with pytest.raises(ValueError, match="is not a kmlm TF Lite export"):
        load_tflite(str(tmp_path))

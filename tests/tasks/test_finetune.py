"""Fine-tuning end to end on small learnable tasks: a tiny encoder is pretrained on the
tasks' own (unlabelled) text, then fine-tuned, predicted with, embedded and exported."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kmlm.run_directory import load_run
from kmlm.tasks.embed import load_sentence_embedder
from kmlm.tasks.finetune import FinetuneSettings, Tasker, cosine_rows, finetune
from tests.helpers import pretrain_tiny_run, run_cli, write_corpus
from tests.task_data import similarity_examples, tag_examples, topic_examples, write_jsonl

pytestmark = pytest.mark.slow
SERVE_EXPORT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "serving", "serve_export.py")
FAST = dict(seq_len=32, batch_size=16, learning_rate=1e-3)


_run = run_cli


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("tasks")
    files = {
        "classify_train": write_jsonl(base / "classify_train.jsonl", topic_examples(128, 1)),
        "classify_dev": write_jsonl(base / "classify_dev.jsonl", topic_examples(60, 2)),
        "tag_train": write_jsonl(base / "tag_train.jsonl", tag_examples(128, 3)),
        "tag_dev": write_jsonl(base / "tag_dev.jsonl", tag_examples(60, 4)),
        "pair_train": write_jsonl(base / "pair_train.jsonl", topic_examples(32, 5, pair=True)),
        "similarity_train": write_jsonl(base / "similarity_train.jsonl", similarity_examples(48, 6)),
        "similarity_dev": write_jsonl(base / "similarity_dev.jsonl", similarity_examples(24, 7)),
    }
    # Unlabelled in-domain text to pretrain on.
    documents = [row["text"] for row in topic_examples(300, 10)]
    documents += [" ".join(row["tokens"]) for row in tag_examples(300, 11)]
    corpus = base / "corpus.txt"
    write_corpus(corpus, documents)
    run = pretrain_tiny_run(corpus, base / "run", seq_len=32)
    return base, run, files


@pytest.fixture(scope="module")
def classifier(data):
    base, run, files = data
    out = str(base / "classifier")
    # 10 epochs: with 6, about half the seeds (of the data order and dropout) stay at chance
    result = finetune(run, out, FinetuneSettings(task="classify", train=files["classify_train"],
                                                 eval=files["classify_dev"], test=files["classify_dev"],
                                                 epochs=10, patience=10, **FAST), verbose=0)
    return out, result


def test_classifier_reaches_high_accuracy(classifier, data):
    out, result = classifier
    assert result["eval"]["accuracy"] >= 0.9, result
    assert result["test"] == result["eval"]  # the same file, scored again after training
    record = json.load(open(os.path.join(out, "task.json")))
    assert record["labels"] == ["files", "numbers"] and record["metrics"] == result
    header = open(os.path.join(out, "metrics.csv")).readline().strip().split(",")
    assert {"epoch", "loss", "accuracy", "eval_accuracy", "eval_macro_f1"} <= set(header)


def test_finetuning_trains_the_shared_encoder(classifier, data):
    _, run, _ = data
    out, _ = classifier
    pretrained = load_run(run).encoder.get_weights()
    tuned = Tasker.load(out).model.get_layer("encoder").get_weights()
    assert len(pretrained) == len(tuned)
    assert any(not np.allclose(a, b) for a, b in zip(pretrained, tuned))


def test_predict_command_matches_the_model(classifier, capsys):
    out, _ = classifier
    texts = ["the integer and the float sum", "open the file in this directory"]
    code, stdout, _ = _run(["predict", out, *texts, "--json"], capsys)
    assert code == 0
    shown = json.loads(stdout)
    probabilities = Tasker.load(out).class_probabilities(texts)
    assert [r["label"] for r in shown] == ["numbers", "files"]
    for row, expected in zip(shown, probabilities):
        assert row["scores"]["files"] == pytest.approx(float(expected[0]), abs=1e-6)


def test_tagger_finds_multi_piece_entities(data):
    base, run, files = data
    out = str(base / "tagger")
    result = finetune(run, out, FinetuneSettings(task="tag", train=files["tag_train"], eval=files["tag_dev"],
                                                 epochs=5, patience=5, **FAST), verbose=0)
    assert result["eval"]["f1"] >= 0.8, result
    tasker = Tasker.load(out)
    assert tasker.info.labels[0] == "O"
    tags = tasker.word_tags([["the", "carol", "jones", "lee", "is", "in", "new", "york"]])
    assert result["eval"]["entities"] > 0 and len(tags[0]) == 8


def test_similarity_regression_and_embedding(data, capsys):
    base, run, files = data
    out = str(base / "similarity")
    result = finetune(run, out, FinetuneSettings(task="similarity", train=files["similarity_train"],
                                                 eval=files["similarity_dev"], epochs=2, **FAST), verbose=0)
    assert -1 <= result["eval"]["spearman"] <= 1 and "pearson" in result["eval"]
    # The saved sentence encoder mean-pools real tokens only: padding to a longer batch
    # leaves a sentence's vector unchanged.
    tasker = Tasker.load(out)
    alone = tasker.embed(["open the file"])
    padded = tasker.embed(["open the file", "the integer " * 12], batch_size=2)
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)
    code, stdout, _ = _run(["predict", out, "open the file", "--pair", "read the path", "--json"], capsys)
    expected = cosine_rows(tasker.embed(["open the file"]), tasker.embed(["read the path"]))[0]
    assert code == 0 and json.loads(stdout)[0]["similarity"] == pytest.approx(float(expected), abs=1e-5)


def test_contrastive_pairs_and_random_init(data):
    base, run, files = data
    out = str(base / "contrastive")
    result = finetune(run, out, FinetuneSettings(task="similarity", train=files["similarity_train"],
                                                 eval=files["similarity_dev"], contrastive=True, random_init=True,
                                                 epochs=1, **FAST), verbose=0)
    assert 0 <= result["eval"]["retrieval_accuracy"] <= 1 and result["random_init"]
    # a randomly initialised encoder of the same shape, not the pretrained one
    pretrained = load_run(run).encoder.get_weights()
    tuned = Tasker.load(out).model.get_layer("encoder").get_weights()
    assert [w.shape for w in pretrained] == [w.shape for w in tuned]
    assert np.abs(pretrained[0] - tuned[0]).max() > 1e-2


def test_embed_command_and_nearest_sentences(data, tmp_path, capsys):
    _, run, _ = data
    lines = ["open the file in the directory", "the integer and the float", "read the path of the file"]
    source = tmp_path / "sentences.txt"
    source.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    vectors_path = str(tmp_path / "vectors.npy")
    code, stdout, _ = _run(["embed", run, "--input", str(source), "--out", vectors_path,
                            "--query", lines[1], "--top-n", "2", "--json"], capsys)
    assert code == 0
    vectors = np.load(vectors_path)
    expected = load_sentence_embedder(run).embed(lines)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    found = json.loads(stdout[stdout.index("["):])[0]["neighbours"]
    assert found[0]["line"] == lines[1] and found[0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert len(found) == 2


def test_exports_serve_labels_tags_and_vectors_in_a_fresh_process(data, tmp_path, capsys):
    base, run, files = data
    pair_out = str(base / "pair")
    finetune(run, pair_out, FinetuneSettings(task="pair", train=files["pair_train"], epochs=1, **FAST), verbose=0)
    # classify shares the label outputs with pair, which also feeds text_pair through the graph
    models = {"tag": str(base / "tagger"), "similarity": str(base / "similarity"), "pair": pair_out}
    texts = ["open the file in this directory", "the integer and the float sum of carol jones"]
    paths, requests = {}, {}
    for task, model_dir in models.items():
        code, _, err = _run(["export", model_dir, "--out", str(tmp_path / task)], capsys)
        assert code == 0, err
        paths[task] = str(tmp_path / task / "1")
        requests[task] = {"predict": {"text": texts, "text_pair": texts[::-1]} if task == "pair" else {"text": texts}}
    requests["similarity"]["similarity"] = {"text": texts, "text_pair": texts[::-1]}
    request_file = tmp_path / "requests.json"
    request_file.write_text(json.dumps({"exports": paths, "requests": requests}), encoding="utf-8")
    results_file = tmp_path / "results.npz"
    result = subprocess.run([sys.executable, SERVE_EXPORT, str(request_file), str(results_file)],
                            capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    served = dict(np.load(results_file, allow_pickle=False))

    pair = Tasker.load(models["pair"])
    probabilities = pair.class_probabilities(texts, texts[::-1])
    for loader in ("eager", "session"):
        np.testing.assert_allclose(served[f"pair/{loader}/predict/scores"], probabilities, atol=1e-5)
        assert served[f"pair/{loader}/predict/label"].tolist() == [pair.info.labels[i] for i in probabilities.argmax(1)]
    tagger = Tasker.load(models["tag"])
    expected_tags = tagger.word_tags([t.split() for t in texts])
    tags = served["tag/session/predict/tags"]
    counts = served["tag/session/predict/word_count"].tolist()
    assert counts == [len(t.split()) for t in texts]
    assert [row[:n].tolist() for row, n in zip(tags, counts)] == expected_tags
    assert all(tag == "" for row, n in zip(tags, counts) for tag in row[n:])
    similarity = Tasker.load(models["similarity"])
    np.testing.assert_allclose(served["similarity/eager/predict/embedding"], similarity.embed(texts), atol=1e-5)
    np.testing.assert_allclose(served["similarity/session/similarity/cosine"],
                               cosine_rows(similarity.embed(texts), similarity.embed(texts[::-1])), atol=1e-5)
    assert all(any(key.startswith(f"{task}/warmup/") for key in served) for task in models)


@pytest.mark.parametrize("argv, message", [
    (["finetune", "{run}", "--task", "classify", "--train", "{missing}", "--out", "{out}"],
     "kmlm finetune: error: examples file '{missing}' does not exist"),
    (["finetune", "{run}", "--task", "classify", "--train", "{tag_train}", "--out", "{out}"],
     "kmlm finetune: error: '{tag_train}' has no 'text' field (nor sentence, sentence1, question, premise, "
     "question1), which task 'classify' needs; its fields are: tags, tokens"),
    (["finetune", "{run}", "--task", "classify", "--train", "{classify_train}", "--seq-len", "4096",
      "--out", "{out}"],
     "kmlm finetune: error: seq_len=4096 exceeds the model's max_position=512; fine-tune with --seq-len <= 512"),
    (["finetune", "{run}", "--task", "tag", "--train", "{classify_train}", "--out", "{out}"],
     "kmlm finetune: error: '{classify_train}' has no 'tokens' field (nor words), which task 'tag' needs; "
     "its fields are: label, text"),
    (["predict", "{similarity}", "a text"],
     "kmlm predict: error: a similarity model needs a second text per TEXT; pass --pair TEXT ..."),
    (["predict", "{run}", "a text"],
     "kmlm predict: error: '{run}' is not a fine-tuned model directory (no task.json); pass the --out of "
     "`kmlm finetune`"),
    (["embed", "{run}", "--input", "{classify_train}"],
     "kmlm embed: error: nothing to do: pass --out vectors.npy and/or --query TEXT"),
])
def test_errors_are_one_line(data, tmp_path, capsys, argv, message):
    base, run, files = data
    values = {"run": run, "out": str(tmp_path / "out"), "missing": str(tmp_path / "missing.jsonl"),
              "similarity": str(base / "similarity"), **files}
    if "{similarity}" in argv and not os.path.isdir(values["similarity"]):
        pytest.skip("needs the similarity model of an earlier test")
    code, _, err = _run([a.format(**values) for a in argv], capsys)
    assert code == 2 and err.strip() == message.format(**values)
    assert not os.path.exists(values["out"])


def test_finetune_from_tfds_by_name(data, tmp_path):
    import tensorflow_datasets as tfds

    _, run, _ = data
    with tfds.testing.mock_data(num_examples=12):
        result = finetune(run, str(tmp_path / "imdb"), FinetuneSettings(
            task="classify", train="tfds:imdb_reviews:train", eval="tfds:imdb_reviews:test", epochs=1, **FAST),
            verbose=0)
    assert result["train_examples"] == 12 and result["eval"]["examples"] == 12
    assert Tasker.load(str(tmp_path / "imdb")).info.labels == ["neg", "pos"]

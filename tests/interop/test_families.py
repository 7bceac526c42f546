"""`kmlm convert` of DistilBERT, RoBERTa, ALBERT and ELECTRA checkpoints, checked against transformers.

Each family gets a small random-weight checkpoint built here with transformers (no download)
and tokenizer files trained here (a WordPiece vocab.txt, a byte-level BPE, a SentencePiece
model). The converted run must give PyTorch's hidden states and logits on a padded batch of
English and Chinese text, kmlm's in-graph tokenizer the Hugging Face fast tokenizer's ids on a
mixed text set, and `kmlm fill-mask` and `kmlm embed` must work on it.
"""

import json
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

from kmlm.cli.main import main
from kmlm.interop.huggingface import convert_checkpoint
from kmlm.pipelines import make_tokenizer, never_predicted, special_ids
from kmlm.run_directory import load_run

torch = pytest.importorskip("torch", reason="torch is needed to build Hugging Face checkpoints")
transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
CORPUS = [
    "The cat sat on the mat. The dog ran to the park, and the cat followed it.",
    "A quick brown fox jumps over the lazy dog! Does it? Yes: it jumps (twice).",
    "Hello world, hello there; the weather is fine today and tomorrow.",
    "天气很好，我们去公园散步。北京是中国的首都，上海很大。",
    "我们今天学习自然语言处理，机器学习很有意思！",
    "Café, naïve and résumé carry accents; numbers like 3.14 and 2026 do not.",
] * 20
# The mixed text set of the tokenizer checks: English, Chinese, punctuation, accents, digits.
TEXTS = [
    "The cat sat on the mat.",
    "天气很好，我们去公园。",
    "Hello, world! The dog ran (quickly)...",
    "北京 is big; 上海 too?",
    "Café naïve résumé",
    "3.14 + 2026 = ?!",
    "mixed中文and English，标点！",
]
ENGLISH_AND_CHINESE = ["The quick brown fox jumps over the lazy dog in the park today.", "我们去公园散步。"]


def _randomize(model):
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial biases and LayerNorm scales, so every tensor is checked
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model.eval()


def _wordpiece_files(path):
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train_from_iterator(CORPUS, vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer.save_model(str(path))
    settings = {"do_lower_case": True, "tokenizer_class": "BertTokenizer"}
    (path / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    return transformers.AutoTokenizer.from_pretrained(str(path))


def _distilbert(path):
    tokenizer = _wordpiece_files(path)
    config = transformers.DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                                           max_position_embeddings=64, activation="gelu")
    model = _randomize(transformers.DistilBertForMaskedLM(config))
    model.save_pretrained(path)
    return model, model.distilbert, tokenizer


def _roberta(path):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(path))  # vocab.json, merges.txt
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}), encoding="utf-8")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    config = transformers.RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=48, max_position_embeddings=66,
                                        type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    model = _randomize(transformers.RobertaForMaskedLM(config))
    model.save_pretrained(path)
    return model, model.roberta, tokenizer


def _albert(path):
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece trains the ALBERT tokenizer of the test")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_prefix=str(path / "spiece"), vocab_size=120, hard_vocab_limit=False,
        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        character_coverage=1.0, minloglevel=2)
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "AlbertTokenizer"}), encoding="utf-8")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    # E=16 < H=32: the factorized embedding and its projection; 3 layers share one block.
    config = transformers.AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=32,
                                       num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                                       max_position_embeddings=64, hidden_act="gelu_new")
    model = _randomize(transformers.AlbertForMaskedLM(config))
    model.save_pretrained(path)
    return model, model.albert, tokenizer


def _electra_config(tokenizer, embedding_size):
    return transformers.ElectraConfig(vocab_size=len(tokenizer), embedding_size=embedding_size, hidden_size=32,
                                      num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                                      max_position_embeddings=64)


def _electra(path):
    """The generator (MLM head), with the embedding projection E=16 -> H=32."""
    tokenizer = _wordpiece_files(path)
    model = _randomize(transformers.ElectraForMaskedLM(_electra_config(tokenizer, 16)))
    model.save_pretrained(path)
    return model, model.electra, tokenizer


FAMILIES = {"distilbert": _distilbert, "roberta": _roberta, "albert": _albert, "electra": _electra}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def converted(request, tmp_path_factory):
    """(family, HF model, HF base model, HF tokenizer, the converted run)."""
    root = tmp_path_factory.mktemp(request.param)
    (root / "hf").mkdir()
    model, base, tokenizer = FAMILIES[request.param](root / "hf")
    result = convert_checkpoint(str(root / "hf"), str(root / "run"), seq_len=32, verbose=0)
    assert result["heads"]["masked_lm"] and result["ignored"] == []
    return request.param, model, base, tokenizer, load_run(str(root / "run"))


def _batch(tokenizer, texts):
    encoded = tokenizer(texts, padding=True, return_tensors="np")
    return encoded["input_ids"].astype(np.int32), encoded["attention_mask"].astype(np.int32)


def _kmlm_features(ids, mask):
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "document_ids": mask}


def test_hidden_states_and_logits_match_pytorch(converted):
    family, model, base, tokenizer, run = converted
    ids, mask = _batch(tokenizer, ENGLISH_AND_CHINESE)
    assert mask.min() == 0  # a padded batch
    with torch.no_grad():
        inputs = dict(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
        expected = base(**inputs).last_hidden_state.numpy()
        logits = model(**inputs).logits.numpy()
    hidden = np.asarray(run.encoder(_kmlm_features(ids, mask), training=False))
    real = mask.astype(bool)
    for row, text in enumerate(ENGLISH_AND_CHINESE):
        difference = np.abs(hidden[row] - expected[row])[real[row]].max()
        assert difference < TOLERANCE, (family, text, difference)
    positions = np.array([[1, 3], [2, 4]], np.int32)
    ours = np.asarray(run.model({**_kmlm_features(ids, mask), "mask_positions": positions}, training=False))
    np.testing.assert_allclose(ours, np.take_along_axis(logits, positions[:, :, None], axis=1), atol=10 * TOLERANCE)


def _nfkc(text):
    return unicodedata.normalize("NFKC", text)


# Where kmlm's tokenizer differs from the fast tokenizer, the text that makes them agree:
# lowercasing WordPiece case-folds with NFKC in the graph (TF Text), so full-width "，" is ","
# for kmlm and a piece of its own for transformers.
KNOWN_DIFFERENCES = {"distilbert": _nfkc, "electra": _nfkc}


def test_tokenizer_gives_the_fast_tokenizer_ids(converted):
    family, _, _, tokenizer, run = converted
    ours = make_tokenizer(run.vocabulary, lowercase=run.config.data.lowercase)
    ids = special_ids(run.vocabulary)
    differing = []
    rows = ours.tokenize(tf.constant(TEXTS))  # one batch: ragged in the graph, lists on keras-hub's Python path
    for text, row in zip(TEXTS, rows.to_list() if hasattr(rows, "to_list") else rows):
        pieces = [ids.cls] + [int(i) for i in row] + [ids.sep]
        if pieces != tokenizer(text)["input_ids"]:
            differing.append(text)
            assert family in KNOWN_DIFFERENCES, (family, text)
            assert pieces == tokenizer(KNOWN_DIFFERENCES[family](text))["input_ids"], (family, text)
    assert len(differing) < len(TEXTS) / 2, (family, differing)


@pytest.mark.slow
def test_fill_mask_and_embed_work_on_the_run(converted, capsys):
    family, model, base, tokenizer, run = converted
    text = "the cat sat on the [MASK]."
    assert main(["fill-mask", run.path, text, "--top-k", "3", "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    hf_text = text.replace("[MASK]", tokenizer.mask_token)
    encoded = tokenizer(hf_text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded).logits[0].numpy()
    position = encoded["input_ids"][0].tolist().index(tokenizer.mask_token_id)
    logits[position, never_predicted(run.vocabulary)] = -np.inf
    expected = np.argsort(-logits[position], kind="stable")[:3].tolist()
    found = predictions[0] if isinstance(predictions, list) else predictions
    assert [p["id"] for p in _first_mask(found)["predictions"]] == expected

    # What `kmlm embed RUN_DIR` runs, on the run already loaded (the command's own test is BERT's).
    from kmlm.tasks.finetune import TaskInfo, Tasker
    from kmlm.tasks.models import build_sentence_encoder

    ids, mask = _batch(tokenizer, ENGLISH_AND_CHINESE)
    sentence_encoder = build_sentence_encoder(run.encoder, pooling="mean")
    if run.config.tokenizer is None:  # WordPiece in tf.data is BERT's, tested there; the pooling only here
        embeddings = np.asarray(sentence_encoder(_kmlm_features(ids, mask), training=False))
    else:  # the new tokenizer inside the tf.data pipeline of `kmlm embed`
        info = TaskInfo(task="similarity", labels=[], seq_len=64, lowercase=run.config.data.lowercase, pooling="mean")
        embeddings = Tasker(sentence_encoder, run.vocabulary, info).embed(ENGLISH_AND_CHINESE)
    with torch.no_grad():
        hidden = base(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
    hidden = hidden.last_hidden_state.numpy()
    mean = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    cosine = (embeddings * mean).sum(1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(mean, axis=1)
    assert cosine.min() > 0.9999, (family, cosine)


def _first_mask(found):
    """The first mask's result in `kmlm fill-mask --json` output."""
    if "predictions" in found:
        return found
    return found["masks"][0]


def test_run_directory_records_the_tokenizer(converted):
    family, _, _, tokenizer, run = converted
    with open(f"{run.path}/config.json", encoding="utf-8") as f:
        settings = json.load(f)
    kinds = {"distilbert": None, "electra": None, "roberta": "byte_bpe", "albert": "sentencepiece"}
    assert (settings.get("tokenizer") or {}).get("kind") == kinds[family]
    assert settings["converted_from"]["model_type"] == family
    if kinds[family] is None:
        return
    # The checkpoint's own special tokens are kept; vocab.txt holds them under kmlm's names.
    originals = settings["tokenizer"]["special_tokens"]
    assert {name: tokenizer.convert_tokens_to_ids(original) for name, original in originals.items()} == {
        name: run.vocabulary.index(name) for name in originals}
    # Exporting RoBERTa, ALBERT and ELECTRA runs back to their families: tests/interop/test_export_families.py.


def test_a_foreign_vocabulary_without_its_tokenizer_files_is_refused():
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"\u0120w{i}" for i in range(20)]
    with pytest.raises(ValueError, match="belongs to a byte-level BPE tokenizer"):
        make_tokenizer(vocabulary)


def _hf_directory(path, **config):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return str(path)


ALBERT = {"model_type": "albert", "vocab_size": 10, "embedding_size": 4, "hidden_size": 8, "num_hidden_layers": 2,
          "num_attention_heads": 2, "intermediate_size": 16}


@pytest.mark.parametrize("config, message", [
    ({"model_type": "xlm-roberta", "architectures": ["XLMRobertaForMaskedLM"]},
     "unsupported architecture: model_type='xlm-roberta' (XLMRobertaForMaskedLM); kmlm converts bert, "
     "roberta-prelayernorm, distilbert, roberta, albert, electra checkpoints only"),
    ({**ALBERT, "num_hidden_groups": 2}, "unsupported albert config: num_hidden_groups=2"),
    ({"model_type": "distilbert", "vocab_size": 10, "dim": 8, "n_layers": 1, "n_heads": 2, "hidden_dim": 16,
      "sinusoidal_pos_embds": True}, "unsupported distilbert config: sinusoidal_pos_embds=True"),
    ({**ALBERT}, "has no spiece.model; kmlm needs the SentencePiece model of an ALBERT checkpoint"),
    ({"model_type": "roberta", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
      "intermediate_size": 16, "pad_token_id": 1}, "has neither vocab.json + merges.txt nor tokenizer.json"),
])
def test_unsupported_families_and_settings_are_refused_in_one_line(tmp_path, capsys, config, message):
    hf_dir = _hf_directory(tmp_path / "hf", **config)
    assert main(["convert", hf_dir, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kmlm convert: error:") and message in err and "\n" not in err, err


def test_a_converted_distilbert_exports_as_bert_with_the_same_logits(converted, tmp_path):
    family, model, _, tokenizer, run = converted
    if family != "distilbert":
        pytest.skip("the other families export in their own layout (tests/interop/test_export_families.py)")
    from kmlm.interop.huggingface_export import export_huggingface

    export_huggingface(run.path, str(tmp_path / "hf"), verbose=0)
    exported = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert type(exported).__name__ == "BertForMaskedLM"
    encoded = tokenizer(ENGLISH_AND_CHINESE, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**encoded).logits.numpy()
        actual = exported(**encoded).logits.numpy()
    real = encoded["attention_mask"].numpy().astype(bool)
    assert np.abs(actual - expected)[real].max() < 10 * TOLERANCE


def test_an_electra_discriminator_converts_its_encoder_and_names_its_head_ignored(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    tokenizer = _wordpiece_files(hf)
    model = _randomize(transformers.ElectraForPreTraining(_electra_config(tokenizer, 32)))  # E = H: no projection
    model.save_pretrained(hf)
    result = convert_checkpoint(str(hf), str(tmp_path / "run"), seq_len=32, verbose=0)
    assert not result["heads"]["masked_lm"]
    assert result["ignored"] == sorted(f"discriminator_predictions.{name}.{kind}" for name in ("dense", "dense_prediction")
                                       for kind in ("bias", "weight"))
    run = load_run(str(tmp_path / "run"))
    assert run.model_config.embedding_dim is None and run.encoder.embedding.projection_kernel is None
    ids, mask = _batch(tokenizer, ENGLISH_AND_CHINESE)
    with torch.no_grad():
        expected = model.electra(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
    hidden = np.asarray(run.encoder(_kmlm_features(ids, mask), training=False))
    real = mask.astype(bool)
    assert np.abs(hidden - expected.last_hidden_state.numpy())[real].max() < TOLERANCE

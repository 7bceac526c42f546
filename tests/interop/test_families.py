"""`kmlm convert` of DistilBERT, RoBERTa and ALBERT checkpoints, checked against transformers.

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
                                           max_position_embeddings=40, activation="gelu")
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
                                        num_attention_heads=4, intermediate_size=48, max_position_embeddings=42,
                                        type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    model = _randomize(transformers.RobertaForMaskedLM(config))
    model.save_pretrained(path)
    return model, model.roberta, tokenizer


FAMILIES = {"distilbert": _distilbert, "roberta": _roberta}


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
KNOWN_DIFFERENCES = {"distilbert": _nfkc}


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


def test_fill_mask_and_embed_work_on_the_run(converted, tmp_path, capsys):
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

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(ENGLISH_AND_CHINESE) + "\n", encoding="utf-8")
    vectors = str(tmp_path / "vectors.npy")
    assert main(["embed", run.path, "--input", str(sentences), "--out", vectors, "--pooling", "mean",
                 "--seq-len", "32"]) == 0
    capsys.readouterr()
    ids, mask = _batch(tokenizer, ENGLISH_AND_CHINESE)
    with torch.no_grad():
        hidden = base(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
    hidden = hidden.last_hidden_state.numpy()
    mean = (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    embeddings = np.load(vectors, allow_pickle=False)
    cosine = (embeddings * mean).sum(1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(mean, axis=1)
    assert cosine.min() > 0.9999, (family, cosine)


def _first_mask(found):
    """The first mask's result in `kmlm fill-mask --json` output."""
    if "predictions" in found:
        return found
    return found["masks"][0]

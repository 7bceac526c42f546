"""`kmlm export --format huggingface` of runs converted from RoBERTa, ALBERT and ELECTRA.

Each family's tiny random-weight checkpoint (built by `tests/interop/test_families.py`, no
download) is converted, exported, and loaded back by transformers: the export must be the
family's own class with every weight in place, give kmlm's logits and ids, and convert back to
the same run.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from kmlm.cli.main import main
from kmlm.interop.huggingface import convert_checkpoint
from kmlm.interop.huggingface_export import export_huggingface
from kmlm.pipelines import make_tokenizer, special_ids
from kmlm.run_directory import TOKENIZER_FILES, load_run
from tests.interop.test_families import ENGLISH_AND_CHINESE, FAMILIES, KNOWN_DIFFERENCES, TEXTS

torch = pytest.importorskip("torch", reason="torch runs the exported model")
transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
CLASSES = {"roberta": "RobertaForMaskedLM", "albert": "AlbertForMaskedLM", "electra": "ElectraForMaskedLM"}
TOKENIZER_FILES_WRITTEN = {"roberta": ["merges.txt", "vocab.json"], "albert": ["spiece.model"],
                           "electra": ["vocab.txt"]}


@dataclasses.dataclass
class Exported:
    family: str
    original_tokenizer: object
    run: object
    path: str
    model: object
    loading_info: dict


@pytest.fixture(scope="module", params=sorted(CLASSES))
def exported(request, tmp_path_factory):
    """A converted run of each family, exported and loaded by transformers' Auto classes."""
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    (root / "hf").mkdir()
    _, _, tokenizer = FAMILIES[request.param](root / "hf")
    convert_checkpoint(str(root / "hf"), str(root / "run"), seq_len=32, verbose=0)
    result = export_huggingface(str(root / "run"), str(root / "out"), verbose=0)
    assert result.architecture == CLASSES[request.param] and result.left_out == []
    model, info = transformers.AutoModelForMaskedLM.from_pretrained(str(root / "out"), output_loading_info=True)
    return Exported(request.param, tokenizer, load_run(str(root / "run")), str(root / "out"), model.eval(), info)


def test_the_export_is_the_original_family_with_every_weight_in_place(exported):
    assert type(exported.model).__name__ == CLASSES[exported.family]
    assert {key: list(value) for key, value in exported.loading_info.items()} == {
        "missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    expected = ["config.json", "model.safetensors", "tokenizer_config.json", *TOKENIZER_FILES_WRITTEN[exported.family]]
    assert sorted(os.listdir(exported.path)) == sorted(expected)  # safetensors only: no pickled .bin
    with open(os.path.join(exported.path, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["model_type"] == exported.family


def _kmlm_logits(run, ids, mask):
    positions = np.tile(np.arange(ids.shape[1], dtype=np.int32), (len(ids), 1))
    features = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "document_ids": mask,
                "mask_positions": positions}
    return np.asarray(run.model(features, training=False))


def test_exported_logits_equal_kmlm_on_a_padded_batch(exported):
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported.path)
    batch = tokenizer(ENGLISH_AND_CHINESE + TEXTS[:3], padding=True, return_tensors="pt")
    mask = batch["attention_mask"].numpy().astype(np.int32)
    assert mask.min() == 0  # padded rows: RoBERTa numbers positions around the padding
    with torch.no_grad():
        expected = exported.model(**batch).logits.numpy()
    logits = _kmlm_logits(exported.run, batch["input_ids"].numpy().astype(np.int32), mask)
    difference = np.abs(logits - expected)[mask.astype(bool)].max()
    assert difference < TOLERANCE, (exported.family, difference)
    assert np.abs(expected).max() > 1.0  # not a comparison of near-zero numbers


def test_exported_tokenizer_gives_the_ids_of_kmlm_and_of_the_checkpoint(exported):
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported.path)
    run = exported.run
    ids = special_ids(run.vocabulary)
    assert (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id) == (
        ids.cls, ids.sep, ids.pad, ids.mask)
    texts = TEXTS + ENGLISH_AND_CHINESE
    kmlm_tokenizer = make_tokenizer(run.vocabulary, lowercase=run.config.data.lowercase)
    rows = kmlm_tokenizer.tokenize(tf.constant(texts))
    differing = []
    for text, row in zip(texts, rows.to_list() if hasattr(rows, "to_list") else rows):
        assert tokenizer(text)["input_ids"] == exported.original_tokenizer(text)["input_ids"], text
        pieces = [ids.cls] + [int(i) for i in row] + [ids.sep]
        if pieces != tokenizer(text)["input_ids"]:
            # Only the WordPiece case folding known from the import (full-width punctuation).
            differing.append(text)
            assert pieces == tokenizer(KNOWN_DIFFERENCES[exported.family](text))["input_ids"], text
    assert len(differing) < len(texts) / 2, differing


def test_convert_of_the_export_gives_back_the_same_run(exported, tmp_path):
    run = exported.run
    convert_checkpoint(exported.path, str(tmp_path / "back"), seq_len=32, verbose=0)
    back = load_run(str(tmp_path / "back"))
    assert back.model_config == run.model_config
    assert back.vocabulary == run.vocabulary and back.config.data.lowercase == run.config.data.lowercase
    assert back.config.tokenizer == run.config.tokenizer
    assert back.config.converted_from["ignored_tensors"] == []
    assert [w.path for w in back.model.weights] == [w.path for w in run.model.weights]
    for original, returned in zip(run.model.weights, back.model.weights):
        np.testing.assert_array_equal(returned.numpy(), original.numpy(), err_msg=original.path)
    if run.config.tokenizer is not None:
        name = TOKENIZER_FILES[run.config.tokenizer.kind]
        with open(os.path.join(run.path, name), "rb") as a, open(os.path.join(back.path, name), "rb") as b:
            assert a.read() == b.read()


REFUSALS = {"roberta": "its byte_bpe tokenizer has no place in the bert layout",
            "albert": "embedding_dim=16, share_layers=True (a factorized embedding or shared layers",
            "electra": "embedding_dim=16, share_layers=False (a factorized embedding or shared layers"}


def test_without_its_family_a_run_no_bert_layout_holds_is_refused_in_one_line(exported, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    shutil.copytree(exported.run.path, run_dir)
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        settings = json.load(f)
    del settings["converted_from"]  # as if pretrained by kmlm: written in the bert layout
    with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(settings, f)
    assert main(["export", run_dir, "--format", "huggingface", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert REFUSALS[exported.family] in err and "\n" not in err, err
    assert not os.path.exists(tmp_path / "out")


def test_an_electra_discriminator_exports_its_encoder_as_electra_model(exported, tmp_path):
    if exported.family != "electra":
        pytest.skip("the discriminator is ELECTRA's")
    hf = tmp_path / "hf"
    hf.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(exported.path, name), hf / name)
    config = transformers.ElectraConfig.from_pretrained(exported.path)
    torch.manual_seed(1)
    discriminator = transformers.ElectraForPreTraining(config).eval()
    with torch.no_grad():
        for parameter in discriminator.parameters():
            parameter.normal_(0.0, 0.3)
    discriminator.save_pretrained(hf)
    convert_checkpoint(str(hf), str(tmp_path / "run"), seq_len=32, verbose=0)
    result = export_huggingface(str(tmp_path / "run"), str(tmp_path / "out"), verbose=0)
    model, info = transformers.AutoModel.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert result.architecture == type(model).__name__ == "ElectraModel"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    batch = tokenizer(ENGLISH_AND_CHINESE, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = discriminator.electra(**batch).last_hidden_state.numpy()
        exported_hidden = model.eval()(**batch).last_hidden_state.numpy()
    real = batch["attention_mask"].numpy().astype(bool)
    assert np.abs(exported_hidden - expected)[real].max() < TOLERANCE


def test_an_albert_with_its_sop_head_and_e_equal_to_h_exports_as_albert_for_pretraining(exported, tmp_path):
    if exported.family != "albert":
        pytest.skip("the SOP head and the always-present projection are ALBERT's")
    hf = tmp_path / "hf"
    hf.mkdir()
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(exported.path, name), hf / name)
    config = transformers.AlbertConfig.from_pretrained(exported.path, embedding_size=32)  # E = H: no kmlm projection
    torch.manual_seed(2)
    original = transformers.AlbertForPreTraining(config).eval()
    with torch.no_grad():
        for parameter in original.parameters():
            parameter.normal_(0.0, 0.3)
        projection = original.albert.encoder.embedding_hidden_mapping_in
        projection.weight.copy_(torch.eye(32))  # what a kmlm run without a projection computes
        projection.bias.zero_()
    original.save_pretrained(hf)
    convert_checkpoint(str(hf), str(tmp_path / "run"), seq_len=32, verbose=0)
    result = export_huggingface(str(tmp_path / "run"), str(tmp_path / "out"), verbose=0)
    model, info = transformers.AutoModelForPreTraining.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert result.architecture == type(model).__name__ == "AlbertForPreTraining"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    batch = transformers.AutoTokenizer.from_pretrained(str(hf))(ENGLISH_AND_CHINESE, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected, actual = original(**batch), model.eval()(**batch)
    real = batch["attention_mask"].numpy().astype(bool)
    assert np.abs(actual.prediction_logits.numpy() - expected.prediction_logits.numpy())[real].max() < TOLERANCE
    np.testing.assert_allclose(actual.sop_logits.numpy(), expected.sop_logits.numpy(), atol=TOLERANCE)

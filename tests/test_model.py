import keras
import numpy as np
import pytest

import kmlm
from kmlm import ModelConfig, build_encoder, build_mlm_model
from tests.helpers import assert_save_load_identical

TINY = dict(vocabulary_size=64, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32, max_position=32)


def _inputs(batch=2, seq_len=12, predictions=4, seed=0):
    rng = np.random.default_rng(seed)
    document_ids = np.ones((batch, seq_len), "int32")
    document_ids[0, 5:] = 2
    document_ids[1, 9:] = 0
    return {
        "token_ids": rng.integers(5, 64, (batch, seq_len)).astype("int32"),
        "segment_ids": np.zeros((batch, seq_len), "int32"),
        "document_ids": document_ids,
        "mask_positions": np.sort(rng.integers(0, 9, (batch, predictions)), 1).astype("int32"),
    }


def test_presets_follow_bert_miniatures():
    shapes = {name: (c.num_layers, c.hidden_dim, c.num_heads, c.intermediate_dim)
              for name in kmlm.PRESETS for c in [ModelConfig.from_preset(name)]}
    assert shapes == {
        "tiny": (2, 128, 2, 512), "mini": (4, 256, 4, 1024), "small": (4, 512, 8, 2048),
        "medium": (8, 512, 8, 2048), "base": (12, 768, 12, 3072), "large": (24, 1024, 16, 4096),
    }


def test_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; choose one of tiny, mini, small, medium, base, large"):
        ModelConfig.from_preset("huge")
    with pytest.raises(ValueError, match=r"hidden_dim=100 is not divisible by num_heads=3; choose a hidden size"):
        ModelConfig(hidden_dim=100, num_heads=3)
    with pytest.raises(ValueError, match=r"unknown model settings \['depth'\]"):
        ModelConfig.from_dict({"depth": 3})


def test_inputs_outputs_and_dtypes():
    model = build_mlm_model(ModelConfig(**TINY), 4)
    assert sorted(model.input) == ["document_ids", "mask_positions", "segment_ids", "token_ids"]
    logits = model(_inputs())
    assert logits.shape == (2, 4, 64) and keras.backend.standardize_dtype(logits.dtype) == "float32"
    encoder = build_encoder(ModelConfig(**TINY))
    x = _inputs()
    del x["mask_positions"]
    assert encoder(x).shape == (2, 12, 16)


def test_head_is_tied_to_the_input_embedding():
    model = build_mlm_model(ModelConfig(**TINY))
    names = [w.path for w in model.weights]
    assert sum("token_embeddings" in n for n in names) == 1
    assert not any("output_kernel" in n and "mlm_head" in n for n in names)


def test_packed_documents_are_independent():
    model = build_mlm_model(ModelConfig(**TINY, dropout=0.0, attention_dropout=0.0))
    encoder = model.encoder
    x = _inputs()
    del x["mask_positions"]
    changed = {k: v.copy() for k, v in x.items()}
    changed["token_ids"][0, 5:] = 7  # rewrite document 2 of row 0
    before, after = np.asarray(encoder(x)), np.asarray(encoder(changed))
    np.testing.assert_allclose(before[0, :5], after[0, :5], atol=1e-5)
    np.testing.assert_allclose(before[1], after[1], atol=1e-6)


def test_save_load_keras_identical_outputs(tmp_path):
    model = build_mlm_model(ModelConfig(**TINY, norm_first=True, gated_ffn=True))
    loaded = assert_save_load_identical(model, _inputs(), tmp_path)
    assert isinstance(loaded, kmlm.MaskedLMModel)
    assert loaded.config == model.config
    # The tie survives loading.
    assert loaded.get_layer("mlm_head").token_embedding is loaded.encoder.embedding


def test_mixed_precision_keeps_logits_float32():
    previous = keras.config.dtype_policy()
    try:
        kmlm.set_precision("mixed_float16")
        model = build_mlm_model(ModelConfig(**TINY))
    finally:
        keras.config.set_dtype_policy(previous)
    logits = model(_inputs())
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    block = model.encoder.get_layer("block_0")
    assert block.compute_dtype == "float16" and block.attention_norm.compute_dtype == "float32"
    with pytest.raises(ValueError, match=r"unknown precision 'fp8'"):
        kmlm.set_precision("fp8")

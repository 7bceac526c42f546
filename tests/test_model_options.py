"""Encoder options of converted families: a factorized embedding (`embedding_dim`) and one
block shared by every layer (`share_layers`); the defaults leave the model as it was."""

import numpy as np

from kmlm.config import ModelConfig
from kmlm.model import build_mlm_model
from kmlm.run_directory import load_model_safely

OPTIONS = dict(vocabulary_size=40, hidden_dim=16, num_layers=3, num_heads=2, intermediate_dim=24, max_position=16,
               dropout=0.0, attention_dropout=0.0)


def _features():
    ids = np.array([[2, 7, 9, 3, 0], [2, 5, 3, 0, 0]], np.int32)
    mask = (ids != 0).astype(np.int32)
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "document_ids": mask,
            "mask_positions": np.array([[1], [1]], np.int32)}


def test_defaults_leave_config_and_weights_as_before():
    config = ModelConfig(**OPTIONS)
    assert "embedding_dim" not in config.to_dict() and "share_layers" not in config.to_dict()
    names = {w.path for w in build_mlm_model(config).weights}
    assert not any("projection" in name for name in names)
    assert sum(name.startswith("block_") and name.endswith("qkv_kernel") for name in names) == 3


def test_shared_factorized_encoder_runs_one_block_and_round_trips(tmp_path):
    config = ModelConfig(**OPTIONS, embedding_dim=8, share_layers=True)
    assert ModelConfig.from_dict(config.to_dict()) == config
    model = build_mlm_model(config)
    encoder = model.encoder
    assert len(encoder.blocks) == 1 and encoder.block(2) is encoder.blocks[0]
    assert tuple(encoder.embedding.token_embeddings.shape) == (40, 8)
    features = _features()

    # The same block applied three times, computed layer by layer.
    inputs = {name: features[name] for name in ("token_ids", "segment_ids", "document_ids")}
    x = encoder.embedding(inputs["token_ids"], inputs["segment_ids"], training=False)
    for _ in range(3):
        x = encoder.blocks[0](x, inputs["document_ids"], training=False)
    np.testing.assert_allclose(np.asarray(encoder(inputs, training=False)), np.asarray(x), atol=1e-6)
    sequence, attention = encoder.encode_with_attention(inputs)
    assert len(attention) == 3
    np.testing.assert_allclose(np.asarray(sequence), np.asarray(x), atol=1e-6)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = load_model_safely(path)
    assert loaded.encoder.config == config and len(loaded.encoder.blocks) == 1
    np.testing.assert_array_equal(np.asarray(loaded(features, training=False)), np.asarray(model(features, training=False)))
    assert loaded.count_params() == model.count_params()

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


def _packed_and_alone(config):
    """One packed row holding two documents, and each document alone in its own row."""
    model = build_mlm_model(config)
    first, second = [2, 7, 9, 11, 3], [2, 5, 8, 3]
    packed = np.array([first + second + [0, 0, 0]], np.int32)
    documents = np.array([[1] * 5 + [2] * 4 + [0] * 3], np.int32)
    outputs = model.encoder({"token_ids": packed, "segment_ids": np.zeros_like(packed), "document_ids": documents},
                            training=False)
    alone = []
    for tokens in (first, second):
        ids = np.array([tokens], np.int32)
        alone.append(model.encoder({"token_ids": ids, "segment_ids": np.zeros_like(ids),
                                    "document_ids": np.ones_like(ids)}, training=False))
    return np.asarray(outputs)[0], [np.asarray(a)[0] for a in alone]


def test_with_document_positions_a_packed_document_reads_as_if_it_were_alone():
    config = ModelConfig(**OPTIONS, norm_first=True, document_positions=True)
    assert ModelConfig.from_dict(config.to_dict()) == config and config.to_dict()["document_positions"] is True
    packed, (first, second) = _packed_and_alone(config)
    np.testing.assert_allclose(packed[:5], first, atol=1e-5)
    np.testing.assert_allclose(packed[5:9], second, atol=1e-5)


def test_with_row_positions_the_second_packed_document_reads_otherwise():
    config = ModelConfig(**OPTIONS, norm_first=True)
    assert "document_positions" not in config.to_dict()  # config.json of earlier runs reads as before
    packed, (first, second) = _packed_and_alone(config)
    np.testing.assert_allclose(packed[:5], first, atol=1e-5)  # it starts the row: the same positions
    assert np.abs(packed[5:9] - second).max() > 1e-3


def test_document_positions_count_from_each_document_start():
    from kmlm.layers.input_embedding import document_positions

    ids = np.array([[1, 1, 2, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]], np.int32)
    expected = []
    for row in ids:  # independent count: restart at every change of id
        positions, count = [], 0
        for i, value in enumerate(row):
            count = 0 if i == 0 or value != row[i - 1] else count + 1
            positions.append(count)
        expected.append(positions)
    assert np.asarray(document_positions(ids)).tolist() == expected

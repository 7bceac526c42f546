"""A tiny randomly initialised run directory for tests that only need a model to call."""

import os

import keras

from kmlm.config import ModelConfig
from kmlm.model import build_mlm_model
from kmlm.pipelines import SPECIAL_TOKENS, save_vocabulary
from kmlm.run_directory import MODEL_FILE, VOCAB_FILE, DataRecord, RunConfig

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "ran", "big", "red", "##s", "##ed", ".", ","]
VOCABULARY = list(SPECIAL_TOKENS) + ["[unused0]", "[unused1]"] + WORDS


def tiny_model(seed=0, vocabulary=VOCABULARY):
    """A 2-layer, hidden-32 `MaskedLMModel` with seeded random weights (dropout off)."""
    keras.utils.set_random_seed(seed)
    config = ModelConfig(vocabulary_size=len(vocabulary), hidden_dim=32, num_layers=2, num_heads=4,
                         intermediate_dim=64, max_position=64, dropout=0.0, attention_dropout=0.0,
                         initializer_range=0.5)
    return build_mlm_model(config)


def make_tiny_run(path, seed=0, vocabulary=VOCABULARY):
    """Writes a run directory (config.json, vocab.txt, model.keras) holding `tiny_model`."""
    model = tiny_model(seed, vocabulary)
    os.makedirs(path, exist_ok=True)
    save_vocabulary(vocabulary, os.path.join(path, VOCAB_FILE))
    RunConfig(model=model.config, data=DataRecord(lowercase=True, seq_len=32)).write(path)
    model.save(os.path.join(path, MODEL_FILE))
    return str(path)

"""Task heads: the classifier's pooler is `kmlm.layers.Pooler` (and gives what the Dense pooler
of earlier task models gave), inputs are the encoder's named inputs."""

import os

import keras
import numpy as np

from kmlm.config import ModelConfig
from kmlm.layers import Pooler
from kmlm.model import build_encoder
from kmlm.tasks.models import build_classifier, build_sentence_encoder, build_similarity_trainer, build_tagger

LEGACY_TASK = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "legacy", "task", "model.keras")


def _tiny_encoder():
    keras.utils.set_random_seed(0)
    return build_encoder(ModelConfig(vocabulary_size=40, hidden_dim=16, num_layers=1, num_heads=2,
                                     intermediate_dim=32, max_position=32, dropout=0.0, attention_dropout=0.0,
                                     initializer_range=0.5))


def _features(vocabulary_size, seed=0):
    token_ids = np.random.default_rng(seed).integers(5, vocabulary_size, size=(3, 9)).astype("int32")
    document_ids = np.ones_like(token_ids)
    document_ids[0, 6:] = 0
    return {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids), "document_ids": document_ids}


def test_classifier_is_the_bert_pooler_on_cls_then_logits():
    encoder = _tiny_encoder()
    hidden = encoder.config.hidden_dim
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(hidden, hidden)).astype("float32") * 0.2, rng.normal(size=hidden).astype("float32")
    classifier = build_classifier(encoder, 3, pooler_weights=(kernel, bias))
    pooler = classifier.get_layer("pooler")
    assert isinstance(pooler, Pooler)
    np.testing.assert_array_equal(pooler.kernel.numpy(), kernel)
    np.testing.assert_array_equal(pooler.bias.numpy(), bias)
    features = _features(encoder.config.vocabulary_size)
    sequence = np.asarray(encoder(features, training=False))
    output_kernel, output_bias = classifier.get_layer("logits").get_weights()
    expected = np.tanh(sequence[:, 0] @ kernel + bias) @ output_kernel + output_bias
    np.testing.assert_allclose(np.asarray(classifier(features, training=False)), expected, rtol=1e-5, atol=1e-5)


def test_the_pooler_head_gives_what_the_dense_pooler_of_earlier_task_models_gave():
    legacy = keras.saving.load_model(LEGACY_TASK, compile=False, safe_mode=True)
    assert isinstance(legacy.get_layer("pooler"), keras.layers.Dense)  # the file as kmlm wrote it then
    encoder = legacy.get_layer("encoder")
    num_classes = legacy.get_layer("logits").units
    classifier = build_classifier(encoder, num_classes, pooler_weights=legacy.get_layer("pooler").get_weights())
    classifier.get_layer("logits").set_weights(legacy.get_layer("logits").get_weights())
    features = _features(encoder.config.vocabulary_size, seed=2)
    np.testing.assert_allclose(np.asarray(classifier(features, training=False)),
                               np.asarray(legacy(features, training=False)), rtol=1e-5, atol=1e-6)


def test_heads_take_the_encoder_inputs_by_name():
    encoder = _tiny_encoder()
    names = ["document_ids", "segment_ids", "token_ids"]
    for model in (build_classifier(encoder, 2), build_tagger(encoder, 4), build_sentence_encoder(encoder)):
        assert sorted(model.input) == names
    trainer = build_similarity_trainer(build_sentence_encoder(encoder))
    assert sorted(trainer.input) == sorted(["a_" + n for n in names] + ["b_" + n for n in names])
    features = _features(encoder.config.vocabulary_size)
    scores = trainer({**{"a_" + k: v for k, v in features.items()}, **{"b_" + k: v for k, v in features.items()}})
    np.testing.assert_allclose(np.asarray(scores), 1.0, atol=1e-5)  # each side against itself

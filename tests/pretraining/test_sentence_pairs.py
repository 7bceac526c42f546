"""`kmlm pretrain --objective mlm+nsp|mlm+sop`: joint training, the pooler in the run directory."""

import json
import os
import random

import numpy as np
import pytest

from kmlm.cli.main import main
from kmlm.layers.pooler import Pooler
from kmlm.pipelines import SPECIAL_TOKENS, save_vocabulary
from kmlm.pretraining.job import PretrainSettings, pretrain
from kmlm.run_directory import load_run, load_sentence_heads
from tests.helpers import assert_config_round_trip, write_corpus

ANIMALS = ["cat", "dog", "fox", "bird", "horse", "cow", "pig", "goat", "duck", "frog", "bear", "wolf"]
VERBS = ["eats", "sleeps", "runs", "plays", "jumps", "sits"]
PLACES = ["home", "outside", "here", "there"]
VOCABULARY = list(SPECIAL_TOKENS) + ["where", "is", "the", "?", "."] + ANIMALS + VERBS + PLACES


def toy_corpus(documents=240):
    """Two-sentence documents: a question about an animal, then its answer. A true next
    segment is an answer about the same animal; a random one is a question half of the time
    and (almost always) about another animal; a swapped pair puts the question second."""
    rng = random.Random(0)
    return [
        f"where is the {animal}? the {animal} {rng.choice(VERBS)} {rng.choice(PLACES)}."
        for animal in (ANIMALS[rng.randrange(len(ANIMALS))] for _ in range(documents))
    ]


def test_pooler_is_tanh_of_the_first_token_projection():
    layer = Pooler(initializer_range=0.5, name="pooler")
    sequence = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)
    output = np.asarray(layer(sequence))
    expected = np.tanh(sequence[:, 0] @ layer.kernel.numpy() + layer.bias.numpy())
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6)
    rebuilt = assert_config_round_trip(layer)
    assert rebuilt.initializer_range == 0.5


@pytest.mark.slow
def test_next_sentence_head_learns_on_a_structured_corpus(tmp_path):
    corpus = write_corpus(tmp_path / "animals.txt", toy_corpus())
    vocab = str(tmp_path / "vocab.txt")
    save_vocabulary(VOCABULARY, vocab)
    out = str(tmp_path / "run")
    settings = PretrainSettings(
        corpus=corpus, objective="mlm+nsp", preset="tiny", steps=150, seq_len=24, batch_size=32, vocab=vocab,
        learning_rate=5e-3, log_points=2, eval_batches=2, eval_fraction=0.25, seed=0,
        model_overrides={"hidden_dim": 32, "num_heads": 4, "intermediate_dim": 64},
    )
    metrics = pretrain(out, settings, verbose=0)
    # Chance is 0.5 and a head that learned nothing stays there (as measured: 0.5 at step 0).
    assert metrics["next_sentence_accuracy"] >= 0.68, metrics
    assert metrics["pairs"] >= 40 and metrics["objective"] == "mlm+nsp"
    with open(os.path.join(out, "evaluation.json")) as f:
        assert json.load(f)["next_sentence_accuracy"] == metrics["next_sentence_accuracy"]

    run = load_run(out)
    assert run.config.training["objective"] == "mlm+nsp" and run.has_masked_lm_head
    kernel, bias = run.pooler_weights
    assert kernel.shape == (32, 32) and bias.shape == (32,)
    heads = load_sentence_heads(out)
    assert heads["next_sentence/kernel"].shape == (32, 2)
    with open(os.path.join(out, "metrics.csv")) as f:
        assert "next_sentence_accuracy" in f.readline()


def test_objective_flag_and_its_errors(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "animals.txt", toy_corpus()[:20])
    argv = ["pretrain", "--corpus", corpus, "--preset", "tiny", "--steps", "2", "--out", str(tmp_path / "run")]
    assert main(argv + ["--objective", "mlm+nsp", "--distribution", "mirrored"]) == 2
    assert "runs on one device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(argv + ["--objective", "nsp"])
    assert "invalid choice: 'nsp'" in capsys.readouterr().err

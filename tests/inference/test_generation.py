"""Text generation by iterative mask filling (`kmlm generate`)."""

import json

import numpy as np
import pytest

from kmlm.cli.main import main
from kmlm.inference.generation import MaskFillingGenerator
from kmlm.pipelines import special_ids
from tests.tiny_run import VOCABULARY, make_tiny_run, tiny_model

MARKUP_IDS = {i for i, token in enumerate(VOCABULARY) if token.startswith("[")}


@pytest.fixture(scope="module")
def generator():
    model = tiny_model(seed=1)
    # Make special and reserved tokens the model's favourites: a filter that lets any
    # of them through would be caught.
    head = model.get_layer("mlm_head")
    bias = np.zeros(len(VOCABULARY), np.float32)
    bias[sorted(MARKUP_IDS)] = 50.0
    head.output_bias.assign(bias)
    return MaskFillingGenerator(model, VOCABULARY, max_length=64)


@pytest.mark.parametrize("method", ["mask-predict", "gibbs"])
def test_generation_is_seeded_fills_every_mask_and_never_emits_special_tokens(generator, method):
    ids = special_ids(VOCABULARY)
    first = generator.generate("the cat [MASK] on", 6, method=method, iterations=3, top_k=5, seed=7)
    again = generator.generate("the cat [MASK] on", 6, method=method, iterations=3, top_k=5, seed=7)
    assert first == again
    assert first.token_ids[0] == ids.cls and first.token_ids[-1] == ids.sep
    assert first.positions == [3] + list(range(5, 11))  # the seed's [MASK] and the 6 appended
    generated = [first.token_ids[p] for p in first.positions]
    assert not MARKUP_IDS & set(generated)
    assert ids.mask not in first.token_ids
    assert first.text.startswith("the cat ") and "[" not in first.text
    others = {tuple(generator.generate("the cat [MASK] on", 6, method=method, iterations=3, top_k=5,
                                       seed=s).token_ids) for s in range(1, 6)}
    assert len(others) > 1  # the seed matters


def test_mask_predict_follows_a_linear_schedule_and_gibbs_visits_every_position(generator):
    # N=6, T=3: predict 6, then re-mask 4, then 2 -> 3 model calls.
    assert generator.generate("", 6, method="mask-predict", iterations=3).model_calls == 3
    # T=10 > N=4: rounds that would re-mask nothing are skipped (4, 3, 2, 2, 1, 1 ... then 0).
    assert generator.generate("", 4, method="mask-predict", iterations=10).model_calls == 8
    # Gibbs: one left-to-right fill, then 2 sweeps of one call per position.
    assert generator.generate("a", 5, method="gibbs", iterations=2).model_calls == 5 + 2 * 5


def test_greedy_mask_predict_with_one_iteration_is_fill_mask(generator):
    result = generator.generate("the dog", 3, method="mask-predict", iterations=1, temperature=0)
    the, dog = VOCABULARY.index("the"), VOCABULARY.index("dog")
    features = {
        "token_ids": np.array([[2, the, dog, 4, 4, 4, 3]], np.int32),  # [CLS] the dog [MASK]x3 [SEP]
        "segment_ids": np.zeros((1, 7), np.int32),
        "document_ids": np.ones((1, 7), np.int32),
        "mask_positions": np.array([[3, 4, 5]], np.int32),
    }
    assert result.token_ids[:3] == [2, the, dog]
    logits = np.array(generator.model(features, training=False))[0]
    logits[:, sorted(MARKUP_IDS)] = -np.inf
    assert result.token_ids[3:6] == logits.argmax(-1).tolist()


def test_generate_command(tmp_path, capsys):
    run_dir = make_tiny_run(str(tmp_path / "run"), seed=2)
    argv = ["generate", run_dir, "the cat", "--length", "4", "--method", "gibbs", "--iterations", "2",
            "--seed", "3", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert len(first["positions"]) == 4
    for argv, message in (
        ([run_dir, "x", "--length", "80"], "more than the model's 64"),
        ([run_dir, "x", "--temperature", "-1"], "--temperature -1.0"),
        ([run_dir, "x", "--method", "gibbs", "--iterations", "2", "--burn-in", "3"], "--burn-in 3"),
    ):
        assert main(["generate", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("kmlm generate: error:") and message in err and "\n" not in err

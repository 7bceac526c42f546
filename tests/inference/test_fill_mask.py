"""`kmlm.FillMask` never proposes a special or reserved token, even the model's favourite."""

import numpy as np
import pytest

from kmlm.inference.fill_mask import FillMask, text_pieces
from kmlm.inference.generation import MaskFillingGenerator
from kmlm.pipelines import SPECIAL_TOKENS, special_ids
from tests.tiny_run import VOCABULARY, tiny_model

UNUSED = VOCABULARY.index("[unused0]")
# Written out here, not by the predicate under test: the words, neither special nor [unusedN].
PREDICTABLE = [i for i, token in enumerate(VOCABULARY)
               if token not in SPECIAL_TOKENS and not token.startswith("[unused")]
TEXT = "the cat [MASK] on a [MASK] ."


def favour_unused(model):
    """Sets a tiny model's MLM output bias so that [unused0] is the most likely token everywhere."""
    bias = np.zeros(len(VOCABULARY), np.float32)
    bias[UNUSED] = 50.0
    model.get_layer("mlm_head").output_bias.assign(bias)
    return model


def _features(fill_mask, text):
    ids = special_ids(VOCABULARY)
    tokens = [ids.cls] + text_pieces(fill_mask.tokenizer, text) + [ids.sep]
    positions = [i for i, token in enumerate(tokens) if token == ids.mask]
    return {"token_ids": np.array([tokens], np.int32), "segment_ids": np.zeros((1, len(tokens)), np.int32),
            "document_ids": np.ones((1, len(tokens)), np.int32), "mask_positions": np.array([positions], np.int32)}


@pytest.fixture(scope="module")
def model():
    return favour_unused(tiny_model(seed=1))


def test_fill_mask_never_proposes_unused_tokens(model):
    fill_mask = FillMask(model, VOCABULARY, max_length=64)
    logits = np.asarray(model(_features(fill_mask, TEXT), training=False), np.float64)[0]
    assert (logits.argmax(-1) == UNUSED).all()  # unfiltered, [unused0] would win every slot
    results = fill_mask(TEXT, top_k=len(VOCABULARY))
    assert len(results) == 2
    for slot, result in enumerate(results):
        ids = [p["id"] for p in result["predictions"]]
        assert sorted(ids) == PREDICTABLE  # top_k is capped at the predictable tokens
        # The softmax over the predictable tokens alone, computed here.
        allowed = logits[slot, PREDICTABLE]
        expected = np.exp(allowed - allowed.max())
        expected /= expected.sum()
        np.testing.assert_allclose([p["score"] for p in result["predictions"]], np.sort(expected)[::-1], rtol=1e-6)
        assert result["predictions"][0]["id"] == PREDICTABLE[int(allowed.argmax())]


def test_greedy_generation_agrees_with_fill_mask_and_skips_unused_tokens(model):
    generator = MaskFillingGenerator(model, VOCABULARY, max_length=64)
    generated = generator.generate("the cat", 3, method="mask-predict", iterations=1, temperature=0)
    assert not {UNUSED, VOCABULARY.index("[unused1]")} & set(generated.token_ids)
    best = [mask["predictions"][0]["id"] for mask in FillMask(model, VOCABULARY)("the cat [MASK] [MASK] [MASK]")]
    assert [generated.token_ids[p] for p in generated.positions] == best

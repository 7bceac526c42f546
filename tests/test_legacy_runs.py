"""Run directories written by an earlier kmlm (tests/data/legacy) load and give the outputs
they gave then: the package layout may move, the files users hold keep working."""

import json
import os

import numpy as np

import kmlm

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy")


def test_pretrained_run_gives_the_same_logits_and_fill_mask():
    reference = np.load(os.path.join(LEGACY, "reference.npz"))
    run = kmlm.load_run(os.path.join(LEGACY, "run"))
    token_ids = reference["token_ids"]
    logits = run.model({
        "token_ids": token_ids,
        "segment_ids": np.zeros_like(token_ids),
        "document_ids": np.ones_like(token_ids),
        "mask_positions": reference["mask_positions"],
    }, training=False)
    np.testing.assert_allclose(np.asarray(logits), reference["logits"], rtol=1e-5, atol=1e-5)

    with open(os.path.join(LEGACY, "fill_mask.json"), encoding="utf-8") as file:
        expected = json.load(file)
    fill_mask = kmlm.FillMask(run.model, run.vocabulary, lowercase=True)
    texts = ["the [MASK] of a list .", "raise an [MASK] if the file does not exist ."]
    for text, want in zip(texts, expected):
        got = fill_mask(text, top_k=5)
        assert [slot["position"] for slot in got] == [slot["position"] for slot in want]
        for got_slot, want_slot in zip(got, want):
            assert [p["token"] for p in got_slot["predictions"]] == [p["token"] for p in want_slot["predictions"]]
            np.testing.assert_allclose([p["score"] for p in got_slot["predictions"]],
                                       [p["score"] for p in want_slot["predictions"]], rtol=1e-5)


def test_finetuned_task_gives_the_same_probabilities():
    reference = np.load(os.path.join(LEGACY, "reference.npz"))
    tasker = kmlm.Tasker.load(os.path.join(LEGACY, "task"))
    probabilities = tasker.class_probabilities(["alpha beta good", "gamma delta bad", "zeta eta theta"])
    np.testing.assert_allclose(np.asarray(probabilities), reference["probabilities"], rtol=1e-5, atol=1e-6)

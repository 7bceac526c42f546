"""Pseudo-log-likelihood scoring (`kmlm score`) against a one-copy-at-a-time computation."""

import json
import math

import numpy as np
import pytest

from kmlm.cli.main import main
from kmlm.pipelines import make_tokenizer, special_ids
from kmlm.inference.pseudo_perplexity import PseudoLikelihoodScorer, corpus_pseudo_perplexity
from tests.tiny_run import VOCABULARY, make_tiny_run, tiny_model

SENTENCES = ["the cat sat on a mat.", "a big red dog ran", "cats", "the dog sat on the big red mat, the cat ran."]


def _log_softmax(logits):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def _independent_scores(model, sentence):
    """log P(token_i | rest) by masking one position per model call, log-softmax in numpy."""
    tokenizer = make_tokenizer(VOCABULARY)
    ids = special_ids(VOCABULARY)
    row = [ids.cls] + [int(i) for i in tokenizer.tokenize(sentence)] + [ids.sep]
    scores = []
    for position in range(1, len(row) - 1):
        masked = list(row)
        masked[position] = ids.mask
        features = {
            "token_ids": np.array([masked], np.int32),
            "segment_ids": np.zeros((1, len(row)), np.int32),
            "document_ids": np.ones((1, len(row)), np.int32),
            "mask_positions": np.array([[position]], np.int32),
        }
        logits = np.asarray(model(features, training=False))[0, 0]
        scores.append(_log_softmax(logits)[row[position]])
    return scores


def test_pseudo_perplexity_equals_the_mean_of_per_token_masked_log_probs():
    model = tiny_model(seed=3)
    # A batch size that splits sentences across batches and leaves a partial last batch.
    scores = PseudoLikelihoodScorer(model, VOCABULARY, batch_size=5).score(SENTENCES)
    assert [s.text for s in scores] == SENTENCES
    all_expected = []
    for score in scores:
        expected = _independent_scores(model, score.text)
        all_expected += expected
        assert len(score.tokens) == len(expected)
        np.testing.assert_allclose(score.token_log_probs, expected, rtol=1e-5, atol=1e-5)
        assert score.pseudo_perplexity == pytest.approx(math.exp(-np.mean(expected)), rel=1e-5)
    assert scores[2].tokens == ["cat", "##s"]
    assert corpus_pseudo_perplexity(scores) == pytest.approx(math.exp(-np.mean(all_expected)), rel=1e-5)
    # Padding rows and the batch split change nothing.
    again = PseudoLikelihoodScorer(model, VOCABULARY, batch_size=64).score(SENTENCES[::-1])
    for a, b in zip(scores, again[::-1]):
        np.testing.assert_allclose(a.token_log_probs, b.token_log_probs, rtol=1e-5, atol=1e-6)


def test_score_command_prints_json_and_rejects_bad_input(tmp_path, capsys):
    run_dir = make_tiny_run(str(tmp_path / "run"), seed=3)
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES[:2]) + "\n\n", encoding="utf-8")
    assert main(["score", run_dir, "--input", str(sentences), "--json", "--batch-size", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [s["text"] for s in result["sentences"]] == SENTENCES[:2]
    expected = _independent_scores(tiny_model(seed=3), SENTENCES[0])
    assert result["sentences"][0]["pseudo_perplexity"] == pytest.approx(math.exp(-np.mean(expected)), rel=1e-5)

    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    for argv, message in (
        (["score", run_dir, "--input", str(tmp_path / "empty.txt")], "has no non-blank lines"),
        (["score", run_dir, "--input", str(tmp_path / "missing.txt")], "missing.txt"),
        (["score", str(tmp_path / "nowhere"), "--input", str(sentences)], "does not exist"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("kmlm score: error:") and message in err and "\n" not in err

"""`kmlm attention`: the JSON and printed maps of a pretrained run and of a fine-tuned model
against `AttentionReader`, the heat-map PNG, and its one-line refusals."""

import json

import numpy as np
import pytest

from kmlm.inference.attention import AttentionReader
from kmlm.run_directory import load_run
from kmlm.tasks.finetune import Tasker
from tests.helpers import run_cli
from tests.tasks.test_explain import write_task_directory
from tests.tiny_run import VOCABULARY, make_tiny_run

TEXT = "the big cats sat on a mat"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("attention") / "run")


def _json(argv, capsys):
    code, printed, _ = run_cli(argv, capsys)
    assert code == 0
    return json.loads(printed)


def test_json_holds_every_layer_and_head_of_a_run(tiny_run, capsys):
    record = _json(["attention", tiny_run, TEXT, "--pair", "a dog ran", "--json"], capsys)
    expected = AttentionReader(load_run(tiny_run).model, VOCABULARY)(TEXT, "a dog ran")
    assert record["tokens"] == ["[CLS]", "the", "big", "cat", "##s", "sat", "on", "a", "mat", "[SEP]", "a", "dog",
                                "ran", "[SEP]"]
    assert record["segment_ids"] == [0] * 10 + [1] * 4
    assert [(m["layer"], m["head"]) for m in record["maps"]] == [(l, h) for l in range(2) for h in range(4)]
    weights = np.array([m["weights"] for m in record["maps"]])
    np.testing.assert_allclose(weights, expected.attention.reshape(weights.shape), atol=1e-6)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-4)  # rounded to 6 decimals
    assert record["text"] == TEXT and record["text_pair"] == "a dog ran"


def test_one_layer_and_head_printed_as_the_most_attended_tokens(tiny_run, capsys):
    code, printed, _ = run_cli(["attention", tiny_run, "--text", TEXT, "--layer", "1", "--head", "2", "--top", "2"],
                               capsys)
    assert code == 0
    maps = AttentionReader(load_run(tiny_run).model, VOCABULARY)(TEXT)
    lines = printed.rstrip("\n").splitlines()
    assert lines[0] == " ".join(f"{i}:{t}" for i, t in enumerate(maps.tokens))
    assert lines[1] == "layer 1, head 2 (query -> most attended keys)"
    matrix = maps.attention[1, 2]
    assert len(lines) == 2 + len(maps.tokens)
    for line, token, row in zip(lines[2:], maps.tokens, matrix):
        query, keys = line.split(" -> ")
        assert query.strip() == token
        shown = keys.split("  ")
        best = np.argsort(-row, kind="stable")[:2]
        assert [s.rsplit(" ", 1)[0] for s in shown] == [maps.tokens[j] for j in best]
        assert [float(s.rsplit(" ", 1)[1]) for s in shown] == pytest.approx(row[best], abs=0.005)


def test_a_fine_tuned_model_is_read_through_its_own_encoder(tiny_run, tmp_path, capsys):
    model_dir = write_task_directory(tmp_path / "classifier", seed=5)
    record = _json(["attention", model_dir, TEXT, "--layer", "0", "--json"], capsys)
    tuned = AttentionReader(Tasker.load(model_dir).model, VOCABULARY)(TEXT).attention[0]
    pretrained = AttentionReader(load_run(tiny_run).model, VOCABULARY)(TEXT).attention[0]
    weights = np.array([m["weights"] for m in record["maps"]])
    np.testing.assert_allclose(weights, tuned, atol=1e-6)
    assert not np.allclose(weights, pretrained, atol=1e-3)  # not the run's weights by mistake


def test_out_writes_the_heat_map_grid(tiny_run, tmp_path, capsys):
    import matplotlib.image

    path = tmp_path / "attention.png"
    code, printed, errors = run_cli(["attention", tiny_run, TEXT, "--head", "1", "--out", str(path), "--json"],
                                    capsys)
    assert code == 0 and len(json.loads(printed)["maps"]) == 2
    assert errors.strip() == f"wrote 2 attention maps to {path}"
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 300  # two maps stacked, one per layer


@pytest.mark.parametrize("argv, message", [
    (["--text", "a mat"], "give the text once: as TEXT or as --text, not both"),
    ([], None),
])
def test_text_given_twice_or_not_at_all(tiny_run, argv, message, capsys):
    base = ["attention", tiny_run] + (["the cat"] if argv else [])
    code, _, errors = run_cli(base + argv, capsys)
    assert code == 2
    assert errors.strip() == "kmlm attention: error: " + (message or "no TEXT given; pass the text to look inside")

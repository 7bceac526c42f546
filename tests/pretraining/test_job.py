"""The one pretraining job: what it refuses before training, and what each objective supplies."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from kmlm.pipelines import save_vocabulary
from kmlm.pretraining.job import pretrain, run_record
from kmlm.pretraining.objectives import MaskedLanguageModeling, SentencePairPrediction, objective_for
from kmlm.pretraining.settings import PretrainSettings
from kmlm.run_directory import RunConfig
from tests.helpers import write_corpus
from tests.pretraining.test_sentence_pairs import VOCABULARY, toy_corpus

DIFFERENT = (
    "{out!r} holds an unfinished run with different settings ({differences}, the run's vs now); re-run it "
    "with its own settings to resume, or choose a new --out"
)
CHANGED = {
    "mask_rate": "data.mask_rate: 0.15 vs 0.2",
    "objective": None,  # several keys: checked below
    "steps": "training.steps: 4 vs 6; training.steps_per_epoch: 2 vs 3; training.total_steps: 4 vs 6",
    "lowercase": "data.lowercase: True vs False",
}


def _settings(tmp_path, **changes):
    corpus = write_corpus(tmp_path / "animals.txt", toy_corpus(60))
    vocab = str(tmp_path / "vocab.txt")
    save_vocabulary(VOCABULARY, vocab)
    values = dict(corpus=corpus, vocab=vocab, preset="tiny", steps=4, seq_len=24, batch_size=4, mask_rate=0.15,
                  log_points=2, objective="mlm+sop", model_overrides={"hidden_dim": 32, "num_heads": 4, "intermediate_dim": 64})
    values.update(changes)
    return PretrainSettings(**values)


def _unfinished_run(out, settings):
    """A run directory as a kill before the first epoch's backup leaves it."""
    os.makedirs(out)
    save_vocabulary(VOCABULARY, os.path.join(out, "vocab.txt"))
    record = run_record(settings, objective_for(settings), len(VOCABULARY))
    record.write(out)
    return record


@pytest.mark.parametrize("change", [{"mask_rate": 0.2}, {"objective": "mlm+nsp"}, {"objective": "mlm"},
                                    {"steps": 6}, {"lowercase": False}])
def test_an_unfinished_run_is_not_resumed_with_other_settings(tmp_path, change):
    settings = _settings(tmp_path)
    out = str(tmp_path / "run")
    record = _unfinished_run(out, settings)
    assert RunConfig.read(out) == record  # what lets the same settings resume
    with pytest.raises(ValueError) as error:
        pretrain(out, dataclasses.replace(settings, **change), verbose=0)
    key = next(iter(change))
    if CHANGED[key] is not None:
        assert str(error.value) == DIFFERENT.format(out=out, differences=CHANGED[key])
    else:
        assert str(error.value).startswith(f"{out!r} holds an unfinished run with different settings (")
        assert f"training.objective: 'mlm+sop' vs " in str(error.value) or "heads." in str(error.value)
    assert sorted(os.listdir(out)) == ["config.json", "vocab.txt"]  # nothing trained, nothing written


def test_the_kmlm_version_alone_does_not_block_a_resume(tmp_path):
    settings = _settings(tmp_path)
    record = run_record(settings, objective_for(settings), len(VOCABULARY))
    assert record.differences(dataclasses.replace(record, kmlm_version="0.0.1")) == []
    assert record.differences(dataclasses.replace(record, kmlm_version=None)) == []


def test_a_finished_run_and_a_foreign_directory_are_refused(tmp_path):
    settings = _settings(tmp_path)
    finished = tmp_path / "finished"
    _unfinished_run(str(finished), settings)
    (finished / "model.keras").write_bytes(b"")
    with pytest.raises(ValueError) as error:
        pretrain(str(finished), settings, verbose=0)
    assert str(error.value) == (f"{str(finished)!r} already holds a finished run; choose a new --out "
                                "(or delete it to retrain)")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ValueError) as error:
        pretrain(str(foreign), settings, verbose=0)
    assert str(error.value) == f"--out {str(foreign)!r} exists and is not a kmlm run directory; choose a new --out"


@pytest.mark.parametrize("objective", ["mlm+nsp", "mlm+sop"])
def test_sentence_pair_objectives_refuse_other_strategies(tmp_path, objective):
    for changes in ({"distribution": "mirrored"}, {"data_service": "localhost:5050"}):
        with pytest.raises(ValueError) as error:
            _settings(tmp_path, objective=objective, **changes).validate()
        assert str(error.value) == f"--objective {objective} runs on one device; leave --strategy default"
    with pytest.raises(ValueError) as error:
        _settings(tmp_path, objective="sop").validate()
    assert str(error.value) == "unknown objective 'sop'; choose one of mlm, mlm+nsp, mlm+sop"


def _batches(dataset, count):
    return [tf.nest.map_structure(np.asarray, batch) for batch in dataset.take(count)]


@pytest.mark.parametrize("objective, kind", [("mlm", MaskedLanguageModeling), ("mlm+sop", SentencePairPrediction)])
def test_a_resumed_input_continues_the_stream_with_the_same_batches_and_masks(tmp_path, objective, kind):
    settings = _settings(tmp_path, objective=objective)
    chosen = objective_for(settings)
    assert isinstance(chosen, kind)
    documents = tf.data.Dataset.from_tensor_slices(toy_corpus(60))

    def stream(start_batch):
        return chosen.training_dataset(documents, VOCABULARY, batch_size=4, masking=settings.masking_config(),
                                       start_batch=start_batch)

    whole = _batches(stream(0), 7)
    resumed = _batches(stream(5), 2)
    for expected, got in zip(whole[5:], resumed):
        tf.nest.map_structure(np.testing.assert_array_equal, expected, got)
    # The batches differ from one another, so equality above says something.
    assert not np.array_equal(whole[0][0]["token_ids"], whole[5][0]["token_ids"])

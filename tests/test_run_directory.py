"""The run directory's config.json as one typed record (`RunConfig`): the JSON that pretraining
and conversion write round-trips exactly, run directories of earlier kmlm versions still read,
and missing or unknown keys behave as `RunConfig` documents."""

import json
import os

import pytest

from kmlm import __version__
from kmlm.config import ModelConfig
from kmlm.pretraining.job import run_record
from kmlm.pretraining.objectives import objective_for
from kmlm.pretraining.settings import PretrainSettings
from kmlm.run_directory import DataRecord, Heads, RunConfig, load_run

LEGACY_RUN = os.path.join(os.path.dirname(__file__), "data", "legacy", "run")

TINY_MODEL = ModelConfig.from_preset("tiny", vocabulary_size=300).to_dict()

# config.json of `kmlm convert` as the dict builder before RunConfig wrote it: no vocab_method,
# an empty training record, heads and converted_from.
CONVERTED = {
    "model": TINY_MODEL,
    "data": {
        "corpus": None, "one_per_line": False, "seq_len": 64, "batch_size": 8, "masking": "token",
        "mask_rate": 0.15, "mask_token_rate": 0.8, "random_token_rate": 0.1, "lowercase": False,
        "packing": True, "eval_fraction": 0.02, "max_predictions": 16,
    },
    "training": {},
    "heads": {"masked_lm": False, "pooler": True, "next_sentence": False},
    "converted_from": {"path": "/models/bert", "model_type": "bert", "architectures": ["BertModel"],
                       "hidden_act": "gelu", "ignored_tensors": []},
    "kmlm_version": "0.1.0",
}


def _legacy_json():
    with open(os.path.join(LEGACY_RUN, "config.json"), encoding="utf-8") as file:
        return file.read()


def test_pretraining_record_round_trips_through_dict_and_file(tmp_path):
    settings = PretrainSettings(corpus="corpus.txt", preset="tiny", steps=40, seq_len=32, batch_size=8, mask_rate=0.15,
                                log_points=4, objective="mlm+sop", init_embeddings="vectors.npz")
    record = run_record(settings, objective_for(settings), vocabulary_size=300)
    values = record.to_dict()
    assert values["data"] == {
        "corpus": "corpus.txt", "one_per_line": False, "seq_len": 32, "batch_size": 8, "masking": "token",
        "mask_rate": 0.15, "mask_token_rate": 0.8, "random_token_rate": 0.1, "lowercase": True,
        "packing": True, "eval_fraction": 0.02, "max_predictions": 8, "vocab_method": "fast",
    }
    assert values["training"] == {
        "preset": "tiny", "steps": 40, "time_budget": None, "learning_rate": 2e-3, "lr_schedule": "linear",
        "warmup": 0.0, "warmup_steps": None, "decay": 0.2, "weight_decay": 0.01, "clip_norm": 1.0, "adam_beta2": 0.98,
        "adam_epsilon": 1e-6, "precision": "float32", "jit_compile": True, "seed": 0, "objective": "mlm+sop",
        "steps_per_epoch": 10, "epochs": 4, "total_steps": 40, "init_embeddings": "vectors.npz",
    }
    assert values["heads"] == {"masked_lm": True, "pooler": True, "next_sentence": True}
    # The preset with pretraining's recipe: pre-LN, no dropout, positions from each document's start.
    assert values["model"] == {**TINY_MODEL, "dropout": 0.0, "attention_dropout": 0.0, "norm_first": True,
                               "document_positions": True}
    assert values["kmlm_version"] == __version__
    assert RunConfig.from_dict(values) == record

    record.write(str(tmp_path))
    assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left behind
    text = (tmp_path / "config.json").read_text(encoding="utf-8")
    assert text == json.dumps(values, indent=2, sort_keys=True) + "\n"
    assert RunConfig.read(str(tmp_path)) == record


def test_masked_lm_record_names_its_strategy_and_no_heads():
    settings = PretrainSettings(preset="tiny", seq_len=64, mask_rate=0.15, vocab="vocab.txt", distribution="mirrored")
    values = run_record(settings, objective_for(settings), vocabulary_size=300).to_dict()
    assert values["training"]["distribution"] == "mirrored" and "objective" not in values["training"]
    assert values["data"]["vocab_method"] == "file:vocab.txt" and values["data"]["max_predictions"] == 16
    assert "heads" not in values and "converted_from" not in values


def test_converted_record_round_trips_exactly(tmp_path):
    config = RunConfig.from_dict(CONVERTED)
    assert config.heads == Heads(masked_lm=False, pooler=True, next_sentence=False)
    assert not config.has_masked_lm_head and config.data.vocab_method is None and config.training == {}
    assert config.to_dict() == CONVERTED
    config.write(str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text(encoding="utf-8")) == CONVERTED


def test_legacy_config_reads_with_its_values_and_writes_back_byte_for_byte(tmp_path):
    config = RunConfig.read(LEGACY_RUN)
    assert config.model.hidden_dim == 64 and config.model.vocabulary_size == 400
    data = config.data
    assert (data.seq_len, data.batch_size, data.max_predictions, data.vocab_method) == (32, 4, 8, "fast")
    assert data.lowercase is True and data.corpus is None and data.masking == "token"
    assert config.training["steps"] == 6 and config.training["distribution"] == "default"
    assert config.heads is None and config.has_masked_lm_head and config.kmlm_version == "0.1.0"
    config.write(str(tmp_path))
    assert (tmp_path / "config.json").read_text(encoding="utf-8") == _legacy_json()


def test_load_run_gives_the_typed_config():
    run = load_run(LEGACY_RUN)
    assert run.config == RunConfig.read(LEGACY_RUN)
    assert run.model_config is run.config.model and run.has_masked_lm_head


def test_missing_keys_take_the_defaults_readers_always_assumed():
    config = RunConfig.from_dict({"model": TINY_MODEL})
    assert config.data == DataRecord()
    assert (config.data.lowercase, config.data.seq_len, config.data.batch_size) == (True, 128, 32)
    assert (config.data.masking, config.data.mask_rate, config.data.packing) == ("token", 0.15, True)
    assert config.data.max_predictions == 24  # ceil(0.15 * 128) = 20, rounded up to a multiple of 8
    assert config.training == {} and config.heads is None and config.kmlm_version is None
    assert config.has_masked_lm_head
    # Written back, the defaults are spelled out; an unknown version stays unknown.
    values = config.to_dict()
    assert values["data"]["seq_len"] == 128 and "vocab_method" not in values["data"]
    assert "kmlm_version" not in values and RunConfig.from_dict(values) == config
    partial = RunConfig.from_dict({"model": TINY_MODEL, "data": {"seq_len": 32}, "heads": {"pooler": True}})
    assert partial.data.max_predictions == 8 and partial.heads == Heads(masked_lm=True, pooler=True)


@pytest.mark.parametrize("values, message", [
    ({"model": TINY_MODEL, "data": {"seq_len": 32, "colour": "red"}},
     "'x/config.json' has unknown data settings ['colour']; valid: ['batch_size', 'corpus', 'eval_fraction', "
     "'lowercase', 'mask_rate', 'mask_token_rate', 'masking', 'max_predictions', 'one_per_line', 'packing', "
     "'random_token_rate', 'segmenter', 'seq_len', 'vocab_method']"),
    ({"model": TINY_MODEL, "heads": {"masked_lm": True, "classifier": True}},
     "'x/config.json' has unknown heads settings ['classifier']; valid: ['masked_lm', 'next_sentence', 'pooler']"),
    ({"model": TINY_MODEL, "optimizer": {}},
     "'x/config.json' has unknown top-level settings ['optimizer']; valid: ['converted_from', 'data', 'heads', "
     "'kmlm_version', 'model', 'tokenizer', 'training']"),
    ({"data": {}}, "'x/config.json' has no \"model\" section; it was not written by kmlm"),
    ([1, 2], "'x/config.json' has no \"model\" section; it was not written by kmlm"),
    ({"model": TINY_MODEL, "training": [1]}, "'x/config.json' has a training section that is not an object: [1]"),
    ({"model": TINY_MODEL, "data": "text"}, "'x/config.json' has a data section that is not an object: 'text'"),
])
def test_unknown_and_malformed_sections_are_refused_naming_them(values, message):
    with pytest.raises(ValueError) as error:
        RunConfig.from_dict(values, source="'x/config.json'")
    assert str(error.value) == message


def test_training_record_is_kept_as_written():
    values = {"model": TINY_MODEL, "training": {"mlm_head_only": True, "steps": 3}}
    assert RunConfig.from_dict(values).to_dict()["training"] == {"mlm_head_only": True, "steps": 3}


def test_reading_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        RunConfig.read(str(tmp_path / "absent"))
    assert str(error.value) == (f"run directory {str(tmp_path / 'absent')!r} does not exist; pass the --out of a "
                                "`kmlm pretrain` run")
    with pytest.raises(ValueError) as error:
        RunConfig.read(str(tmp_path))
    assert str(error.value) == (f"{str(tmp_path)!r} is not a kmlm run directory (no config.json); pass the --out "
                                "of a `kmlm pretrain` run")
    newer = dict(CONVERTED, kmlm_version="9.3.0", data={"seq_len": 32, "a_key_from_the_future": 1})
    (tmp_path / "config.json").write_text(json.dumps(newer), encoding="utf-8")
    with pytest.raises(ValueError) as error:  # the version is named before any unknown key
        RunConfig.read(str(tmp_path))
    path = str(tmp_path / "config.json")
    assert str(error.value) == (
        f"{path!r} was written by kmlm 9.3.0, which this kmlm {__version__} cannot read; "
        f"upgrade kmlm (pip install -U kmlm) or use a run written by kmlm <= {__version__}"
    )

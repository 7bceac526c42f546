"""The documented pretraining defaults are the ones a bare `kmlm pretrain` uses."""

import re
from pathlib import Path

import pytest

from kmlm.cli.main import build_parser
from kmlm.cli.pretraining import _pretrain_settings
from kmlm.pretraining.job import run_record
from kmlm.pretraining.objectives import objective_for
from kmlm.pretraining.recipe import (ADAM_BETA2, ADAM_EPSILON, CLIP_NORM, DECAY, LARGER_PRESET_LEARNING_RATE,
                                    LARGER_PRESET_WARMUP, LEARNING_RATES, PRETRAINING_MODEL, WARMUPS)
from kmlm.pretraining.settings import PretrainSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def _bare_command(*flags):
    return _pretrain_settings(build_parser().parse_args(["pretrain", "--out", "runs/x", *flags]))


def readme_recipe_table():
    """preset -> {column: cell} of the README's table of pretraining defaults."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("<!-- pretraining-defaults -->"):text.index("<!-- /pretraining-defaults -->")]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    table = {}
    for line in rows[2:]:
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        table[cells[0]] = dict(zip(header[1:], cells[1:]))
    return table


@pytest.mark.parametrize("preset", ["tiny", "mini", "small", "base"])
def test_a_bare_command_trains_with_the_recipe_of_its_preset(preset):
    settings = _bare_command("--preset", preset)
    expected_rate = LEARNING_RATES.get(preset, LARGER_PRESET_LEARNING_RATE)
    assert settings.learning_rate == expected_rate
    record = run_record(settings, objective_for(settings), vocabulary_size=100)
    assert record.training["learning_rate"] == expected_rate
    expected_warmup = WARMUPS.get(preset, LARGER_PRESET_WARMUP)
    assert settings.warmup == record.training["warmup"] == expected_warmup
    assert settings.decay == record.training["decay"] == DECAY and settings.lr_schedule == "linear"
    model = record.model
    assert (model.dropout, model.attention_dropout, model.norm_first, model.document_positions) == (
        PRETRAINING_MODEL["dropout"], PRETRAINING_MODEL["attention_dropout"], PRETRAINING_MODEL["norm_first"],
        PRETRAINING_MODEL["document_positions"])
    # Everything else a bare command uses is PretrainSettings' own default.
    defaults = PretrainSettings(preset=preset)
    for name in ("seq_len", "batch_size", "mask_rate", "masking", "weight_decay", "warmup", "lr_schedule", "decay",
                 "vocab_size", "total_steps", "clip_norm", "adam_beta2", "adam_epsilon"):
        assert getattr(settings, name) == getattr(defaults, name), name


def test_flags_override_the_recipe():
    settings = _bare_command("--preset", "tiny", "--learning-rate", "1e-4", "--dropout", "0.1", "--norm", "post",
                             "--positions", "row")
    config = settings.model_config(100)
    assert settings.learning_rate == 1e-4
    assert (config.dropout, config.attention_dropout, config.norm_first, config.document_positions) == (
        0.1, 0.1, False, False)
    assert _bare_command("--positions", "document").model_config(100).document_positions is True


def test_the_readme_states_the_defaults_the_code_uses():
    table = readme_recipe_table()
    for preset in (*LEARNING_RATES, "larger"):
        row = table[preset]
        defaults = PretrainSettings(preset="base" if preset == "larger" else preset)
        assert float(row["peak learning rate"]) == defaults.learning_rate
        assert float(row["mask rate"]) == defaults.mask_rate
        assert int(row["batch"]) == defaults.batch_size and int(row["row length"]) == defaults.seq_len
        assert float(row["warmup"]) == defaults.warmup and row["schedule"] == defaults.lr_schedule
        assert float(row["decay"]) == defaults.decay
        assert float(row["dropout"]) == PRETRAINING_MODEL["dropout"]
        assert row["LayerNorm"] == ("pre" if PRETRAINING_MODEL["norm_first"] else "post")
        assert row["positions"] == ("document" if PRETRAINING_MODEL["document_positions"] else "row")
    assert float(table["larger"]["peak learning rate"]) == LARGER_PRESET_LEARNING_RATE


def test_the_help_states_the_per_preset_rates():
    text = build_parser()._subparsers._group_actions[0].choices["pretrain"].format_help()
    text = re.sub(r"\s+", " ", text)
    for preset, rate in LEARNING_RATES.items():
        assert f"{preset} {rate:g}" in text
    warmups = ", ".join(f"{preset} {share:g}" for preset, share in WARMUPS.items())
    assert f"(default per preset: {warmups}, larger {LARGER_PRESET_WARMUP:g})" in text
    assert f"(default {DECAY:g}; 1: the fall takes all of the run after the warmup)" in text


def test_optimizer_flags_reach_the_compiled_optimizer_and_config(tmp_path):
    from kmlm.pretraining.job import PretrainingJob

    settings = _bare_command("--preset", "tiny", "--steps", "4", "--clip-norm", "0", "--adam-beta2", "0.999",
                             "--adam-epsilon", "1e-7")
    record = run_record(settings, objective_for(settings), vocabulary_size=100)
    assert (record.training["clip_norm"], record.training["adam_beta2"], record.training["adam_epsilon"]) == (
        0.0, 0.999, 1e-7)
    _, trainer = PretrainingJob(str(tmp_path / "run"), settings, verbose=0).build(record, vocabulary=None)
    optimizer = trainer.optimizer
    assert optimizer.global_clipnorm is None
    assert (optimizer.beta_2, optimizer.epsilon) == (0.999, 1e-7)
    default = _bare_command("--preset", "tiny", "--steps", "4")
    _, trainer = PretrainingJob(str(tmp_path / "default"), default, verbose=0).build(
        run_record(default, objective_for(default), vocabulary_size=100), vocabulary=None)
    assert (trainer.optimizer.global_clipnorm, trainer.optimizer.beta_2, trainer.optimizer.epsilon) == (
        CLIP_NORM, ADAM_BETA2, ADAM_EPSILON)


def test_the_decay_flag_reaches_the_step_schedule_and_config(tmp_path):
    from kmlm.pretraining.job import PretrainingJob

    settings = _bare_command("--preset", "tiny", "--steps", "40", "--warmup", "0.1", "--decay", "0.25")
    record = run_record(settings, objective_for(settings), vocabulary_size=100)
    assert record.training["decay"] == 0.25
    _, trainer = PretrainingJob(str(tmp_path / "run"), settings, verbose=0).build(record, vocabulary=None)
    schedule = trainer.optimizer._learning_rate
    assert (schedule.warmup_steps, schedule.decay_steps, schedule.total_steps) == (4, 10, 40)
    peak = settings.learning_rate
    assert [float(schedule(step)) / peak for step in (2, 4, 30, 35, 40)] == pytest.approx([0.5, 1, 1, 0.5, 0])

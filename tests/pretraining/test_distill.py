"""`kmlm distill`: the soft-target loss against NumPy, the trainer's loss and gradients, the
student started from the teacher's weights, a distilled run directory that `fill-mask` and
`evaluate` read, and the one-line refusals."""

import contextlib
import dataclasses
import io
import json
import math
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from kmlm.cli.main import main
from kmlm.config import ModelConfig
from kmlm.model import build_mlm_model
from kmlm.pipelines import never_predicted
from kmlm.pretraining.distill import (
    Distillation,
    DistillationTrainer,
    DistillSettings,
    copied_layers,
    init_from_teacher,
    soft_target_loss,
)
from kmlm.pretraining.evaluation import eval_dataset
from kmlm.run_directory import load_run
from kmlm.training import compile_for_pretraining
from tests.helpers import random_mlm_batch, run_cli, write_corpus
from tests.tiny_run import make_tiny_run

TEACHER = ["--num-layers", "2", "--hidden-dim", "32", "--num-heads", "4", "--intermediate-dim", "64"]  # tiny_model's
STUDENT = ["--num-layers", "1", "--hidden-dim", "16", "--num-heads", "2", "--intermediate-dim", "32"]
SENTENCES = [f"the {size} {animal} {verb} on a {colour} mat ." for size in ("big", "red") for animal in ("cat", "dog")
             for verb in ("sat", "ran") for colour in ("red", "big")] * 8
QUICK = ["--log-points", "2", "--no-jit", "--quiet"]


def numpy_log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def numpy_distillation_terms(teacher, student, labels, weights, temperature):
    """(weighted mean cross-entropy of the labels, T^2 x weighted mean KL at temperature T)."""
    log_q = numpy_log_softmax(student.astype(np.float64))
    hard = -np.take_along_axis(log_q, labels[..., None], axis=-1)[..., 0]
    log_p_t = numpy_log_softmax(teacher.astype(np.float64) / temperature)
    log_q_t = numpy_log_softmax(student.astype(np.float64) / temperature)
    kl = (np.exp(log_p_t) * (log_p_t - log_q_t)).sum(axis=-1)
    return (hard * weights).sum() / weights.sum(), temperature**2 * (kl * weights).sum() / weights.sum()


def test_soft_target_loss_is_the_temperature_scaled_kl_of_numpy():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(2, 3, 5, 11)).astype("float32") * 3
    weights = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], "float32")
    labels = np.zeros((3, 5), "int64")
    for temperature in (1.0, 2.0, 4.0):
        _, expected = numpy_distillation_terms(teacher, student, labels, weights, temperature)
        got = float(soft_target_loss(teacher, student, temperature, weights))
        assert math.isclose(got, expected, rel_tol=1e-5), (temperature, got, expected)
    assert float(soft_target_loss(teacher, teacher, 3.0, weights)) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def trainer_and_batch():
    keras.utils.set_random_seed(1)
    teacher = build_mlm_model(ModelConfig(vocabulary_size=64, hidden_dim=32, num_layers=2, num_heads=4,
                                          intermediate_dim=64, max_position=32, dropout=0.0))
    student = build_mlm_model(ModelConfig(vocabulary_size=64, hidden_dim=16, num_layers=1, num_heads=2,
                                          intermediate_dim=32, max_position=32, dropout=0.0))
    trainer = DistillationTrainer(student, teacher, temperature=2.0, alpha=0.7)
    compile_for_pretraining(trainer, total_steps=10, jit_compile=False)
    return trainer, random_mlm_batch(seed=3, unused_slots=2)


def test_the_loss_mixes_the_hard_and_soft_terms_by_alpha(trainer_and_batch):
    trainer, (x, y, w) = trainer_and_batch
    student_logits = np.asarray(trainer.student(x))
    teacher_logits = np.asarray(trainer.teacher(x))
    hard, soft = numpy_distillation_terms(teacher_logits, student_logits, np.asarray(y), np.asarray(w), 2.0)
    got = float(trainer.compute_loss(x=x, y=y, y_pred=trainer(x), sample_weight=w))
    assert math.isclose(got, 0.3 * hard + 0.7 * soft, rel_tol=1e-5)


def test_training_moves_the_student_only(trainer_and_batch):
    trainer, (x, y, w) = trainer_and_batch
    teacher_before = [np.array(v) for v in trainer.teacher.weights]
    student_before = [np.array(v) for v in trainer.student.trainable_weights]
    assert len(trainer.trainable_weights) == len(trainer.student.trainable_weights)
    trainer.fit(x, y, sample_weight=w, batch_size=len(y), epochs=2, verbose=0)
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(teacher_before, trainer.teacher.weights))
    assert any(not np.array_equal(a, np.array(b)) for a, b in zip(student_before, trainer.student.trainable_weights))


def weights_by_path(model):
    return {variable.path: np.array(variable) for variable in model.weights}


def test_a_half_depth_student_starts_from_every_other_teacher_block():
    config = ModelConfig(vocabulary_size=40, hidden_dim=16, num_layers=4, num_heads=2, intermediate_dim=32,
                         max_position=16, norm_first=True)
    keras.utils.set_random_seed(5)
    teacher = build_mlm_model(config)
    student = build_mlm_model(dataclasses.replace(config, num_layers=2))
    layers = copied_layers(student.config, teacher.config)
    assert layers == [0, 2]
    theirs = weights_by_path(teacher)
    # The student's own path of every teacher weight it should hold: block j <- block layers[j].
    expected = {path.replace(f"block_{i}/", f"block_{j}/"): theirs[path] for j, i in enumerate(layers)
                for path in theirs if path.startswith(f"block_{i}/")}
    expected.update({path: value for path, value in theirs.items() if not path.startswith("block_")})
    before = weights_by_path(student)
    assert sorted(before) == sorted(expected)  # every student weight has a teacher counterpart
    assert not np.array_equal(before["block_1/attention/qkv_kernel"], expected["block_1/attention/qkv_kernel"])
    init_from_teacher(student, teacher, layers)
    after = weights_by_path(student)
    for path, value in expected.items():
        assert np.array_equal(after[path], value), path


def test_only_a_student_of_the_teachers_width_starts_from_it():
    teacher = ModelConfig.from_preset("mini", vocabulary_size=100, norm_first=True)
    assert copied_layers(dataclasses.replace(teacher, num_layers=3), teacher) == [0, 1, 2]
    assert copied_layers(dataclasses.replace(teacher, num_layers=1), teacher) == [0]
    for change in ({"hidden_dim": 128, "intermediate_dim": 512}, {"intermediate_dim": 512}, {"num_heads": 8},
                   {"max_position": 128}, {"norm_first": False}, {"vocabulary_size": 99}):
        assert copied_layers(dataclasses.replace(teacher, num_layers=2, **change), teacher) is None, change


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    # A seeded random teacher (peaked logits, no training needed): whatever the student knows
    # of its predictions it learned from the distillation.
    return make_tiny_run(tmp_path_factory.mktemp("distill") / "teacher")


@pytest.fixture(scope="module")
def corpus(teacher_run):
    return write_corpus(Path(teacher_run).parent / "animals.txt", SENTENCES)


def distill_printing(argv):
    """(exit status, stdout) of `kmlm distill ...` run in-process."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["distill", *argv])
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def student_printed(teacher_run, corpus):
    # alpha 1: the teacher's soft targets alone, no true tokens. Narrower than the teacher, so
    # it starts from random weights.
    out = os.path.join(os.path.dirname(teacher_run), "student")
    code, printed = distill_printing([
        teacher_run, "--corpus", corpus, "--out", out, *STUDENT, "--steps", "80", "--alpha", "1", "--temperature",
        "1.5", "--learning-rate", "3e-3", "--batch-size", "16", "--eval-batches", "1", *QUICK])
    assert code == 0
    return out, printed


@pytest.fixture(scope="module")
def student_run(student_printed):
    return student_printed[0]


def held_out_top1(model, batches):
    """Top-1 ids at the masked slots (weight > 0) of `batches`."""
    return np.concatenate([np.asarray(model(x)).argmax(-1)[np.asarray(w) > 0] for x, _, w in batches])


@pytest.mark.slow
def test_the_student_is_an_ordinary_run_on_the_teachers_data(teacher_run, student_run, corpus):
    for name in ("config.json", "vocab.txt", "model.keras", "metrics.csv", "evaluation.json"):
        assert os.path.isfile(os.path.join(student_run, name)), name
    with open(os.path.join(teacher_run, "vocab.txt"), "rb") as t, open(os.path.join(student_run, "vocab.txt"), "rb") as s:
        assert t.read() == s.read()
    teacher, student = load_run(teacher_run), load_run(student_run)
    for key in ("seq_len", "masking", "mask_rate", "lowercase", "packing", "eval_fraction"):
        assert getattr(student.config.data, key) == getattr(teacher.config.data, key), key
    assert student.config.data.corpus == corpus
    assert (student.model_config.num_layers, student.model_config.hidden_dim) == (1, 16)
    training = student.config.training
    assert (training["teacher"], training["temperature"], training["alpha"]) == (teacher_run, 1.5, 1.0)
    assert training["teacher_layers"] is None


@pytest.mark.slow
def test_a_narrower_student_says_it_starts_from_random_weights(student_printed):
    lines = [line for line in student_printed[1].splitlines() if "random weights" in line]
    assert lines == ["the student starts from random weights because the widths differ: the student's hidden_dim "
                     "is 16, the teacher's 32 (leave out --preset and the size flags to start from the teacher)"]


def test_the_default_student_is_the_teacher_with_half_its_layers(teacher_run):
    teacher = load_run(teacher_run).model_config
    settings = DistillSettings.from_teacher(teacher_run, steps=1)
    settings.validate()
    assert settings.model_config(teacher.vocabulary_size) == dataclasses.replace(teacher, num_layers=1)
    assert settings.teacher_layers == [0]
    assert settings.describe_start() == ("the student (L1/H32) starts from the teacher's embeddings, MLM head and "
                                         "blocks 0 of 2")
    off = DistillSettings.from_teacher(teacher_run, steps=1, init_from_teacher=False)
    assert off.teacher_layers is None
    assert off.describe_start() == "the student starts from random weights (--no-init-from-teacher)"


def test_the_objective_starts_the_student_from_the_teacher_unless_told_not_to(teacher_run):
    teacher = load_run(teacher_run).model
    block = {f"block_0/{path.split('/', 1)[1]}": value for path, value in weights_by_path(teacher).items()
             if path.startswith("block_0/")}
    for init in (True, False):
        settings = DistillSettings.from_teacher(teacher_run, steps=1, init_from_teacher=init)
        keras.utils.set_random_seed(7)  # not the teacher's seed 0: its weights would be the student's
        random_start = weights_by_path(build_mlm_model(settings.model_config(teacher.config.vocabulary_size)))
        keras.utils.set_random_seed(7)
        student = build_mlm_model(settings.model_config(teacher.config.vocabulary_size))
        Distillation(settings).trainer(student)
        got = weights_by_path(student)
        for path, value in block.items():
            if init or path.endswith("kernel"):  # biases and LayerNorms start at 0 and 1 in both
                assert np.array_equal(got[path], value) == init, (init, path)
        assert np.array_equal(got["embedding/token_embeddings"], np.array(teacher.encoder.embedding.weights[0])) == init
        if not init:  # exactly the seeded random weights a student of that shape starts from
            assert all(np.array_equal(got[path], value) for path, value in random_start.items())


@pytest.mark.slow
def test_the_default_student_trains_from_the_teacher_and_records_its_layers(teacher_run, corpus, tmp_path):
    out = str(tmp_path / "half")
    code, printed = distill_printing([teacher_run, "--corpus", corpus, "--out", out, "--steps", "1",
                                      "--batch-size", "8", "--eval-batches", "1", *QUICK])
    assert code == 0
    assert "the student (L1/H32) starts from the teacher's embeddings, MLM head and blocks 0 of 2" in printed
    student, teacher = load_run(out), load_run(teacher_run)
    assert student.model_config == dataclasses.replace(teacher.model_config, num_layers=1)
    assert student.config.training["teacher_layers"] == [0]


@pytest.mark.slow
def test_the_student_learns_the_teachers_predictions(teacher_run, student_run):
    teacher, student = load_run(teacher_run), load_run(student_run)
    keras.utils.set_random_seed(0)  # the seed the student started from
    untrained = build_mlm_model(student.model_config)
    # The whole corpus (its held-out split is a few sentences).
    batches = list(eval_dataset(student.config.data, student.vocabulary, corpus=student.config.data.corpus).take(4))
    target = held_out_top1(teacher.model, batches)
    agreement = np.mean(held_out_top1(student.model, batches) == target)
    before = np.mean(held_out_top1(untrained, batches) == target)
    assert agreement > before + 0.2, (agreement, before)


@pytest.mark.slow
def test_evaluate_and_fill_mask_read_the_student(student_run, capsys):
    code, out, err = run_cli(["evaluate", student_run, "--json"], capsys)
    assert code == 0, err
    metrics = json.loads(out)
    with open(os.path.join(student_run, "evaluation.json")) as file:
        recorded = json.load(file)
    assert metrics["masked_accuracy"] == pytest.approx(recorded["masked_accuracy"])
    assert metrics["loss"] == pytest.approx(recorded["loss"], rel=1e-5)

    code, out, err = run_cli(["fill-mask", student_run, "the big cat [MASK] on a red mat .", "--json"], capsys)
    assert code == 0, err
    predicted = json.loads(out)["masks"][0]["predictions"][0]["token"]
    run = load_run(student_run)
    words = ["[CLS]", "the", "big", "cat", "[MASK]", "on", "a", "red", "mat", ".", "[SEP]"]
    ids = np.array([[run.vocabulary.index(word) for word in words]], "int32")
    logits = np.array(run.model({"token_ids": ids, "segment_ids": 0 * ids, "document_ids": 0 * ids + 1,
                                   "mask_positions": np.array([[4]], "int32")}))[0, 0]
    logits[never_predicted(run.vocabulary)] = -np.inf
    assert predicted == run.vocabulary[int(logits.argmax())]


def _refusal(argv, capsys):
    code, out, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("kmlm distill: error: "), err
    return lines[0][len("kmlm distill: error: "):]


def test_refuses_a_teacher_that_is_not_a_pretraining_run(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "out")
    assert _refusal(["distill", str(empty), "--out", out], capsys) == (
        f"teacher {str(empty)!r} is not a pretraining run (no config.json); pass the --out of a finished "
        "`kmlm pretrain` (or `kmlm convert`) run")
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.json").write_text("{}")
    assert _refusal(["distill", str(task), "--out", out], capsys) == (
        f"teacher {str(task)!r} is a fine-tuned task model, not a pretraining run; distil from the run directory "
        "it was fine-tuned from")
    assert not os.path.exists(out)


@pytest.mark.slow
def test_refuses_a_student_as_large_as_the_teacher(teacher_run, tmp_path, capsys):
    message = _refusal(["distill", teacher_run, "--out", str(tmp_path / "out"), "--preset", "tiny", *TEACHER],
                       capsys)
    size = load_run(teacher_run).model.count_params()
    # The same blocks, but the tiny preset's 512 positions against the teacher's 64, and the final
    # LayerNorm of pretraining's pre-LN blocks.
    student = build_mlm_model(ModelConfig.from_preset("tiny", vocabulary_size=21, num_layers=2, hidden_dim=32,
                                                      num_heads=4, intermediate_dim=64, norm_first=True)).count_params()
    assert message == (
        f"the student (L2/H32, {student:,} parameters) is not smaller than the teacher (L2/H32, {size:,}); choose "
        "a smaller --preset (e.g. tiny) or smaller --num-layers/--hidden-dim")


@pytest.mark.slow
@pytest.mark.parametrize("flag, value, message", [
    ("--temperature", "0", "--temperature 0.0 must be a positive number, e.g. 2"),
    ("--temperature", "nan", "--temperature nan must be a positive number, e.g. 2"),
    ("--alpha", "1.5", "--alpha 1.5 must be in [0, 1] (the weight of the teacher's soft targets), e.g. 0.5"),
])
def test_refuses_a_bad_temperature_or_alpha(teacher_run, tmp_path, capsys, flag, value, message):
    assert _refusal(["distill", teacher_run, "--out", str(tmp_path / "out"), *STUDENT, flag, value], capsys) == message


@pytest.mark.slow
def test_refuses_an_out_that_is_not_empty(teacher_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _refusal(["distill", teacher_run, "--out", str(out), *STUDENT], capsys) == (
        f"--out {str(out)!r} exists and is not a kmlm run directory; choose a new --out")
    assert sorted(os.listdir(out)) == ["notes.txt"]

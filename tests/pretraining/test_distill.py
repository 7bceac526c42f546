"""`kmlm distill`: the soft-target loss against NumPy, the trainer's loss and gradients, a
distilled run directory that `fill-mask` and `evaluate` read, and the one-line refusals."""

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
from kmlm.pretraining.distill import DistillationTrainer, soft_target_loss
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


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    # A seeded random teacher (peaked logits, no training needed): whatever the student knows
    # of its predictions it learned from the distillation.
    return make_tiny_run(tmp_path_factory.mktemp("distill") / "teacher")


@pytest.fixture(scope="module")
def corpus(teacher_run):
    return write_corpus(Path(teacher_run).parent / "animals.txt", SENTENCES)


@pytest.fixture(scope="module")
def student_run(teacher_run, corpus):
    # alpha 1: the teacher's soft targets alone, no true tokens.
    out = os.path.join(os.path.dirname(teacher_run), "student")
    assert main(["distill", teacher_run, "--corpus", corpus, "--out", out, *STUDENT, "--steps", "40", "--alpha", "1",
                 "--temperature", "1.5", "--learning-rate", "3e-3", "--batch-size", "16", "--eval-batches", "1",
                 *QUICK]) == 0
    return out


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
    message = _refusal(["distill", teacher_run, "--out", str(tmp_path / "out"), *TEACHER], capsys)
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

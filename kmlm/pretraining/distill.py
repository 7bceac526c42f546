"""Distillation behind `kmlm distill`: a smaller student learns a pretrained teacher's
masked-LM distributions.

The student is trained by the one pretraining job (`kmlm.pretraining.job`) on the teacher's
vocabulary, corpus and packing/masking settings; only the objective differs. At every masked
slot the loss is

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * cross-entropy(label)

(Hinton et al.'s temperature-scaled soft targets: T^2 keeps the soft term's gradients on the
scale of the hard one). The teacher runs frozen, without dropout, inside the same compiled
train step. The result is an ordinary run directory: `kmlm fill-mask`, `evaluate`, `finetune`
and `export` read it as any other.

By default the student is the teacher with half its layers (rounded up), started as
DistilBERT starts: the teacher's embeddings, MLM head and every k-th of its blocks (blocks 0
and 2 of 4). A student of another width (a `--preset`, `--hidden-dim`, ...) starts from
random weights.
"""

import dataclasses
import math
import os

import keras
import tensorflow as tf
from keras import ops

from kmlm import run_directory as rd
from kmlm.model import build_mlm_model
from kmlm.pretraining.job import PretrainingJob
from kmlm.pretraining.objectives import MaskedLanguageModeling
from kmlm.pretraining.recipe import default_learning_rate, default_warmup
from kmlm.pretraining.settings import PretrainSettings
from kmlm.termination import stop_on_sigterm
from kmlm.training import compile_for_pretraining

DEFAULT_TEMPERATURE = 2.0
DEFAULT_ALPHA = 0.5
TASK_FILE = "task.json"  # what a fine-tuned model directory holds instead of config.json


@dataclasses.dataclass
class DistillSettings(PretrainSettings):
    """`PretrainSettings` of the student plus the teacher and the distillation loss.

    Use `from_teacher` to take the corpus, vocabulary, row length and masking from the teacher.

    Args (besides those of `PretrainSettings`):
        preset: The student's preset; None (the default): the teacher's own shape with half its
            layers (`student_layers`), which `model_overrides` may still change.
        teacher: The teacher's run directory (a finished `kmlm pretrain` or `kmlm convert` run).
        temperature: T of the soft targets, > 0 (1: the teacher's own distribution).
        alpha: Weight of the soft (KL) term in [0, 1]; 1 - alpha weighs the hard labels.
        init_from_teacher: Start a student of the teacher's width from the teacher's
            embeddings, MLM head and blocks `teacher_layers` (False: random weights).
    """

    preset: str | None = None
    teacher: str | None = None
    temperature: float = DEFAULT_TEMPERATURE
    alpha: float = DEFAULT_ALPHA
    init_from_teacher: bool = True

    @classmethod
    def from_teacher(cls, teacher, **values):
        """Settings whose data side (corpus, vocabulary, case, rows, masking, held-out share)
        is the teacher's unless `values` names it; `values` sets anything else.

        Example (needs a trained teacher, so not run here):
        >>> settings = DistillSettings.from_teacher("runs/mini", preset="tiny", steps=500)  # doctest: +SKIP
        >>> settings.vocab  # doctest: +SKIP
        'runs/mini/vocab.txt'
        """
        data = teacher_config(teacher).data
        inherited = dict(
            corpus=data.corpus, one_per_line=data.one_per_line, seq_len=data.seq_len, masking=data.masking,
            mask_rate=data.mask_rate, mask_token_rate=data.mask_token_rate, random_token_rate=data.random_token_rate,
            lowercase=data.lowercase, packing=data.packing, eval_fraction=data.eval_fraction,
            segmenter=data.segmenter, vocab=os.path.join(teacher, rd.VOCAB_FILE),
        )
        inherited.update({key: value for key, value in values.items() if value is not None})
        if inherited.get("preset") is None:  # the teacher's width: its learning rate too
            teacher_preset = teacher_config(teacher).training.get("preset")
            inherited.setdefault("learning_rate", default_learning_rate(teacher_preset))
            inherited.setdefault("warmup", default_warmup(teacher_preset))
        return cls(teacher=teacher, **inherited)

    def model_config(self, vocabulary_size):
        """The student's `ModelConfig`: the preset's as in `kmlm pretrain`, or with no preset the
        teacher's own with `student_layers` blocks, then the size overrides."""
        if self.preset is not None:
            return super().model_config(vocabulary_size)
        teacher = teacher_config(self.teacher).model
        values = {"num_layers": student_layers(teacher.num_layers), **self.model_overrides}
        return dataclasses.replace(teacher, vocabulary_size=vocabulary_size, **values)

    @property
    def teacher_layers(self):
        """The teacher's blocks that the student's blocks start from, in order (config.json
        records them); None when the student starts from random weights."""
        if not self.init_from_teacher:
            return None
        teacher = teacher_config(self.teacher).model
        return copied_layers(self.model_config(teacher.vocabulary_size), teacher)

    def describe_start(self):
        """One line: which teacher weights the student starts from, or why it starts from random ones."""
        teacher = teacher_config(self.teacher).model
        student = self.model_config(teacher.vocabulary_size)
        layers = copied_layers(student, teacher)
        if layers is not None and self.init_from_teacher:
            return (f"the student (L{student.num_layers}/H{student.hidden_dim}) starts from the teacher's embeddings, "
                    f"MLM head and blocks {', '.join(map(str, layers))} of {teacher.num_layers}")
        if layers is not None:
            return "the student starts from random weights (--no-init-from-teacher)"
        return (f"the student starts from random weights because the widths differ: {width_difference(student, teacher)}"
                " (leave out --preset and the size flags to start from the teacher)")

    def validate(self):
        """The checks of `PretrainSettings`, then the loss, the teacher and the student's size."""
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"--temperature {self.temperature} must be a positive number, e.g. {DEFAULT_TEMPERATURE:g}")
        if not math.isfinite(self.alpha) or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha {self.alpha} must be in [0, 1] (the weight of the teacher's soft targets), "
                             f"e.g. {DEFAULT_ALPHA:g}")
        if self.distribution != "default" or self.data_service:
            raise ValueError("kmlm distill runs on one device; leave --strategy default")
        if self.objective != "mlm":
            raise ValueError(f"--objective {self.objective}: distillation trains the masked-LM head only")
        config = teacher_config(self.teacher)
        super().validate()
        check_student(self.model_config(config.model.vocabulary_size), config.model, self.seq_len)


def teacher_config(teacher):
    """The `RunConfig` of a finished run that can teach; a one-line error for anything else."""
    if teacher is None:
        raise ValueError("give the teacher's run directory (TEACHER_RUN)")
    if os.path.isfile(os.path.join(teacher, TASK_FILE)):
        raise ValueError(f"teacher {teacher!r} is a fine-tuned task model, not a pretraining run; distil from the run "
                         "directory it was fine-tuned from")
    if not os.path.isdir(teacher) or not os.path.isfile(os.path.join(teacher, rd.CONFIG_FILE)):
        raise ValueError(f"teacher {teacher!r} is not a pretraining run (no {rd.CONFIG_FILE}); pass the --out of a "
                         "finished `kmlm pretrain` (or `kmlm convert`) run")
    config = rd.RunConfig.read(teacher)
    if not os.path.isfile(os.path.join(teacher, rd.MODEL_FILE)):
        raise ValueError(f"teacher {teacher!r} has no {rd.MODEL_FILE}: its training did not finish; re-run its "
                         "`kmlm pretrain` command to finish it first")
    if not config.has_masked_lm_head:
        raise ValueError(f"teacher {teacher!r} has no trained masked-LM head (its checkpoint had none), so it has no "
                         "distributions to teach; convert a checkpoint with an MLM head")
    return config


def student_layers(teacher_layers):
    """The default student's blocks: half the teacher's, rounded up.

    Example:
    >>> [student_layers(n) for n in (1, 2, 4, 12, 24)]
    [1, 1, 2, 6, 12]
    """
    return max(1, math.ceil(teacher_layers / 2))


# ModelConfig fields a student must share with its teacher to start from the teacher's weights:
# the shapes of the embeddings, blocks and head, and what the weights mean.
WIDTH_FIELDS = ("vocabulary_size", "hidden_dim", "num_heads", "intermediate_dim", "max_position", "num_segments",
                "embedding_dim", "activation", "gated_ffn", "norm_first", "share_layers")


def width_difference(student, teacher):
    """The first `WIDTH_FIELDS` difference of two `ModelConfig`s, in words; None when they share them."""
    for field in WIDTH_FIELDS:
        mine, theirs = getattr(student, field), getattr(teacher, field)
        if mine != theirs:
            return f"the student's {field} is {mine}, the teacher's {theirs}"
    return None


def copied_layers(student, teacher):
    """The teacher blocks that a student of the teacher's width starts from: every k-th, from
    block 0 (DistilBERT: every other one); None when the widths differ.

    Example:
    >>> from kmlm.config import ModelConfig
    >>> teacher = ModelConfig.from_preset("mini")
    >>> copied_layers(dataclasses.replace(teacher, num_layers=2), teacher)
    [0, 2]
    >>> copied_layers(ModelConfig.from_preset("tiny"), teacher) is None
    True
    """
    if width_difference(student, teacher) is not None or teacher.share_layers:
        return None
    return [i * teacher.num_layers // student.num_layers for i in range(student.num_layers)]


def init_from_teacher(student, teacher, layers):
    """Copies into the `MaskedLMModel` `student` the teacher's embeddings, MLM head, final
    LayerNorm (pre-LN) and, into its block j, the teacher's block `layers[j]`.

    Example:
    >>> import numpy as np
    >>> from kmlm.config import ModelConfig
    >>> teacher = build_mlm_model(ModelConfig.from_preset("tiny", vocabulary_size=50, num_layers=4))
    >>> student = build_mlm_model(ModelConfig.from_preset("tiny", vocabulary_size=50, num_layers=2))
    >>> init_from_teacher(student, teacher, [0, 2])
    >>> all(np.array_equal(a, b) for a, b in zip(student.encoder.block(1).get_weights(),
    ...                                             teacher.encoder.block(2).get_weights()))
    True
    """
    pairs = [(student.encoder.embedding, teacher.encoder.embedding),
             (student.get_layer("mlm_head"), teacher.get_layer("mlm_head"))]
    pairs += [(student.encoder.block(j), teacher.encoder.block(i)) for j, i in enumerate(layers)]
    if student.config.norm_first:
        pairs.append((student.encoder.get_layer("final_norm"), teacher.encoder.get_layer("final_norm")))
    for mine, theirs in pairs:
        mine.set_weights(theirs.get_weights())


def parameter_count(config):
    """The parameters of the `MaskedLMModel` of `config` (built, not trained)."""
    return build_mlm_model(config).count_params()


def check_student(student, teacher, seq_len):
    """Refuses a student that is not smaller than the teacher or cannot read its rows.

    Args:
        student: The student's `ModelConfig` (the teacher's vocabulary size).
        teacher: The teacher's `ModelConfig`.
        seq_len: The row length both models read.
    """
    if seq_len > teacher.max_position:
        raise ValueError(f"--seq-len {seq_len} exceeds the teacher's max_position={teacher.max_position}; "
                         f"distil with --seq-len <= {teacher.max_position}")
    student_size, teacher_size = parameter_count(student), parameter_count(teacher)
    if student_size >= teacher_size:
        raise ValueError(
            f"the student (L{student.num_layers}/H{student.hidden_dim}, {student_size:,} parameters) is not smaller "
            f"than the teacher (L{teacher.num_layers}/H{teacher.hidden_dim}, {teacher_size:,}); choose a smaller "
            "--preset (e.g. tiny) or smaller --num-layers/--hidden-dim"
        )


class DistillationTrainer(keras.Model):
    """The student `MaskedLMModel` trained against a frozen teacher.

    `call` returns the student's logits (so the compiled metrics are the student's); the loss
    adds to the compiled hard-label loss the teacher's temperature-scaled soft targets
    (see the module docstring). `fit` trains only the student's weights.

    Args:
        student: The `MaskedLMModel` being trained.
        teacher: A `MaskedLMModel` with the same vocabulary (frozen here).
        temperature: T of the soft targets.
        alpha: Weight of the soft term; 1 - alpha weighs the hard labels.

    Example:
    >>> import numpy as np
    >>> from kmlm.config import ModelConfig
    >>> teacher = build_mlm_model(ModelConfig.from_preset("mini", vocabulary_size=50))
    >>> student = build_mlm_model(ModelConfig.from_preset("tiny", vocabulary_size=50))
    >>> trainer = DistillationTrainer(student, teacher, temperature=2.0, alpha=0.5)
    >>> x = {"token_ids": np.ones((2, 8), "int32"), "segment_ids": np.zeros((2, 8), "int32"),
    ...      "document_ids": np.ones((2, 8), "int32"), "mask_positions": np.ones((2, 3), "int32")}
    >>> tuple(trainer(x).shape), len(trainer.trainable_weights) == len(student.trainable_weights)
    ((2, 3, 50), True)
    """

    def __init__(self, student, teacher, temperature=DEFAULT_TEMPERATURE, alpha=DEFAULT_ALPHA, **kwargs):
        kwargs.setdefault("name", "distillation")
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        hard = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if self.alpha == 0.0:
            return hard
        teacher_logits = self.teacher(x, training=False)
        soft = soft_target_loss(teacher_logits, y_pred, self.temperature, sample_weight)
        return (1.0 - self.alpha) * hard + self.alpha * soft


def soft_target_loss(teacher_logits, student_logits, temperature, weights=None):
    """T^2 x the weighted mean over slots of KL(softmax(teacher / T) || softmax(student / T)).

    Args:
        teacher_logits, student_logits: float [B, P, V] at the same masked slots.
        temperature: T > 0.
        weights: [B, P] slot weights (0 for padding slots); None weighs every slot 1.

    Example:
    >>> import numpy as np
    >>> logits = np.array([[[2.0, 0.0, -1.0]]], "float32")
    >>> float(soft_target_loss(logits, logits, 2.0))  # same distributions: no divergence
    0.0
    """
    scale = float(temperature)
    teacher = ops.stop_gradient(ops.cast(teacher_logits, "float32")) / scale
    student = ops.cast(student_logits, "float32") / scale
    teacher_log_p = ops.log_softmax(teacher, axis=-1)
    divergence = ops.sum(ops.exp(teacher_log_p) * (teacher_log_p - ops.log_softmax(student, axis=-1)), axis=-1)
    weights = ops.ones_like(divergence) if weights is None else ops.cast(weights, "float32")
    mean = ops.divide_no_nan(ops.sum(divergence * weights), tf.stop_gradient(ops.sum(weights)))
    return scale * scale * mean


class Distillation(MaskedLanguageModeling):
    """The objective of a distillation run: the masked-LM batches of `--objective mlm`, and a
    `DistillationTrainer` around the student with the teacher loaded from its run directory."""

    name = "distill"
    recorded_keys = ("teacher", "temperature", "alpha", "teacher_layers")

    def trainer(self, model):
        settings = self.settings
        teacher = rd.load_run(settings.teacher).model
        layers = settings.teacher_layers
        if layers is not None:  # a resumed run then restores its own weights over these
            init_from_teacher(model, teacher, layers)
        return DistillationTrainer(model, teacher, temperature=settings.temperature, alpha=settings.alpha)

    def compile(self, trainer, **options):
        return compile_for_pretraining(trainer, **options)

    def describe(self, model, length):
        settings = self.settings
        config = model.config
        student = settings.preset or f"L{config.num_layers}/H{config.hidden_dim}"
        start = ("random weights" if settings.teacher_layers is None
                 else f"teacher blocks {', '.join(map(str, settings.teacher_layers))}")
        return (f"distilling {settings.teacher} into {student} ({model.count_params():,} parameters, from {start}) for "
                f"{length}, temperature {settings.temperature:g}, alpha {settings.alpha:g}, "
                f"{settings.batch_size}x{settings.seq_len} tokens a step, {settings.masking} masking at "
                f"{settings.mask_rate}")


class DistillationJob(PretrainingJob):
    """The pretraining job with the `Distillation` objective."""

    def __init__(self, out, settings, verbose=1):
        super().__init__(out, settings, verbose)
        self.objective = Distillation(settings)


def distill(out, settings, verbose=1):
    """Distils `settings.teacher` into a student run directory `out`.

    Like `kmlm.pretraining.job.pretrain`, re-running the same call after a kill resumes.

    Returns:
        dict of the student's held-out metrics (also in `out`/evaluation.json).

    Example (minutes of training, so not run here):
    >>> distill("runs/tiny-student", DistillSettings.from_teacher("runs/mini", steps=500))  # doctest: +SKIP
    """
    settings.validate()
    job = DistillationJob(out, settings, verbose)
    with stop_on_sigterm(job.describe_termination):
        return job.run()

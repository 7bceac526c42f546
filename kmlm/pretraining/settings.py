"""The settings of a pretraining job (the flags of `kmlm pretrain`) and their checks."""

import dataclasses
import math
import os

from kmlm.config import ModelConfig
from kmlm.pipelines import MaskingConfig, check_seq_len
from kmlm.pretraining import distributed
from kmlm.pretraining.recipe import (ADAM_BETA2, ADAM_EPSILON, BATCH_SIZE, CLIP_NORM, DECAY, MASK_RATE, PRETRAINING_MODEL,
                                     SEQ_LEN, default_learning_rate, default_warmup)
from kmlm.training import PRECISIONS, SCHEDULES

DISTRIBUTIONS = distributed.STRATEGIES
OBJECTIVES = ("mlm", "mlm+nsp", "mlm+sop")
DEFAULT_STEPS = 1000
# Under --time-budget the run has no step count: it is cut into epochs of this many steps
# (the points of metrics.csv, checkpoints and the resumable backup).
BUDGET_EPOCH_STEPS = 50
BUDGET_EPOCHS = 1_000_000

@dataclasses.dataclass
class PretrainSettings:
    """Everything `pretrain` needs besides the output directory (the CLI flags).

    Example:
    >>> settings = PretrainSettings(preset="tiny", steps=50, seq_len=64, batch_size=8, log_points=5)
    >>> settings.validate()
    >>> settings.schedule()
    (10, 5)
    >>> PretrainSettings(time_budget=8).schedule()  # epochs of 50 steps until the budget is spent
    (50, 1000000)
    """

    corpus: str | None = None
    one_per_line: bool = False
    preset: str = "mini"
    steps: int | None = None
    time_budget: float | None = None
    seq_len: int = SEQ_LEN
    batch_size: int = BATCH_SIZE
    masking: str = "token"
    mask_rate: float = MASK_RATE
    segmenter: str | None = None
    mask_token_rate: float = 0.8
    random_token_rate: float = 0.1
    vocab: str | None = None
    vocab_size: int = 8192
    vocab_method: str = "fast"
    lowercase: bool = True
    packing: bool = True
    learning_rate: float | None = None  # None: default_learning_rate(preset)
    warmup_steps: int | None = None
    warmup: float | None = None  # None: default_warmup(preset)
    lr_schedule: str = "linear"
    decay: float | None = None  # the fall's share of the run; None: DECAY (none for the constant schedule)
    weight_decay: float = 0.01
    clip_norm: float = CLIP_NORM  # 0: no clipping
    adam_beta2: float = ADAM_BETA2
    adam_epsilon: float = ADAM_EPSILON
    precision: str = "float32"
    jit_compile: bool = True
    seed: int = 0
    eval_fraction: float = 0.02
    eval_batches: int = 4
    log_points: int = 20
    distribution: str = "default"
    data_service: str | None = None
    model_overrides: dict = dataclasses.field(default_factory=dict)
    init_embeddings: str | None = None
    objective: str = "mlm"

    def __post_init__(self):
        if self.learning_rate is None:
            self.learning_rate = default_learning_rate(self.preset)
        if self.warmup is None:
            self.warmup = default_warmup(self.preset)
        if self.decay is None and self.lr_schedule != "constant":
            self.decay = DECAY

    def model_config(self, vocabulary_size):
        """The preset's `ModelConfig` with the pretraining recipe (`PRETRAINING_MODEL`) and the
        overrides of the command line."""
        values = {**PRETRAINING_MODEL, **self.model_overrides}
        config = ModelConfig.from_preset(self.preset, vocabulary_size=vocabulary_size, **values)
        if self.seq_len > config.max_position:
            raise ValueError(
                f"seq_len={self.seq_len} exceeds the model's max_position={config.max_position}; "
                f"pretrain with --seq-len <= {config.max_position}"
            )
        return config

    def masking_config(self):
        return MaskingConfig(
            strategy=self.masking,
            rate=self.mask_rate,
            mask_token_rate=self.mask_token_rate,
            random_token_rate=self.random_token_rate,
            seed=self.seed,
            segmenter=self.segmenter,
        )

    @property
    def vocabulary_source(self):
        """How the vocabulary was made, as config.json records it: the learner, or "file:PATH"."""
        return self.vocab_method if self.vocab is None else f"file:{self.vocab}"

    @property
    def total_steps(self):
        """The steps of a run by steps (--steps, default 1000); None under a time budget."""
        if self.time_budget is not None:
            return None
        return DEFAULT_STEPS if self.steps is None else self.steps

    @property
    def budget_seconds(self):
        return None if self.time_budget is None else 60.0 * self.time_budget

    def schedule(self):
        """(steps_per_epoch, epochs): the run is split into `log_points` Keras epochs so that
        metrics.csv, checkpoints and BackupAndRestore have that many points; under a time
        budget, into epochs of `BUDGET_EPOCH_STEPS` until the budget stops it."""
        if self.time_budget is not None:
            return BUDGET_EPOCH_STEPS, BUDGET_EPOCHS
        steps = self.total_steps
        steps_per_epoch = max(1, math.ceil(steps / max(1, self.log_points)))
        return steps_per_epoch, math.ceil(steps / steps_per_epoch)

    def warmup_steps_for(self, total_steps):
        """Warmup of a run by steps: --warmup-steps, or the --warmup share of `total_steps`."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        if self.warmup == 0:
            return 0
        return max(1, round(self.warmup * total_steps))

    def decay_steps_for(self, total_steps):
        """Steps of the fall of a run by steps: the --decay share of `total_steps` (None: no fall)."""
        return None if self.decay is None else max(1, round(self.decay * total_steps))

    def validate(self):
        """Raises a one-line ValueError (or FileNotFoundError) naming the first bad setting."""
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps {self.steps} must be at least 1")
        if self.time_budget is not None:
            if self.steps is not None:
                raise ValueError("give --steps or --time-budget, not both: a run goes by steps or by time")
            if not math.isfinite(self.time_budget) or self.time_budget <= 0:
                raise ValueError(f"--time-budget {self.time_budget} must be a positive number of minutes, e.g. 8")
            if self.warmup_steps is not None:
                raise ValueError("--warmup-steps needs --steps; under --time-budget give --warmup as a share of the "
                                 "budget, e.g. --warmup 0.1")
            if self.distribution == "multi-worker":
                raise ValueError("--time-budget runs on one machine (workers would stop at different steps); "
                                 "use --steps with --strategy multi-worker")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps {self.warmup_steps} must be 0 or more (0: no warmup), e.g. 100")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"--warmup {self.warmup} must be a share of the run in [0, 1), e.g. 0.1")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.lr_schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.decay is not None:
            if not 0.0 < self.decay <= 1.0:
                raise ValueError(f"--decay {self.decay} must be a share of the run in (0, 1], e.g. 0.2")
            if self.lr_schedule == "constant":
                raise ValueError("--decay is the length of the fall; the constant schedule has none")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size} must be at least 1")
        if not self.clip_norm >= 0:
            raise ValueError(f"--clip-norm {self.clip_norm} must be 0 or more (0: no clipping), e.g. 1.0")
        if not 0 < self.adam_beta2 < 1:
            raise ValueError(f"--adam-beta2 {self.adam_beta2} must be in (0, 1), e.g. 0.98")
        if not self.adam_epsilon > 0:
            raise ValueError(f"--adam-epsilon {self.adam_epsilon} must be positive, e.g. 1e-6")
        check_seq_len(self.seq_len)
        self.masking_config()
        self.model_config(max(self.vocab_size, 8))
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown strategy {self.distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"--learning-rate {self.learning_rate} must be a positive number, e.g. 5e-4")
        self.validate_objective()
        if self.distribution == "multi-worker":
            if not self.vocab:
                raise ValueError(
                    "--strategy multi-worker needs --vocab FILE so that every worker uses the same vocabulary; "
                    "learn one first with `kmlm vocab`"
                )
            distributed.read_tf_config()
        if self.init_embeddings and not os.path.isfile(self.init_embeddings):
            raise FileNotFoundError(f"--init-embeddings {self.init_embeddings!r} is not a word vectors file")

    def validate_objective(self):
        """Refuses an unknown objective, and a sentence-pair one on more than one device."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.objective != "mlm" and (self.distribution != "default" or self.data_service):
            raise ValueError(f"--objective {self.objective} runs on one device; leave --strategy default")
        if self.objective != "mlm" and self.segmenter is not None:
            raise ValueError(f"--segmenter {self.segmenter} needs --objective mlm (sentence pairs are masked "
                             "without a segmenter)")

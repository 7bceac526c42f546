"""Fine-tuning a pretrained run on a labelled task, and evaluating task models.

```
OUT/task.json     task, labels, sequence length, settings, source run, final metrics
OUT/vocab.txt     the run's vocabulary
OUT/model.keras   the task model (classifier, tagger, span labeler for qa, or sentence encoder for similarity)
OUT/metrics.csv   per-epoch training loss and evaluation metrics
OUT/progress.json under --time-budget: the budget, the steps reached and the training seconds
```
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from kmlm.files import replace_atomically, write_json_atomically, write_text_atomically
from kmlm.pipelines import make_tokenizer, save_vocabulary, special_ids
from kmlm.statistics import pearson, spearman
from kmlm.tasks.datasets import pair_dataset, tag_dataset, text_dataset
from kmlm.tasks.examples import TASKS, TaskExamples, load_task_examples
from kmlm.tasks.metrics import accuracy, answer_scores, entity_scores, macro_f1
from kmlm.tasks.qa import DOC_STRIDE, MAX_ANSWER_LENGTH, MAX_QUERY_LENGTH, SpanReader, WindowSettings
from kmlm.termination import stop_on_sigterm
from kmlm.training import NonFiniteLossError, StopOnNonFiniteLoss, TrainingClock, make_optimizer, tf_data_fit

TASK_FILE = "task.json"
MODEL_FILE = "model.keras"
VOCAB_FILE = "vocab.txt"
METRICS_FILE = "metrics.csv"
PROGRESS_FILE = "progress.json"
# Marks a directory that a fine-tuning run is writing (or a killed one left): a re-run replaces it.
UNFINISHED_FILE = ".kmlm-unfinished"

# The metric that early stopping and "best epoch" follow, per task.
PRIMARY_METRIC = {"classify": "accuracy", "pair": "accuracy", "tag": "f1", "similarity": "spearman", "qa": "f1"}
NON_FINITE_LOSS_MESSAGE = "fine-tuning stopped: the loss became NaN; lower --learning-rate"


# The defaults that follow the model and the data (measured on keyword, pair, tagging and
# similarity toy tasks with tiny and mini encoders; the table is in the README). The peak
# learning rate falls as one over the hidden size: tiny learns best near 1e-3 and fails at
# 3e-3, mini learns at 3e-4 to 7e-4 and fails at 1.5e-3.
LEARNING_RATE_AT_128 = 1e-3
MIN_STEPS = 400  # without --epochs, enough passes for this many optimizer steps ...
MIN_EPOCHS = 3  # ... and never fewer passes than this
PATIENCE_STEPS = 200  # default patience: the epochs that span this many steps, at least 2
# Under --time-budget the run has no pass count: it is cut into epochs (one evaluation each)
# of one pass, but of at least and at most this many steps.
BUDGET_EPOCH_STEPS = (50, 500)
BUDGET_EPOCHS = 1_000_000


def default_learning_rate(hidden_dim):
    """The peak learning rate fine-tuning uses for an encoder of `hidden_dim` unless one is
    given: 1e-3 at 128 (tiny), falling as one over the hidden size.

    Example:
    >>> [round(default_learning_rate(h), 6) for h in (128, 256, 512, 768)]  # tiny, mini, small, base
    [0.001, 0.0005, 0.00025, 0.000167]
    """
    return LEARNING_RATE_AT_128 * 128 / hidden_dim


def default_epochs(steps_per_pass, min_steps=MIN_STEPS):
    """The passes over the training examples unless --epochs is given: enough for `min_steps`
    optimizer steps, and at least `MIN_EPOCHS`.

    Example:
    >>> default_epochs(19), default_epochs(400), default_epochs(1000)  # 600, 12800, 32000 examples at 32
    (22, 3, 3)
    """
    return max(MIN_EPOCHS, math.ceil(min_steps / steps_per_pass))


def default_patience(steps_per_epoch):
    """The epochs without improvement before early stopping unless --patience is given: those
    spanning `PATIENCE_STEPS` steps, at least 2. On small sets a model often sits at chance
    for a couple of hundred steps before it starts to learn; that plateau is no reason to stop.

    Example:
    >>> default_patience(19), default_patience(50), default_patience(400)
    (11, 4, 2)
    """
    return max(2, math.ceil(PATIENCE_STEPS / steps_per_epoch))


@dataclasses.dataclass
class FinetuneSchedule:
    """How long and how fast a fine-tuning run trains: the settings with every default worked
    out for one encoder and training set (`FinetuneSettings.schedule`; task.json records it).

    `total_steps` and `warmup_steps` are None under a time budget, where the rate follows the
    time spent (`budget_seconds`, warmup a share of it) and epochs go on until it is spent.
    """

    learning_rate: float
    steps_per_epoch: int
    epochs: int
    total_steps: int | None
    warmup_steps: int | None
    patience: int
    budget_seconds: float | None = None


@dataclasses.dataclass
class FinetuneSettings:
    """The options of `kmlm finetune` (see `kmlm finetune --help`). None means the default
    that follows the model and the data: `learning_rate` from the hidden size
    (`default_learning_rate`), `epochs` from `min_steps` (`default_epochs`), `patience` from
    the steps per epoch (`default_patience`). `time_budget` (minutes) replaces `epochs`.

    Example:
    >>> settings = FinetuneSettings(task="classify", train="train.jsonl", eval="dev.jsonl")
    >>> schedule = settings.schedule(hidden_dim=128, steps_per_pass=19)  # tiny, 600 examples
    >>> schedule.learning_rate, schedule.epochs, schedule.total_steps, schedule.warmup_steps
    (0.001, 22, 418, 41)
    >>> FinetuneSettings(train="t.jsonl", learning_rate=3e-4, epochs=2).schedule(128, 19).total_steps
    38
    """

    task: str = "classify"
    train: str = ""
    eval: str | None = None
    test: str | None = None
    seq_len: int = 128
    batch_size: int = 32
    epochs: int | None = None
    time_budget: float | None = None
    min_steps: int = MIN_STEPS
    learning_rate: float | None = None
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1
    patience: int | None = None
    pooling: str = "mean"
    contrastive: bool = False
    random_init: bool = False
    max_examples: int | None = None
    seed: int = 0
    jit_compile: bool = False
    doc_stride: int = DOC_STRIDE
    max_query_length: int = MAX_QUERY_LENGTH
    max_answer_length: int = MAX_ANSWER_LENGTH
    null_threshold: float | None = None

    def window_settings(self):
        """How qa examples become windows (`kmlm.tasks.qa.WindowSettings`)."""
        return WindowSettings(seq_len=self.seq_len, doc_stride=self.doc_stride, max_query_length=self.max_query_length)

    def validate(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if not self.train:
            raise ValueError("no training examples given; pass --train FILE or tfds:NAME")
        if self.seq_len < 4:
            raise ValueError(f"seq_len={self.seq_len} is too short; use at least 4")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate={self.learning_rate} must be in (0, 1)")
        if self.epochs is not None and self.time_budget is not None:
            raise ValueError("give --epochs or --time-budget, not both: a run goes by passes or by time")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs={self.epochs} must be at least 1")
        if self.time_budget is not None and not (math.isfinite(self.time_budget) and self.time_budget > 0):
            raise ValueError(f"--time-budget {self.time_budget} must be a positive number of minutes, e.g. 5")
        if self.min_steps < 1:
            raise ValueError(f"min_steps={self.min_steps} must be at least 1")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience={self.patience} must be at least 1")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction={self.warmup_fraction} must be in [0, 1)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.contrastive and self.task != "similarity":
            raise ValueError("--contrastive applies to --task similarity only")
        if self.task == "qa":
            self.window_settings().validate()
            if self.max_answer_length < 1:
                raise ValueError(f"max_answer_length={self.max_answer_length} must be at least 1")

    def schedule(self, hidden_dim, steps_per_pass):
        """The `FinetuneSchedule` of these settings for an encoder of `hidden_dim` and a
        training set of `steps_per_pass` batches; a value given in the settings wins."""
        learning_rate = self.learning_rate if self.learning_rate is not None else default_learning_rate(hidden_dim)
        if self.time_budget is not None:
            low, high = BUDGET_EPOCH_STEPS
            steps_per_epoch = min(max(steps_per_pass, low), high)
            return FinetuneSchedule(
                learning_rate=learning_rate, steps_per_epoch=steps_per_epoch, epochs=BUDGET_EPOCHS, total_steps=None,
                warmup_steps=None, patience=self.patience or default_patience(steps_per_epoch),
                budget_seconds=60.0 * self.time_budget)
        epochs = self.epochs if self.epochs is not None else default_epochs(steps_per_pass, self.min_steps)
        total_steps = steps_per_pass * epochs
        return FinetuneSchedule(
            learning_rate=learning_rate, steps_per_epoch=steps_per_pass, epochs=epochs, total_steps=total_steps,
            warmup_steps=max(1, int(self.warmup_fraction * total_steps)),
            patience=self.patience or default_patience(steps_per_pass))


@dataclasses.dataclass
class TaskInfo:
    """What a task model needs besides its weights (task.json)."""

    task: str
    labels: list
    seq_len: int
    lowercase: bool
    pooling: str = "mean"
    target_range: list | None = None
    doc_stride: int | None = None  # qa: the window settings, the answer search
    max_query_length: int | None = None
    max_answer_length: int | None = None
    null_threshold: float | None = None

    @classmethod
    def read(cls, path):
        task_path = os.path.join(path, TASK_FILE)
        if not os.path.isfile(task_path):
            raise ValueError(f"{path!r} is not a fine-tuned model directory (no {TASK_FILE}); pass the --out of "
                             "`kmlm finetune`")
        with open(task_path, encoding="utf-8") as f:
            record = json.load(f)
        fields = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in fields}), record


class Tasker:
    """A task model with its tokenizer: batches examples and turns model outputs into
    labels, tags or vectors. Used by fine-tuning, `kmlm predict`, `kmlm embed` and tests."""

    def __init__(self, model, vocabulary, info):
        self.model = model
        self.vocabulary = list(vocabulary)
        self.info = info
        self.tokenizer = make_tokenizer(self.vocabulary, lowercase=info.lowercase)
        self.ids = special_ids(self.vocabulary)
        # One graph for all batch shapes; eager calls would re-run every op from Python.
        self._forward = tf.function(lambda features: model(features, training=False), reduce_retracing=True)
        self._batches = {}  # tokenized batches of texts seen before (evaluation sets, every epoch)
        self._reader = None

    @classmethod
    def load(cls, path):
        """Loads a `kmlm finetune` output directory (safe mode)."""
        import kmlm.model  # noqa: F401  (registers the encoder classes)
        import kmlm.tasks.models  # noqa: F401  (registers the task head layers)
        from kmlm.pipelines import load_vocabulary

        info, _ = TaskInfo.read(path)
        model = keras.saving.load_model(os.path.join(path, MODEL_FILE), compile=False, safe_mode=True)
        return cls(model, load_vocabulary(os.path.join(path, VOCAB_FILE)), info)

    def _text_batches(self, texts, text_pairs=None, batch_size=32):
        key = (hash(tuple(texts)), None if text_pairs is None else hash(tuple(text_pairs)), batch_size)
        if key not in self._batches:
            if len(self._batches) > 8:
                self._batches.clear()
            examples = TaskExamples("pair" if text_pairs is not None else "classify", texts=list(texts),
                                    text_pairs=None if text_pairs is None else list(text_pairs))
            self._batches[key] = list(text_dataset(examples, self.tokenizer, self.ids, seq_len=self.info.seq_len,
                                                   batch_size=batch_size))
        return self._batches[key]

    def _outputs(self, dataset):
        return [np.asarray(self._forward(features)) for features in dataset]

    def class_probabilities(self, texts, text_pairs=None, batch_size=32):
        """Softmax over the labels [N, C] (classify, pair)."""
        logits = np.concatenate(self._outputs(self._text_batches(texts, text_pairs, batch_size)))
        logits = logits - logits.max(axis=1, keepdims=True)
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    def word_tags(self, sentences, batch_size=32):
        """Per-word tags of sentences given as lists of words (tag); a word with no piece in
        the row (too long a sentence) gets "O"."""
        examples = TaskExamples("tag", tokens=[list(words) for words in sentences])
        dataset = tag_dataset(examples, self.tokenizer, self.ids, seq_len=self.info.seq_len, batch_size=batch_size,
                              with_positions=True)
        outside = self.info.labels.index("O") if "O" in self.info.labels else None
        results, index = [], 0
        for features in dataset:
            positions = features.pop("word_positions").numpy()
            best = np.argmax(np.asarray(self._forward(features)), axis=-1)
            for row in range(positions.shape[0]):
                words = examples.tokens[index]
                index += 1
                tags = []
                for j in range(len(words)):
                    position = positions[row, j]
                    if position < 0:
                        tags.append("O" if outside is not None else self.info.labels[0])
                    else:
                        tags.append(self.info.labels[best[row, position]])
                results.append(tags)
        return results

    def answers(self, questions, contexts, batch_size=32):
        """The answer to each question in its context (qa): dicts with `answer`, `start`,
        `end` (character offsets, end exclusive; -1 for no answer), `score`, `null_score_diff`
        (see `kmlm.tasks.qa.SpanReader`)."""
        info = self.info
        if info.task != "qa":
            raise ValueError(f"answers need a qa model; this is a {info.task} model")
        if self._reader is None or self._reader.max_answer_length != info.max_answer_length:
            settings = WindowSettings(seq_len=info.seq_len, doc_stride=info.doc_stride,
                                      max_query_length=info.max_query_length)
            self._reader = SpanReader(self.model, self.tokenizer, self.ids, settings,
                                      max_answer_length=info.max_answer_length)
        self._reader.null_threshold = info.null_threshold  # applied after the graph: no new trace
        return self._reader.answers(questions, contexts, batch_size)

    def embed(self, texts, batch_size=32):
        """Sentence vectors [N, H] float32 (similarity models)."""
        outputs = self._outputs(self._text_batches(texts, None, batch_size))
        return np.concatenate(outputs) if outputs else np.zeros([0, self.model.output_shape[-1]], np.float32)


def unit_rows(vectors):
    """The rows of `vectors` scaled to unit L2 norm (zero rows stay zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def cosine_rows(a, b):
    """Cosine similarity of the rows of a with the matching rows of b."""
    return np.sum(unit_rows(a) * unit_rows(b), axis=1)


def evaluate_task(tasker, examples, batch_size=32):
    """The task's metrics on labelled examples, e.g. {"accuracy": .., "macro_f1": ..}."""
    info = tasker.info
    if info.task == "qa":
        found = tasker.answers(examples.texts, examples.text_pairs, batch_size)
        return answer_scores([a["answer"] for a in found], [[g["text"] for g in golds] for golds in examples.answers])
    if info.task in ("classify", "pair"):
        probabilities = tasker.class_probabilities(examples.texts, examples.text_pairs if info.task == "pair" else None,
                                                   batch_size)
        predicted = probabilities.argmax(axis=1)
        gold = np.array([info.labels.index(label) for label in examples.labels])
        return {"accuracy": accuracy(gold, predicted), "macro_f1": macro_f1(gold, predicted, len(info.labels)),
                "examples": len(gold)}
    if info.task == "tag":
        predicted = tasker.word_tags(examples.tokens, batch_size)
        scores = entity_scores(examples.tags, predicted)
        gold_flat = [t for row in examples.tags for t in row]
        predicted_flat = [t for row in predicted for t in row]
        scores["tag_accuracy"] = accuracy(gold_flat, predicted_flat)
        scores["sentences"] = len(predicted)
        return scores
    vectors_a = tasker.embed(examples.texts, batch_size)
    vectors_b = tasker.embed(examples.text_pairs, batch_size)
    cosines = cosine_rows(vectors_a, vectors_b)
    metrics = {"pairs": len(cosines)}
    if examples.labels is not None:
        metrics.update(spearman=_reported_correlation(spearman(cosines, examples.labels)),
                       pearson=_reported_correlation(pearson(cosines, examples.labels)))
    nearest_b = np.argmax(unit_rows(vectors_a) @ unit_rows(vectors_b).T, axis=1)
    metrics["retrieval_accuracy"] = accuracy(np.arange(len(vectors_a)), nearest_b)
    return metrics


def _reported_correlation(value):
    """A correlation as task.json and early stopping take it: constant cosines or scores have
    no correlation (NaN), reported as 0, no relation found."""
    return 0.0 if math.isnan(value) else value


class _EvaluateEachEpoch(keras.callbacks.Callback):
    """Adds `eval_<metric>` to the epoch logs (before EarlyStopping and CSVLogger see them).
    Under a time budget the clock stops while it scores, as it does for `fit`'s validation."""

    def __init__(self, tasker, examples, batch_size, clock=None):
        super().__init__()
        self.tasker, self.examples, self.batch_size, self.clock = tasker, examples, batch_size, clock

    def on_epoch_end(self, epoch, logs=None):
        if self.clock is not None:
            self.clock.on_test_begin()
        metrics = evaluate_task(self.tasker, self.examples, self.batch_size)
        if self.clock is not None:
            self.clock.on_test_end()
        for name, value in metrics.items():
            if isinstance(value, float):
                logs[f"eval_{name}"] = value


class EarlyStoppingAfterWarmup(keras.callbacks.EarlyStopping):
    """EarlyStopping that neither stops nor keeps a best epoch while `warmed_up()` is False:
    the metric of a model still warming up says nothing about where training goes."""

    def __init__(self, warmed_up, **kwargs):
        super().__init__(**kwargs)
        self.warmed_up = warmed_up

    def on_epoch_end(self, epoch, logs=None):
        if not self.warmed_up():
            self.start_from_epoch = epoch + 1
        super().on_epoch_end(epoch, logs)


def _labels_of(train, task, eval_sets):
    if task == "tag":
        tags = set(train.label_names())
        for examples in eval_sets:
            unknown = set(examples.label_names()) - tags
            if unknown:
                raise ValueError(f"evaluation tags {sorted(unknown)} never occur in the training examples")
        return sorted(tags, key=lambda t: (t != "O", t.partition("-")[2], t))
    if task in ("similarity", "qa"):
        return []
    labels = train.label_names()
    if len(labels) < 2:
        raise ValueError(f"the training examples have {len(labels)} distinct label(s); classification needs at least 2")
    for examples in eval_sets:
        unknown = set(examples.labels) - set(labels)
        if unknown:
            raise ValueError(f"evaluation labels {sorted(unknown, key=str)} never occur in the training examples")
    return labels


def _prepare_output(out, overwrite):
    if os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"--out {out!r} is a file; give a directory")
    if os.path.isdir(out) and os.path.isfile(os.path.join(out, UNFINISHED_FILE)) and not os.path.isfile(
            os.path.join(out, TASK_FILE)):
        shutil.rmtree(out)  # what a killed fine-tuning run left: it keeps no backup, so start again
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise ValueError(f"--out {out!r} exists and is not empty; choose a new --out or pass --overwrite")
        if not os.path.isfile(os.path.join(out, TASK_FILE)):
            raise ValueError(f"--overwrite refused: {out!r} is not a fine-tuned model directory")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    write_text_atomically(os.path.join(out, UNFINISHED_FILE), "a kmlm finetune run writes this directory\n")


@dataclasses.dataclass
class _FinetuneJob:
    """What one fine-tuning run works from: the pretrained `Run` and its directory, the
    output directory, the settings, the loaded examples and the label set."""

    run: object
    run_dir: str
    out: str
    settings: FinetuneSettings
    train: TaskExamples
    evaluation: TaskExamples | None
    test: TaskExamples | None
    labels: list
    verbose: int = 1


@dataclasses.dataclass
class _TaskTraining:
    """The task's half of a fine-tuning run: the model trained, the model saved (the same,
    or the sentence encoder inside a similarity trainer), its training batches, loss and
    metrics."""

    model: keras.Model
    saved: keras.Model
    dataset: tf.data.Dataset
    loss: keras.losses.Loss
    steps_per_pass: int
    metrics: list | None = None
    weighted_metrics: list | None = None


def finetune(run_dir, out, settings, *, overwrite=False, verbose=1):
    """Fine-tunes the encoder of a run directory on a task and writes OUT (see the module
    docstring). Returns the final metrics: {"eval": {...}, "test": {...}, "epochs": n,
    "steps": n, "learning_rate": peak, ...}; under a time budget also "train_seconds".

    Example:
    (Needs a run directory and example files, and trains: not run as a test.)
    >>> finetune("runs/demo", "runs/sentiment", FinetuneSettings(task="classify", train="train.jsonl",  # doctest: +SKIP
    ...                                                           eval="dev.jsonl"))["eval"]["accuracy"]  # doctest: +SKIP
    0.91
    """
    from kmlm.run_directory import load_run

    settings.validate()
    run = load_run(run_dir)
    config = run.model_config
    if settings.seq_len > config.max_position:
        raise ValueError(f"seq_len={settings.seq_len} exceeds the model's max_position={config.max_position}; "
                         f"fine-tune with --seq-len <= {config.max_position}")
    task = settings.task
    train = load_task_examples(settings.train, task)
    if settings.max_examples:
        train = train.take(settings.max_examples)
    evaluation = load_task_examples(settings.eval, task) if settings.eval else None
    test = load_task_examples(settings.test, task) if settings.test else None
    labels = _labels_of(train, task, [e for e in (evaluation, test) if e is not None])
    if task == "similarity" and train.labels is None and not settings.contrastive:
        raise ValueError("similarity training without labels needs --contrastive (in-batch negatives)")
    job = _FinetuneJob(run=run, run_dir=run_dir, out=out, settings=settings, train=train, evaluation=evaluation,
                       test=test, labels=labels, verbose=verbose)
    _prepare_output(out, overwrite)
    try:
        with stop_on_sigterm(lambda: f"stopped by SIGTERM; removed the unfinished {out} (fine-tuning keeps no "
                                     "backup); re-run the same command to fine-tune again"):
            return _run_job(job)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a failed or interrupted run leaves nothing behind
        raise


def _run_job(job):
    """Builds, trains, evaluates and saves the task model; returns the final metrics."""
    from kmlm.model import build_encoder

    settings = job.settings
    keras.utils.set_random_seed(settings.seed)
    encoder = build_encoder(job.run.model_config) if settings.random_init else job.run.encoder
    info = TaskInfo(task=settings.task, labels=job.labels, seq_len=settings.seq_len,
                    lowercase=job.run.config.data.lowercase, pooling=settings.pooling)
    if settings.task == "qa":
        info.doc_stride, info.max_query_length = settings.doc_stride, settings.max_query_length
        info.max_answer_length, info.null_threshold = settings.max_answer_length, _null_threshold(job)
    builders = {"classify": _classifier_training, "pair": _classifier_training, "tag": _tagger_training,
                "similarity": _similarity_training, "qa": _span_training}
    training = builders[settings.task](job, encoder, info)
    schedule = settings.schedule(job.run.model_config.hidden_dim, training.steps_per_pass)
    _compile(training, settings, schedule)
    tasker = Tasker(training.saved, job.run.vocabulary, info)
    clock = _budget_clock(job, schedule)
    history, seconds = _fit(job, training, schedule, _callbacks(job, training, schedule, tasker, clock))
    result = {"epochs": len(history.get("loss", [])), "steps": int(training.model.optimizer.iterations.numpy()),
              "learning_rate": schedule.learning_rate, "train_examples": len(job.train), "seconds": round(seconds, 1),
              "random_init": settings.random_init}
    if clock is not None:
        result.update(time_budget=settings.time_budget, train_seconds=round(clock.elapsed(), 1))
        clock.write()
    if _tunes_null_threshold(job):
        info.null_threshold = _tuned_null_threshold(tasker, job.evaluation, settings.batch_size)
        result["null_threshold"] = info.null_threshold
    if job.evaluation is not None:
        result["eval"] = evaluate_task(tasker, job.evaluation, settings.batch_size)
    if job.test is not None:
        result["test"] = evaluate_task(tasker, job.test, settings.batch_size)
    _write_task_directory(job, training.saved, info, schedule, result)
    return result


def _dataset_inputs(job, info):
    """The tokenizer and special ids, and the options, of every task's training dataset."""
    vocabulary = job.run.vocabulary
    options = dict(seq_len=job.settings.seq_len, batch_size=job.settings.batch_size, shuffle=True,
                   seed=job.settings.seed)
    return make_tokenizer(vocabulary, lowercase=info.lowercase), special_ids(vocabulary), options


def _steps_per_pass(job):
    return max(1, math.ceil(len(job.train) / job.settings.batch_size))


def _classifier_training(job, encoder, info):
    """classify and pair: the [CLS] pooler classifier on label ids."""
    from kmlm.tasks.models import build_classifier

    settings = job.settings
    pooler = None if settings.random_init else job.run.pooler_weights
    model = build_classifier(encoder, len(job.labels), dropout=settings.dropout, pooler_weights=pooler)
    tokenizer, ids, options = _dataset_inputs(job, info)
    label_ids = [job.labels.index(label) for label in job.train.labels]
    return _TaskTraining(
        model=model, saved=model, dataset=text_dataset(job.train, tokenizer, ids, label_ids=label_ids, **options),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_pass=_steps_per_pass(job),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def _tagger_training(job, encoder, info):
    """tag: per-token logits, trained on each word's first piece only."""
    from kmlm.tasks.models import build_tagger

    model = build_tagger(encoder, len(job.labels), dropout=job.settings.dropout)
    tokenizer, ids, options = _dataset_inputs(job, info)
    tag_index = {tag: i for i, tag in enumerate(job.labels)}
    return _TaskTraining(
        model=model, saved=model, dataset=tag_dataset(job.train, tokenizer, ids, tag_index=tag_index, **options),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
        steps_per_pass=_steps_per_pass(job),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="tag_accuracy")],
    )


def _similarity_training(job, encoder, info):
    """similarity: a two-tower trainer over one sentence encoder, regressing the pair's cosine
    on its score scaled to [0, 1] (`info.target_range` records the scale), or contrastive
    with in-batch negatives."""
    from kmlm.tasks.models import build_sentence_encoder, build_similarity_trainer

    settings, train = job.settings, job.train
    saved = build_sentence_encoder(encoder, pooling=settings.pooling)
    model = build_similarity_trainer(saved, contrastive=settings.contrastive)
    targets = None
    if train.labels is not None and not settings.contrastive:
        low, high = float(min(train.labels)), float(max(train.labels))
        if high <= low:
            raise ValueError(f"all similarity labels equal {low}; scores need a range to learn from")
        info.target_range = [low, high]
        targets = [(label - low) / (high - low) for label in train.labels]
    tokenizer, ids, options = _dataset_inputs(job, info)
    drop_remainder = settings.contrastive and len(train) >= settings.batch_size
    dataset = pair_dataset(train, tokenizer, ids, targets=targets, contrastive=settings.contrastive,
                           drop_remainder=drop_remainder, **options)
    if settings.contrastive:
        return _TaskTraining(model=model, saved=saved, dataset=dataset,
                             loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                             steps_per_pass=max(1, len(train) // settings.batch_size))
    return _TaskTraining(model=model, saved=saved, dataset=dataset, loss=keras.losses.MeanSquaredError(),
                         steps_per_pass=_steps_per_pass(job))


def _null_threshold(job):
    """The no-answer threshold qa training starts with: the one given, else 0 when the
    training set has unanswerable questions (SQuAD v2.0), else None (always answer)."""
    if job.settings.null_threshold is not None:
        return float(job.settings.null_threshold)
    return 0.0 if any(not answers for answers in job.train.answers) else None


def _tunes_null_threshold(job):
    """A v2.0 model with an evaluation set and no threshold given picks it on that set."""
    return (job.settings.task == "qa" and job.settings.null_threshold is None and job.evaluation is not None
            and any(not answers for answers in job.train.answers))


def _tuned_null_threshold(tasker, examples, batch_size):
    """The no-answer threshold with the best F1 on `examples` (`kmlm.tasks.qa.best_null_threshold`)."""
    from kmlm.tasks.qa import best_null_threshold

    threshold, tasker.info.null_threshold = tasker.info.null_threshold, None
    try:
        found = tasker.answers(examples.texts, examples.text_pairs, batch_size)
    finally:
        tasker.info.null_threshold = threshold
    golds = [[g["text"] for g in answers] for answers in examples.answers]
    return best_null_threshold([a["answer"] for a in found], [a["null_score_diff"] for a in found], golds)


def _span_training(job, encoder, info):
    """qa: start and end logits over the tokens of every window, trained on the first gold
    answer's first and last token ([CLS] when the window does not hold it)."""
    from kmlm.tasks.models import build_span_labeler
    from kmlm.tasks.qa import window_arrays, window_dataset

    settings = job.settings
    model = build_span_labeler(encoder, dropout=settings.dropout)
    tokenizer, ids, options = _dataset_inputs(job, info)
    arrays, unlocated = window_arrays(job.train, tokenizer, ids, settings.window_settings())
    if unlocated and job.verbose:
        print(f"note: {unlocated} of {len(job.train)} training answers are not in their context (at answer_start "
              "or anywhere); they train as no answer", flush=True)
    windows = len(arrays["example"])
    dataset = window_dataset(arrays, seq_len=settings.seq_len, batch_size=settings.batch_size,
                             shuffle=True, seed=settings.seed)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _TaskTraining(model=model, saved=model, dataset=dataset, loss={"start_logits": loss, "end_logits": loss},
                         steps_per_pass=max(1, math.ceil(windows / settings.batch_size)))


def _compile(training, settings, schedule):
    """AdamW with warmup and decay over the whole run (by steps, or under a time budget a
    plain rate that the `TrainingClock` sets), the task's loss and metrics."""
    optimizer = make_optimizer(schedule.learning_rate, schedule.total_steps, schedule.warmup_steps,
                               settings.weight_decay)
    training.model.compile(optimizer=optimizer, loss=training.loss, metrics=training.metrics,
                           weighted_metrics=training.weighted_metrics, jit_compile=settings.jit_compile)


def _budget_clock(job, schedule):
    """The `TrainingClock` that drives the rate and the stop of a time-budget run (None for
    a run by passes); it writes OUT/progress.json."""
    if schedule.budget_seconds is None:
        return None
    return TrainingClock(os.path.join(job.out, PROGRESS_FILE), schedule.budget_seconds, schedule.learning_rate,
                         job.settings.warmup_fraction, extra={"time_budget": job.settings.time_budget})


def _warmed_up(training, schedule, clock):
    """A test of whether the warmup is over: by steps, or by the time spent under a budget."""
    if clock is not None:
        return lambda: clock.elapsed() >= clock.warmup * clock.budget_seconds
    return lambda: int(training.model.optimizer.iterations.numpy()) >= schedule.warmup_steps


def _callbacks(job, training, schedule, tasker, clock):
    """The time-budget clock, the stop on a non-finite loss, per-epoch evaluation with early
    stopping after the warmup (when there is an evaluation set) and the CSV log."""
    callbacks = [] if clock is None else [clock]
    callbacks.append(StopOnNonFiniteLoss(schedule.steps_per_epoch))
    if job.evaluation is not None:
        task = job.settings.task
        monitor = f"eval_{PRIMARY_METRIC[task]}"
        if task == "similarity" and job.evaluation.labels is None:
            monitor = "eval_retrieval_accuracy"
        callbacks += [
            _EvaluateEachEpoch(tasker, job.evaluation, job.settings.batch_size, clock),
            EarlyStoppingAfterWarmup(_warmed_up(training, schedule, clock), monitor=monitor, mode="max",
                                      patience=schedule.patience, restore_best_weights=True,
                                      verbose=1 if job.verbose else 0),
        ]
    callbacks.append(keras.callbacks.CSVLogger(os.path.join(job.out, METRICS_FILE)))
    return callbacks


def _fit(job, training, schedule, callbacks):
    """Trains; returns the Keras history dict and the seconds it took. The batches repeat, so
    one iterator serves the whole run (each pass reshuffles)."""
    settings = job.settings
    if job.verbose:
        origin = "random initialisation" if settings.random_init else f"the encoder of {job.run_dir}"
        if schedule.budget_seconds is not None:
            length = f"a {settings.time_budget:g}-minute budget in epochs of {schedule.steps_per_epoch} steps"
        else:
            length = f"{schedule.epochs} epochs of {schedule.steps_per_epoch} steps"
        print(f"fine-tuning {settings.task} ({training.model.count_params():,} parameters) from {origin}: "
              f"{len(job.train)} training examples, {length}, peak learning rate {schedule.learning_rate:.3g}",
              flush=True)
    start = time.time()
    try:
        with tf_data_fit():
            history = training.model.fit(training.dataset.repeat(), steps_per_epoch=schedule.steps_per_epoch,
                                         epochs=schedule.epochs, callbacks=callbacks, verbose=job.verbose)
    except NonFiniteLossError:
        raise NonFiniteLossError(NON_FINITE_LOSS_MESSAGE) from None
    return history.history, time.time() - start


def _write_task_directory(job, saved, info, schedule, result):
    """vocab.txt, model.keras and task.json, each whole or not at all; task.json last, as
    its presence marks a finished model."""
    record = dataclasses.asdict(info)
    record.update(source_run=os.path.abspath(job.run_dir), settings=dataclasses.asdict(job.settings),
                  schedule=dataclasses.asdict(schedule), metrics=result)
    replace_atomically(os.path.join(job.out, VOCAB_FILE), lambda tmp: save_vocabulary(job.run.vocabulary, tmp))
    replace_atomically(os.path.join(job.out, MODEL_FILE), saved.save)
    write_json_atomically(os.path.join(job.out, TASK_FILE), record)
    os.remove(os.path.join(job.out, UNFINISHED_FILE))

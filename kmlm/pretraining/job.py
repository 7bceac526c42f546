"""The pretraining job behind `kmlm pretrain`: one job for every objective.

Its named steps, in order: decide what the run directory holds (a new run, one to resume,
or one to refuse), get the vocabulary, record config.json, build the input, build and
compile the model, assemble the callbacks, fit, then save and evaluate. The objective
(`kmlm.pretraining.objectives`: mlm, mlm+nsp, mlm+sop) supplies only what differs.
"""

import dataclasses
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from kmlm import run_directory as rd
from kmlm.files import remove_stale_partial_files, replace_atomically, write_json_atomically
from kmlm.model import build_mlm_model
from kmlm.pipelines import (
    CorpusChangedError,
    CorpusStats,
    learn_vocabulary,
    load_documents,
    load_vocabulary,
    save_vocabulary,
    split_documents,
)
from kmlm.pretraining import distributed
from kmlm.pretraining.checkpointing import AtomicBackupAndRestore, AtomicWeightsCheckpoint, weights_bytes
from kmlm.pretraining.curves import plot_curves
from kmlm.pretraining.evaluation import eval_dataset, evaluate_masked_lm
from kmlm.pretraining.objectives import objective_for
from kmlm.pretraining.settings import PretrainSettings
from kmlm.termination import stop_on_sigterm
from kmlm.training import (
    BackupOnTermination,
    NonFiniteLossError,
    StopOnNonFiniteLoss,
    TrainingClock,
    set_precision,
    spent_seconds,
    tf_data_fit,
)

# The PretrainSettings that config.json records in "data" (besides max_predictions and
# vocab_method) and in "training" (besides the objective's own keys and the schedule).
DATA_KEYS = (
    "corpus", "one_per_line", "seq_len", "batch_size", "masking", "mask_rate", "mask_token_rate",
    "random_token_rate", "lowercase", "packing", "eval_fraction", "segmenter",
)
TRAINING_KEYS = ("preset", "steps", "time_budget", "learning_rate", "lr_schedule", "warmup", "warmup_steps", "decay",
                 "weight_decay", "clip_norm", "adam_beta2", "adam_epsilon", "precision", "jit_compile", "seed")
PROGRESS_FILE = "progress.json"


def pretrain(out, settings=None, verbose=1):
    """Runs the whole pretraining job into the run directory `out`.

    Re-running the same call after a kill resumes from the last completed epoch: weights,
    optimizer state, step counter and input position (`AtomicBackupAndRestore`). On SIGTERM
    the job backs up the step in flight and raises `kmlm.termination.Terminated`; re-running
    then resumes from that step.
    `settings.distribution` picks the `tf.distribute` strategy (`kmlm.pretraining.distributed`)
    and `settings.objective` the objective (`kmlm.pretraining.objectives`).

    Returns:
        dict of held-out metrics of the final model (also written to evaluation.json); {} on a
        non-chief worker of a multi-worker run.

    Example (minutes of training, so not run here):
    >>> pretrain("runs/tiny", PretrainSettings(preset="tiny", steps=100))  # doctest: +SKIP
    """
    settings = settings or PretrainSettings()
    settings.validate()
    job = PretrainingJob(out, settings, verbose)
    if job.multi_worker:  # the workers stop together or not at all: no one stops on its own
        return job.run()
    with stop_on_sigterm(job.describe_termination):
        return job.run()


def run_record(settings, objective, vocabulary_size):
    """The config.json of a run of `settings`: a `RunConfig`, which a resumed run must match.

    Example:
    >>> from kmlm.pretraining.objectives import objective_for
    >>> settings = PretrainSettings(preset="tiny", seq_len=64, mask_rate=0.15, objective="mlm+sop")
    >>> record = run_record(settings, objective_for(settings), vocabulary_size=100)
    >>> record.data.max_predictions, record.training["objective"], record.heads.pooler
    (16, 'mlm+sop', True)
    """
    steps_per_epoch, epochs = settings.schedule()
    data = rd.DataRecord(**{key: getattr(settings, key) for key in DATA_KEYS}, vocab_method=settings.vocabulary_source)
    training = {key: getattr(settings, key) for key in TRAINING_KEYS + objective.recorded_keys}
    training["steps"] = settings.total_steps
    total = None if settings.time_budget is not None else steps_per_epoch * epochs
    training.update(steps_per_epoch=steps_per_epoch, epochs=epochs, total_steps=total)
    if settings.init_embeddings:
        training["init_embeddings"] = settings.init_embeddings
    return rd.RunConfig(model=settings.model_config(vocabulary_size), data=data, training=training,
                        heads=objective.heads)


def prepare_run_directory(out):
    """Decides between a new run and resuming one: the `RunConfig` of the unfinished run in
    `out`, or None for a new run; a one-line ValueError for a directory it must not touch."""
    if not os.path.exists(out):
        return None
    if not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file; give a directory for the run")
    if os.path.isfile(os.path.join(out, rd.MODEL_FILE)):
        raise ValueError(f"{out!r} already holds a finished run; choose a new --out (or delete it to retrain)")
    if not os.path.isfile(os.path.join(out, rd.CONFIG_FILE)):
        if os.listdir(out):
            raise ValueError(f"--out {out!r} exists and is not a kmlm run directory; choose a new --out")
        return None
    return rd.RunConfig.read(out)


class PretrainingJob:
    """One run of `pretrain`: the steps share the run directory, settings, objective and strategy.

    Args:
        out: The run directory.
        settings: Validated `PretrainSettings`.
        verbose: 0 for silence; otherwise progress lines and Keras' progress bar ("auto", 1, 2).
    """

    def __init__(self, out, settings, verbose=1):
        self.out = out
        self.settings = settings
        self.objective = objective_for(settings)
        # First: MultiWorkerMirroredStrategy must configure collective ops before any TF work.
        self.strategy = distributed.make_strategy(settings.distribution)
        # Only the chief writes the run directory; other workers read its backup when resuming.
        self.chief = distributed.worker_index(self.strategy) == 0
        self.multi_worker = distributed.is_multi_worker(self.strategy)
        self.verbose = verbose if self.chief else 0
        self.steps_per_epoch, self.epochs = settings.schedule()
        self.timings = {}  # seconds of the work outside training, for progress.json
        self.clock = None
        self.backup = None

    def path(self, *names):
        return os.path.join(self.out, *names)

    def log(self, message):
        if self.verbose:
            print(message, flush=True)

    def run(self):
        """The job, step by step; returns the held-out metrics."""
        settings = self.settings
        started = time.perf_counter()
        if self.chief:
            check_writable(self.out)
        stats = CorpusStats()
        documents = load_documents(settings.corpus, one_per_line=settings.one_per_line, stats=stats)
        given = load_vocabulary(settings.vocab) if settings.vocab else None
        if given is not None:
            settings.model_config(len(given))
        previous = prepare_run_directory(self.out) if self.chief else None
        if previous is not None:
            remove_stale_partial_files(self.out)  # what a killed process was writing
        train_documents = split_documents(documents, "train", settings.eval_fraction)
        vocabulary = self.vocabulary(previous, given, train_documents)
        record = self.record(previous, vocabulary)
        start_epoch, start_batches = AtomicBackupAndRestore.saved_position(self.path(rd.BACKUP_DIR))
        start_step = start_epoch * self.steps_per_epoch + start_batches
        # A resumed run continues the input where the backup left it: same batches, same masks.
        inputs = self.training_input(train_documents, vocabulary, start_step)
        validation = self.objective.validation_data(record.data, vocabulary, documents, self.verbose)
        model, trainer = self.build(record, vocabulary)
        self.announce(model)
        callbacks = self.callbacks(start_epoch, start_step)
        self.timings["startup_seconds"] = round(time.perf_counter() - started, 3)
        seconds = self.fit(trainer, inputs, validation, callbacks)
        if stats.invalid_utf8:
            self.log(f"replaced {stats.invalid_utf8} invalid UTF-8 sequences in the corpus")
        if not self.chief:
            return self.finish_worker(model)
        return self.save_and_evaluate(model, trainer, record, vocabulary, seconds)

    def vocabulary(self, previous, given, train_documents):
        """The run's vocabulary: the resumed run's, the --vocab file's, or one learned now."""
        if previous is not None:
            return load_vocabulary(self.path(rd.VOCAB_FILE))
        if given is not None:
            return given
        settings = self.settings
        self.log(f"learning a {settings.vocab_size}-token WordPiece vocabulary ({settings.vocab_method}) ...")
        start = time.time()
        vocabulary = learn_vocabulary(
            train_documents, settings.vocab_size, lowercase=settings.lowercase, method=settings.vocab_method
        )
        self.timings["vocabulary_seconds"] = round(time.time() - start, 3)
        self.log(f"vocabulary: {len(vocabulary)} tokens in {time.time() - start:.1f}s")
        return vocabulary

    def record(self, previous, vocabulary):
        """Writes vocab.txt and config.json of a new run, or checks that a resumed one matches."""
        record = run_record(self.settings, self.objective, len(vocabulary))
        if previous is not None:
            differences = previous.differences(record)
            if differences:
                raise ValueError(
                    f"{self.out!r} holds an unfinished run with different settings ({'; '.join(differences)}, "
                    "the run's vs now); re-run it with its own settings to resume, or choose a new --out"
                )
            self.log(f"resuming the unfinished run in {self.out}")
        elif self.chief:
            os.makedirs(self.out, exist_ok=True)
            replace_atomically(self.path(rd.VOCAB_FILE), lambda tmp: save_vocabulary(vocabulary, tmp))
            record.write(self.out)
        return record

    def training_input(self, train_documents, vocabulary, start_batch):
        """The training batches: a dataset, or under multi-worker a function of the input context."""
        settings, masking = self.settings, self.settings.masking_config()

        def batches(documents, batch_size, masking):
            return self.objective.training_dataset(documents, vocabulary, batch_size=batch_size, masking=masking,
                                                   start_batch=start_batch)

        if not self.multi_worker:
            dataset = batches(train_documents, settings.batch_size, masking)
            return distributed.use_data_service(dataset, settings.data_service, service_job(self.out))
        per_replica = distributed.per_replica_batch_size(self.strategy, settings.batch_size)

        def worker_dataset(context):
            # Each worker reads its own files (or every n-th document of a single file), and
            # draws its own shuffles and masks.
            shard = split_documents(
                load_documents(settings.corpus, one_per_line=settings.one_per_line, input_context=context),
                "train",
                settings.eval_fraction,
            )
            seeded = dataclasses.replace(masking, seed=masking.seed + 1_000_003 * context.input_pipeline_id)
            dataset = batches(shard, per_replica, seeded)
            return distributed.use_data_service(dataset, settings.data_service, service_job(self.out, context))

        return worker_dataset

    def build(self, record, vocabulary):
        """(the `MaskedLMModel`, the compiled model that `fit` trains), in the run's precision."""
        settings = self.settings
        keras.utils.set_random_seed(settings.seed)
        previous_policy = keras.config.dtype_policy()
        set_precision(settings.precision)
        try:
            with self.strategy.scope():
                model = build_mlm_model(record.model, record.data.max_predictions)
                if settings.init_embeddings:
                    from kmlm.wordvec.from_mlm import init_token_embeddings

                    rows = init_token_embeddings(model, vocabulary, settings.init_embeddings,
                                                 lowercase=settings.lowercase)
                    self.log(f"initialised {rows} token embeddings from {settings.init_embeddings}")
                trainer = self.objective.trainer(model)
                total_steps = settings.total_steps and self.steps_per_epoch * self.epochs
                self.objective.compile(
                    trainer,
                    learning_rate=settings.learning_rate,
                    total_steps=total_steps,  # None: the TrainingClock sets the rate from the time spent
                    warmup_steps=total_steps and settings.warmup_steps_for(total_steps),
                    schedule=settings.lr_schedule,
                    decay_steps=total_steps and settings.decay_steps_for(total_steps),
                    weight_decay=settings.weight_decay,
                    clipnorm=settings.clip_norm or None,
                    beta_2=settings.adam_beta2,
                    epsilon=settings.adam_epsilon,
                    jit_compile=settings.jit_compile and distributed.xla_allowed(self.strategy),
                )
        finally:
            keras.config.set_dtype_policy(previous_policy)
        return model, trainer

    def callbacks(self, start_epoch, start_step):
        """The stop on a non-finite loss, the atomic backup, (on the chief) the checkpoint,
        metrics.csv and TensorBoard logs, and last the backup of the step in flight on SIGTERM."""
        checkpoint_path = self.path(rd.CHECKPOINT_DIR, "last.weights.h5")
        checkpoint = AtomicWeightsCheckpoint(checkpoint_path)

        def last_good_checkpoint():
            epoch = checkpoint.last_epoch or start_epoch
            if not epoch or not os.path.isfile(checkpoint_path):
                return "none (no epoch finished before it)"
            return (f"{checkpoint_path} (step {epoch * self.steps_per_epoch}; re-running resumes from the backup "
                    "of that step)")

        settings = self.settings
        progress = self.path(PROGRESS_FILE) if self.chief else None
        # Before the backup: the progress of an epoch is on disk whenever its backup is.
        self.clock = TrainingClock(progress, settings.budget_seconds, settings.learning_rate, settings.warmup,
                                   settings.lr_schedule,
                                   spent_seconds(self.path(PROGRESS_FILE), start_epoch, start_step),
                                   extra=self.timings, decay=settings.decay)
        # Kept until model.keras is saved: a kill during that save resumes from it.
        self.backup = AtomicBackupAndRestore(self.path(rd.BACKUP_DIR), save=self.chief, remove_at_end=False)
        callbacks = [
            StopOnNonFiniteLoss(self.steps_per_epoch, last_good_checkpoint),
            self.clock,
            self.backup,
        ]
        if settings.budget_seconds is not None and self.verbose:
            callbacks.append(BudgetProgress(self.clock, settings.budget_seconds))
        if self.chief:
            os.makedirs(self.path(rd.CHECKPOINT_DIR), exist_ok=True)
            callbacks += [
                checkpoint,
                keras.callbacks.CSVLogger(self.path(rd.METRICS_FILE), append=True),
                keras.callbacks.TensorBoard(self.path(rd.LOG_DIR), write_graph=False),
            ]
        if not self.multi_worker:
            callbacks.append(BackupOnTermination(self.backup_step_now, self.describe_termination))
        return callbacks

    def backup_step_now(self):
        """Backs up the step just trained (progress.json first, as at an epoch's end); returns
        its global step."""
        epoch, batches = self.backup.position()
        step = epoch * self.steps_per_epoch + batches
        if batches:
            self.clock.write_interruption(step)
        self.backup.backup_now()
        return step

    def describe_termination(self, step=None):
        """The one line of a run stopped by SIGTERM: what it kept and how to go on."""
        backup = self.path(rd.BACKUP_DIR)
        if step is None and os.path.isfile(self.path(rd.MODEL_FILE)):
            return (f"stopped by SIGTERM after saving {self.path(rd.MODEL_FILE)}; the run is finished, run "
                    f"`kmlm evaluate {self.out}` for its held-out metrics")
        if step is None:
            epoch, batches = AtomicBackupAndRestore.saved_position(backup)
            if not epoch and not batches:
                return ("stopped by SIGTERM before the first backup (nothing trained is kept); re-run the same "
                        "command to start the run again")
            step = epoch * self.steps_per_epoch + batches
        return (f"stopped by SIGTERM; saved the backup of step {step} in {backup}; re-run the same command to "
                "resume from it")

    def announce(self, model):
        """Prints what is about to be trained (and why XLA is off, when it is)."""
        strategy = self.strategy
        if self.settings.jit_compile and not distributed.xla_allowed(strategy):
            self.log(f"XLA is off: a step over {strategy.num_replicas_in_sync} replicas holds cross-replica "
                     "collectives, which XLA does not compile on CPU (Keras turns XLA off under tf.distribute too)")
        settings = self.settings
        if settings.time_budget is not None:
            fall = "" if settings.decay is None else f", the fall over the last {settings.decay:g}"
            length = (f"a {settings.time_budget:g}-minute budget ({settings.lr_schedule} schedule over the time, "
                      f"warmup {settings.warmup:g} of it{fall})")
        else:
            length = f"{self.steps_per_epoch * self.epochs} steps"
        self.log(self.objective.describe(model, length))

    def fit(self, trainer, inputs, validation, callbacks):
        """Trains `trainer` for the whole schedule; returns the seconds it took."""
        validation_data, validation_steps = validation
        options = dict(steps_per_epoch=self.steps_per_epoch, epochs=self.epochs, validation_data=validation_data,
                       validation_steps=validation_steps, callbacks=callbacks)
        start = time.time()
        try:
            if self.multi_worker:
                # model.fit fails under MultiWorkerMirroredStrategy (see kmlm.pretraining.distributed).
                verbose = 1 if self.verbose == "auto" else self.verbose
                distributed.fit_distributed(trainer, self.strategy, inputs, verbose=verbose, **options)
            else:
                with tf_data_fit():
                    trainer.fit(inputs, verbose=self.verbose, **options)
        except NonFiniteLossError as error:
            raise ValueError(str(error)) from None
        except tf.errors.OpError as error:
            change = CorpusChangedError.within(error)
            if change is None:
                raise
            raise CorpusChangedError(self.describe_corpus_change(change)) from None
        return time.time() - start

    def describe_corpus_change(self, change):
        """The one line of a run stopped because a corpus file went away or changed: the step,
        the file, the backup that is kept and how to go on."""
        epoch, batches = self.backup.position()
        saved_epoch, saved_batches = AtomicBackupAndRestore.saved_position(self.path(rd.BACKUP_DIR))
        if not saved_epoch and not saved_batches:
            kept = "nothing trained is kept (no backup was written yet): put the file back and re-run the same " \
                   "command to start the run again"
        else:
            kept = (f"the backup of step {saved_epoch * self.steps_per_epoch + saved_batches} in "
                    f"{self.path(rd.BACKUP_DIR)} is kept: put the file back and re-run the same command to resume "
                    "from it")
        return f"training stopped at step {epoch * self.steps_per_epoch + batches}: {change}; {kept}"

    def finish_worker(self, model):
        """A non-chief worker leaves only its final weights, to check that they match the chief's."""
        os.makedirs(self.out, exist_ok=True)
        name = f"worker-{distributed.worker_index(self.strategy)}.weights.h5"
        replace_atomically(self.path(name), model.save_weights)
        distributed.barrier(self.strategy)
        return {}

    def save_and_evaluate(self, model, trainer, record, vocabulary, seconds):
        """Writes the objective's files, then model.keras (which marks the run finished), the
        curves and evaluation.json; returns the held-out metrics."""
        self.objective.save_heads(self.out, trainer)
        # A kill while saving must not leave a model.keras that looks finished.
        replace_atomically(self.path(rd.MODEL_FILE), model.save, weights_bytes(model, optimizer=False))
        shutil.rmtree(self.path(rd.BACKUP_DIR), ignore_errors=True)
        plot_curves(self.path(rd.METRICS_FILE), self.path(rd.CURVES_FILE), self.steps_per_epoch)
        clock = self.clock
        self.log(f"trained {clock.steps} steps in {clock.elapsed():.0f}s"
                 + (f" of a {self.settings.budget_seconds:.0f}s budget" if self.settings.time_budget else "")
                 + f" (outside it: start-up {self.timings['startup_seconds']:.0f}s, first step and XLA compile "
                 f"{clock.startup_seconds or 0:.0f}s)")
        self.log(self.objective.describe_evaluation(seconds))
        start = time.perf_counter()
        metrics = evaluate_masked_lm(model, eval_dataset(record.data, vocabulary), max_batches=100,
                                     verbose=1 if self.verbose else 0)
        metrics.update(self.objective.evaluate(trainer))
        metrics.update(steps=clock.steps, train_seconds=round(clock.elapsed(), 1))
        write_json_atomically(self.path("evaluation.json"), metrics)
        clock.write(evaluation_seconds=round(time.perf_counter() - start, 3))
        distributed.barrier(self.strategy)
        return metrics


class BudgetProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, headed by the time spent of the budget instead of "Epoch 3/1000000"."""

    def __init__(self, clock, budget_seconds):
        super().__init__()
        self.clock = clock
        self.budget_seconds = budget_seconds

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_progbar()
        self._maybe_init_progbar()
        if self.verbose:
            print(f"{self.clock.elapsed() / 60:.1f} of {self.budget_seconds / 60:g} min, step "
                  f"{self.clock.steps}", flush=True)


def check_writable(out):
    """Refuses an --out that cannot be written, before any training work."""
    folder = os.path.abspath(out)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"--out {out!r} is inside {folder!r}, which is a file; choose a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".kmlm-write-test-", dir=folder))
    except OSError as error:
        raise PermissionError(
            f"--out {out!r} cannot be written: {folder!r} refuses new files ({error.strerror}); choose a writable directory"
        ) from None


def service_job(out, context=None):
    """The tf.data service job name: one job per run directory (and input pipeline)."""
    name = "kmlm-" + os.path.basename(os.path.abspath(out))
    return name if context is None else f"{name}-{context.input_pipeline_id}"


def remove_run(out):
    """Deletes a run directory (used by tests and `--overwrite`)."""
    shutil.rmtree(out, ignore_errors=True)

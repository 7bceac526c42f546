"""The pretraining job behind `kmlm pretrain`: vocabulary, model, `model.fit`, run directory."""

import dataclasses
import math
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from kmlm.pretraining import distributed
from kmlm import run_directory as rd
from kmlm.files import replace_atomically, write_json_atomically
from kmlm.pretraining.checkpointing import AtomicBackupAndRestore, AtomicWeightsCheckpoint
from kmlm.config import ModelConfig
from kmlm.pretraining.curves import plot_curves
from kmlm.pretraining.evaluation import eval_dataset, evaluate_masked_lm
from kmlm.model import build_mlm_model
from kmlm.pipelines import (
    CorpusStats,
    MaskingConfig,
    check_seq_len,
    learn_vocabulary,
    load_documents,
    load_vocabulary,
    max_predictions_for,
    mlm_dataset,
    save_vocabulary,
    split_documents,
)
from kmlm.training import (
    PRECISIONS,
    NonFiniteLossError,
    StopOnNonFiniteLoss,
    compile_for_pretraining,
    set_precision,
    tf_data_fit,
)

DISTRIBUTIONS = distributed.STRATEGIES


@dataclasses.dataclass
class PretrainSettings:
    """Everything `pretrain` needs besides the output directory (the CLI flags).

    Example:
    >>> PretrainSettings(preset="tiny", steps=50, seq_len=64, batch_size=8)
    """

    corpus: str | None = None
    one_per_line: bool = False
    preset: str = "mini"
    steps: int = 1000
    seq_len: int = 128
    batch_size: int = 32
    masking: str = "token"
    mask_rate: float = 0.15
    mask_token_rate: float = 0.8
    random_token_rate: float = 0.1
    vocab: str | None = None
    vocab_size: int = 8192
    vocab_method: str = "fast"
    lowercase: bool = True
    packing: bool = True
    learning_rate: float = 5e-4
    warmup_steps: int | None = None
    weight_decay: float = 0.01
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

    def model_config(self, vocabulary_size):
        config = ModelConfig.from_preset(self.preset, vocabulary_size=vocabulary_size, **self.model_overrides)
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
        )

    def schedule(self):
        """(steps_per_epoch, epochs): the run is split into `log_points` Keras epochs so that
        metrics.csv, checkpoints and BackupAndRestore have that many points."""
        steps_per_epoch = max(1, math.ceil(self.steps / max(1, self.log_points)))
        return steps_per_epoch, math.ceil(self.steps / steps_per_epoch)

    def validate(self):
        if self.steps < 1:
            raise ValueError(f"--steps {self.steps} must be at least 1")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size} must be at least 1")
        check_seq_len(self.seq_len)
        self.masking_config()
        self.model_config(max(self.vocab_size, 8))
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown strategy {self.distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"--learning-rate {self.learning_rate} must be a positive number, e.g. 5e-4")
        if self.distribution == "multi-worker":
            if not self.vocab:
                raise ValueError(
                    "--strategy multi-worker needs --vocab FILE so that every worker uses the same vocabulary; "
                    "learn one first with `kmlm vocab`"
                )
            distributed.read_tf_config()
        if self.init_embeddings and not os.path.isfile(self.init_embeddings):
            raise FileNotFoundError(f"--init-embeddings {self.init_embeddings!r} is not a word vectors file")


def _settings_record(settings, model_config, steps_per_epoch, epochs):
    data_keys = (
        "corpus", "one_per_line", "seq_len", "batch_size", "masking", "mask_rate",
        "mask_token_rate", "random_token_rate", "lowercase", "packing", "eval_fraction",
    )
    data = {key: getattr(settings, key) for key in data_keys}
    data["max_predictions"] = max_predictions_for(settings.seq_len, settings.mask_rate)
    data["vocab_method"] = settings.vocab_method if settings.vocab is None else f"file:{settings.vocab}"
    training_keys = (
        "preset", "steps", "learning_rate", "warmup_steps", "weight_decay", "precision",
        "jit_compile", "seed", "distribution",
    )
    training = {key: getattr(settings, key) for key in training_keys}
    training.update(steps_per_epoch=steps_per_epoch, epochs=epochs, total_steps=steps_per_epoch * epochs)
    if settings.init_embeddings:
        training["init_embeddings"] = settings.init_embeddings
    return {"model": model_config.to_dict(), "data": data, "training": training, "kmlm_version": _version()}


def _version():
    from kmlm import __version__

    return __version__


def _prepare_run_directory(out, settings):
    """Decides between a new run and resuming one; returns the existing settings or None."""
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
    return rd.read_settings(out)


def pretrain(out, settings=None, verbose=1):
    """Runs the whole pretraining job into the run directory `out`.

    Re-running the same call after a kill resumes from the last completed epoch: weights,
    optimizer state, step counter and input position (`AtomicBackupAndRestore`).
    `settings.distribution` picks the `tf.distribute` strategy (`kmlm.pretraining.distributed`).

    Returns:
        dict of held-out metrics of the final model (also written to evaluation.json).

    Example:
    >>> pretrain("runs/tiny", PretrainSettings(preset="tiny", steps=100))
    """
    settings = settings or PretrainSettings()
    settings.validate()
    if settings.objective != "mlm":
        from kmlm.pretraining.sentence_pairs import pretrain_with_sentence_pairs

        return pretrain_with_sentence_pairs(out, settings, verbose)
    # First: MultiWorkerMirroredStrategy must configure collective ops before any TF work.
    strategy = distributed.make_strategy(settings.distribution)
    chief = distributed.worker_index(strategy) == 0
    if chief:
        _check_writable(out)
    stats = CorpusStats()
    documents = load_documents(settings.corpus, one_per_line=settings.one_per_line, stats=stats)
    vocabulary = load_vocabulary(settings.vocab) if settings.vocab else None
    if vocabulary is not None:
        settings.model_config(len(vocabulary))
    # Only the chief writes the run directory; other workers read its backup when resuming.
    previous = _prepare_run_directory(out, settings) if chief else None
    train_documents = split_documents(documents, "train", settings.eval_fraction)

    if previous is not None and chief:
        vocabulary = load_vocabulary(os.path.join(out, rd.VOCAB_FILE))
    elif vocabulary is None:
        _log(verbose, f"learning a {settings.vocab_size}-token WordPiece vocabulary ({settings.vocab_method}) ...")
        start = time.time()
        vocabulary = learn_vocabulary(
            train_documents, settings.vocab_size, lowercase=settings.lowercase, method=settings.vocab_method
        )
        _log(verbose, f"vocabulary: {len(vocabulary)} tokens in {time.time() - start:.1f}s")
    model_config = settings.model_config(len(vocabulary))
    steps_per_epoch, epochs = settings.schedule()
    record = _settings_record(settings, model_config, steps_per_epoch, epochs)
    if previous is not None:
        if previous != record:
            raise ValueError(
                f"{out!r} holds an unfinished run with different settings; re-run it with its own "
                "settings to resume, or choose a new --out"
            )
        _log(verbose, f"resuming the unfinished run in {out}")
    elif chief:
        os.makedirs(out, exist_ok=True)
        save_vocabulary(vocabulary, os.path.join(out, rd.VOCAB_FILE))
        rd.write_settings(out, record)

    data = record["data"]
    masking = settings.masking_config()
    backup_dir = os.path.join(out, rd.BACKUP_DIR)
    start_epoch = AtomicBackupAndRestore.saved_epoch(backup_dir)
    # A resumed run continues the input where the backup left it: same batches, same masks.
    start_batch = start_epoch * steps_per_epoch

    def train_dataset(documents, batch_size, masking):
        return mlm_dataset(
            documents,
            vocabulary,
            seq_len=settings.seq_len,
            batch_size=batch_size,
            masking=masking,
            lowercase=settings.lowercase,
            packing=settings.packing,
            start_batch=start_batch,
        )

    multi_worker = distributed.is_multi_worker(strategy)
    if multi_worker:
        per_replica = distributed.per_replica_batch_size(strategy, settings.batch_size)

        def worker_dataset(context):
            # Each worker reads its own files (or every n-th document of a single file), and
            # draws its own shuffles and masks.
            shard = split_documents(
                load_documents(settings.corpus, one_per_line=settings.one_per_line, input_context=context),
                "train",
                settings.eval_fraction,
            )
            seeded = dataclasses.replace(masking, seed=masking.seed + 1_000_003 * context.input_pipeline_id)
            dataset = train_dataset(shard, per_replica, seeded)
            return distributed.use_data_service(dataset, settings.data_service, _service_job(out, context))

    else:
        train_ds = distributed.use_data_service(
            train_dataset(train_documents, settings.batch_size, masking), settings.data_service, _service_job(out)
        )
    val_ds, val_steps = None, None
    if settings.eval_batches > 0:
        # A few fixed held-out batches, cached: every epoch sees the same masks, cheaply.
        val_ds = eval_dataset(data, vocabulary).take(settings.eval_batches).cache()
        val_steps = sum(1 for _ in val_ds)
        # Repeated with exactly val_steps per epoch: Keras may keep one validation iterator
        # across epochs (and under tf.distribute a finite one raises at its end).
        val_ds = val_ds.repeat()

    keras.utils.set_random_seed(settings.seed)
    previous_policy = keras.config.dtype_policy()
    set_precision(settings.precision)
    try:
        with strategy.scope():
            model = build_mlm_model(model_config, data["max_predictions"])
            if settings.init_embeddings:
                from kmlm.wordvec.vectors import init_token_embeddings

                rows = init_token_embeddings(model, vocabulary, settings.init_embeddings, lowercase=settings.lowercase)
                _log(verbose, f"initialised {rows} token embeddings from {settings.init_embeddings}")
            compile_for_pretraining(
                model,
                learning_rate=settings.learning_rate,
                total_steps=steps_per_epoch * epochs,
                warmup_steps=settings.warmup_steps,
                weight_decay=settings.weight_decay,
                jit_compile=settings.jit_compile and distributed.xla_allowed(strategy),
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)

    checkpoint_path = os.path.join(out, rd.CHECKPOINT_DIR, "last.weights.h5")
    checkpoint = AtomicWeightsCheckpoint(checkpoint_path)

    def last_good_checkpoint():
        epoch = checkpoint.last_epoch or start_epoch
        if not epoch or not os.path.isfile(checkpoint_path):
            return "none (no epoch finished before it)"
        return f"{checkpoint_path} (step {epoch * steps_per_epoch}; re-running resumes from the backup of that step)"

    callbacks = [
        StopOnNonFiniteLoss(steps_per_epoch, last_good_checkpoint),
        AtomicBackupAndRestore(backup_dir, save=chief),
    ]
    if chief:
        os.makedirs(os.path.join(out, rd.CHECKPOINT_DIR), exist_ok=True)
        callbacks += [
            checkpoint,
            keras.callbacks.CSVLogger(os.path.join(out, rd.METRICS_FILE), append=True),
            keras.callbacks.TensorBoard(os.path.join(out, rd.LOG_DIR), write_graph=False),
        ]
    else:
        verbose = 0
    if settings.jit_compile and not distributed.xla_allowed(strategy):
        _log(verbose, f"XLA is off: a step over {strategy.num_replicas_in_sync} replicas holds cross-replica "
                      "collectives, which XLA does not compile on CPU (Keras turns XLA off under tf.distribute too)")
    _log(
        verbose,
        f"training {settings.preset} ({model.count_params():,} parameters) for {steps_per_epoch * epochs} steps "
        f"of {settings.batch_size}x{settings.seq_len} tokens, {settings.masking} masking at {settings.mask_rate}",
    )
    try:
        if multi_worker:
            # model.fit fails under MultiWorkerMirroredStrategy (see kmlm.pretraining.distributed).
            distributed.fit_distributed(
                model,
                strategy,
                worker_dataset,
                steps_per_epoch=steps_per_epoch,
                epochs=epochs,
                validation_data=val_ds,
                validation_steps=val_steps,
                callbacks=callbacks,
                verbose=1 if verbose == "auto" else verbose,
            )
        else:
            with tf_data_fit():
                model.fit(
                    train_ds,
                    steps_per_epoch=steps_per_epoch,
                    epochs=epochs,
                    validation_data=val_ds,
                    validation_steps=val_steps,
                    callbacks=callbacks,
                    verbose=verbose,
                )
    except NonFiniteLossError as error:
        raise ValueError(str(error)) from None
    if stats.invalid_utf8:
        _log(verbose, f"replaced {stats.invalid_utf8} invalid UTF-8 sequences in the corpus")
    if not chief:
        # Non-chief workers leave only their final weights, to check that they match the chief's.
        os.makedirs(out, exist_ok=True)
        replace_atomically(os.path.join(out, f"worker-{distributed.worker_index(strategy)}.weights.h5"), model.save_weights)
        distributed.barrier(strategy)
        return {}

    _save_model_atomically(model, os.path.join(out, rd.MODEL_FILE))
    plot_curves(os.path.join(out, rd.METRICS_FILE), os.path.join(out, rd.CURVES_FILE), steps_per_epoch)
    _log(verbose, "evaluating on the held-out split ...")
    metrics = evaluate_masked_lm(model, eval_dataset(data, vocabulary), max_batches=100, verbose=1 if verbose else 0)
    write_json_atomically(os.path.join(out, "evaluation.json"), metrics)
    distributed.barrier(strategy)
    return metrics


def _save_model_atomically(model, path):
    # A kill while saving must not leave a model.keras that looks finished.
    replace_atomically(path, model.save)


def _check_writable(out):
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


def _service_job(out, context=None):
    """The tf.data service job name: one job per run directory (and input pipeline)."""
    name = "kmlm-" + os.path.basename(os.path.abspath(out))
    return name if context is None else f"{name}-{context.input_pipeline_id}"


def _log(verbose, message):
    if verbose:
        print(message, flush=True)


def remove_run(out):
    """Deletes a run directory (used by tests and `--overwrite`)."""
    shutil.rmtree(out, ignore_errors=True)

"""The pretraining job behind `kmlm pretrain`: vocabulary, model, `model.fit`, run directory."""

import dataclasses
import json
import math
import os
import shutil
import time
import warnings

import keras
import tensorflow as tf

from kmlm import run_directory as rd
from kmlm.config import ModelConfig
from kmlm.curves import plot_curves
from kmlm.evaluation import eval_dataset, evaluate_masked_lm
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
from kmlm.training import PRECISIONS, compile_for_pretraining, set_precision

DISTRIBUTIONS = ("default", "mirrored", "multi-worker", "tpu")


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
    model_overrides: dict = dataclasses.field(default_factory=dict)
    init_embeddings: str | None = None

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
            raise ValueError(f"unknown distribution {self.distribution!r}; choose one of {', '.join(DISTRIBUTIONS)}")
        if self.init_embeddings and not os.path.isfile(self.init_embeddings):
            raise FileNotFoundError(f"--init-embeddings {self.init_embeddings!r} is not a word vectors file")


def _strategy(name):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.get_strategy()


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

    Re-running the same call after a kill resumes from the last completed epoch
    (Keras `BackupAndRestore`).

    Returns:
        dict of held-out metrics of the final model (also written to evaluation.json).

    Example:
    >>> pretrain("runs/tiny", PretrainSettings(preset="tiny", steps=100))
    """
    settings = settings or PretrainSettings()
    settings.validate()
    stats = CorpusStats()
    documents = load_documents(settings.corpus, one_per_line=settings.one_per_line, stats=stats)
    vocabulary = load_vocabulary(settings.vocab) if settings.vocab else None
    if vocabulary is not None:
        settings.model_config(len(vocabulary))
    previous = _prepare_run_directory(out, settings)
    train_documents = split_documents(documents, "train", settings.eval_fraction)

    if previous is not None:
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
    else:
        os.makedirs(out, exist_ok=True)
        save_vocabulary(vocabulary, os.path.join(out, rd.VOCAB_FILE))
        rd.write_settings(out, record)

    data = record["data"]
    masking = settings.masking_config()
    train_ds = mlm_dataset(
        train_documents,
        vocabulary,
        seq_len=settings.seq_len,
        batch_size=settings.batch_size,
        masking=masking,
        lowercase=settings.lowercase,
        packing=settings.packing,
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
        with _strategy(settings.distribution).scope():
            model = build_mlm_model(model_config, data["max_predictions"])
            if settings.init_embeddings:
                from kmlm.word_vectors import init_token_embeddings

                rows = init_token_embeddings(model, vocabulary, settings.init_embeddings, lowercase=settings.lowercase)
                _log(verbose, f"initialised {rows} token embeddings from {settings.init_embeddings}")
            compile_for_pretraining(
                model,
                learning_rate=settings.learning_rate,
                total_steps=steps_per_epoch * epochs,
                warmup_steps=settings.warmup_steps,
                weight_decay=settings.weight_decay,
                jit_compile=settings.jit_compile,
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)

    os.makedirs(os.path.join(out, rd.CHECKPOINT_DIR), exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(out, rd.BACKUP_DIR)),
        keras.callbacks.ModelCheckpoint(
            os.path.join(out, rd.CHECKPOINT_DIR, "last.weights.h5"), save_weights_only=True
        ),
        keras.callbacks.CSVLogger(os.path.join(out, rd.METRICS_FILE), append=True),
        keras.callbacks.TensorBoard(os.path.join(out, rd.LOG_DIR), write_graph=False),
        keras.callbacks.TerminateOnNaN(),
    ]
    _log(
        verbose,
        f"training {settings.preset} ({model.count_params():,} parameters) for {steps_per_epoch * epochs} steps "
        f"of {settings.batch_size}x{settings.seq_len} tokens, {settings.masking} masking at {settings.mask_rate}",
    )
    with warnings.catch_warnings():
        # Keras warns that `shuffle` is ignored for tf.data input; the pipeline shuffles.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        history = model.fit(
            train_ds,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            validation_data=val_ds,
            validation_steps=val_steps,
            callbacks=callbacks,
            verbose=verbose,
        )
    if stats.invalid_utf8:
        _log(verbose, f"replaced {stats.invalid_utf8} invalid UTF-8 sequences in the corpus")
    if model.stop_training and any(not math.isfinite(v) for v in history.history.get("loss", [0.0])):
        raise ValueError("training stopped: the loss became NaN; lower --learning-rate or use --precision float32")

    _save_model_atomically(model, os.path.join(out, rd.MODEL_FILE))
    plot_curves(os.path.join(out, rd.METRICS_FILE), os.path.join(out, rd.CURVES_FILE), steps_per_epoch)
    _log(verbose, "evaluating on the held-out split ...")
    metrics = evaluate_masked_lm(model, eval_dataset(data, vocabulary), max_batches=100, verbose=1 if verbose else 0)
    with open(os.path.join(out, "evaluation.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def _save_model_atomically(model, path):
    # A kill while saving must not leave a model.keras that looks finished.
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


def _log(verbose, message):
    if verbose:
        print(message, flush=True)


def remove_run(out):
    """Deletes a run directory (used by tests and `--overwrite`)."""
    shutil.rmtree(out, ignore_errors=True)

"""Joint masked-LM and sentence-pair pretraining: `kmlm pretrain --objective mlm+nsp|mlm+sop`.

BERT adds next-sentence prediction (NSP: is B the text that follows A, or a random one?)
and ALBERT sentence-order prediction (SOP: are A and B in order, or swapped?). Both read a
pooled [CLS] vector (`kmlm.layers.Pooler`) through a 2-way classifier; the loss is the sum
of the masked-LM loss and the pair loss.

The run directory is a normal one: `model.keras` is the `MaskedLMModel` (so fill-mask,
evaluate, score, generate and export work as usual) and `pooler.safetensors` holds the
pooler and the pair classifier, which `Run.pooler_weights` returns for fine-tuning.
"""

import dataclasses
import json
import math
import os
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from kmlm import run_directory as rd
from kmlm.pretraining.curves import plot_curves
from kmlm.pretraining.evaluation import EVAL_SEED, eval_dataset, evaluate_masked_lm
from kmlm.layers.pooler import Pooler
from kmlm.model import ENCODER_INPUTS, build_mlm_model
from kmlm.pipelines import (
    CorpusStats,
    learn_vocabulary,
    load_documents,
    load_vocabulary,
    max_predictions_for,
    save_vocabulary,
    split_documents,
)
from kmlm.pipelines.sentence_pairs import sentence_pair_dataset
from kmlm.training import MaskedPerplexity, make_optimizer, masked_lm_loss, set_precision

OBJECTIVES = ("mlm", "mlm+nsp", "mlm+sop")


def pair_objective(objective):
    """"mlm+nsp" -> "nsp", "mlm+sop" -> "sop"; a clear error for anything else."""
    if objective not in OBJECTIVES or objective == "mlm":
        raise ValueError(f"unknown sentence-pair objective {objective!r}; choose one of {', '.join(OBJECTIVES[1:])}")
    return objective.split("+")[1]


def build_sentence_pretraining_model(mlm_model):
    """Wraps a `MaskedLMModel` with a pooler and a 2-way sentence-pair classifier.

    The encoder and MLM head are shared with `mlm_model`, so training this model trains it.

    Returns:
        A functional model with the `MaskedLMModel` inputs and outputs
        `{"masked_lm": [B, P, V] logits, "next_sentence": [B, 2] logits}`.

    Example:
    >>> mlm = build_mlm_model(ModelConfig.from_preset("tiny", vocabulary_size=100))
    >>> sorted(build_sentence_pretraining_model(mlm).output)
    ['masked_lm', 'next_sentence']
    """
    config = mlm_model.config
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in ENCODER_INPUTS + ("mask_positions",)}
    sequence = mlm_model.encoder({name: inputs[name] for name in ENCODER_INPUTS})
    logits = mlm_model.get_layer("mlm_head")(sequence, inputs["mask_positions"])
    pooled = Pooler(initializer_range=config.initializer_range, name="pooler")(sequence)
    pair_logits = keras.layers.Dense(
        2, kernel_initializer=keras.initializers.TruncatedNormal(stddev=config.initializer_range),
        dtype="float32", name="next_sentence",
    )(pooled)
    return keras.Model(inputs, {"masked_lm": logits, "next_sentence": pair_logits}, name="sentence_pretraining")


def compile_for_sentence_pretraining(model, *, learning_rate=5e-4, total_steps=10_000, warmup_steps=None,
                                     weight_decay=0.01, clipnorm=1.0, jit_compile=True):
    """Compiles a `build_sentence_pretraining_model` model: summed MLM + pair losses,
    masked accuracy and perplexity for the MLM output, accuracy for the pair output."""
    model.compile(
        optimizer=make_optimizer(learning_rate, total_steps, warmup_steps, weight_decay, clipnorm),
        loss={
            "masked_lm": masked_lm_loss(),
            "next_sentence": keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight", name="next_sentence_loss"),
        },
        weighted_metrics={
            "masked_lm": [keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy"), MaskedPerplexity()],
            "next_sentence": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        },
        jit_compile=jit_compile,
    )
    return model


def sentence_head_weights(model):
    """The pooler and pair classifier of a sentence-pretraining model, in the
    `pooler.safetensors` layout ([in, out] kernels)."""
    pooler, classifier = model.get_layer("pooler"), model.get_layer("next_sentence")
    return {
        "pooler/kernel": pooler.kernel.numpy(),
        "pooler/bias": pooler.bias.numpy(),
        "next_sentence/kernel": classifier.kernel.numpy(),
        "next_sentence/bias": classifier.bias.numpy(),
    }


def evaluate_next_sentence(model, dataset, max_batches=None):
    """Accuracy of the pair classifier over `sentence_pair_dataset` batches (weight-0 rows skipped)."""

    @tf.function
    def predict(features):
        return tf.argmax(model(features, training=False)["next_sentence"], -1, output_type=tf.int32)

    correct = total = 0.0
    for number, (features, targets, weights) in enumerate(dataset):
        if max_batches is not None and number >= max_batches:
            break
        hit = (predict(features).numpy() == targets["next_sentence"].numpy()).astype(np.float64)
        correct += float((hit * weights["next_sentence"].numpy()).sum())
        total += float(weights["next_sentence"].numpy().sum())
    if total == 0:
        raise ValueError("the evaluation text gave no sentence pairs; give documents of several sentences")
    return {"next_sentence_accuracy": correct / total, "pairs": int(total)}


def _record(settings, model_config, steps_per_epoch, epochs, vocab_method):
    data = {key: getattr(settings, key) for key in (
        "corpus", "one_per_line", "seq_len", "batch_size", "masking", "mask_rate", "mask_token_rate",
        "random_token_rate", "lowercase", "packing", "eval_fraction")}
    data["max_predictions"] = max_predictions_for(settings.seq_len, settings.mask_rate)
    data["vocab_method"] = vocab_method
    training = {key: getattr(settings, key) for key in (
        "preset", "steps", "learning_rate", "warmup_steps", "weight_decay", "precision", "jit_compile", "seed",
        "objective")}
    training.update(steps_per_epoch=steps_per_epoch, epochs=epochs, total_steps=steps_per_epoch * epochs)
    from kmlm import __version__

    return {
        "model": model_config.to_dict(),
        "data": data,
        "training": training,
        "heads": {"masked_lm": True, "pooler": True, "next_sentence": True},
        "kmlm_version": __version__,
    }


def pretrain_with_sentence_pairs(out, settings, verbose=1):
    """The `kmlm pretrain` job for `settings.objective` "mlm+nsp" or "mlm+sop".

    Called by `kmlm.pretraining.job.pretrain`; single-device (`--strategy default`). Resumes an
    unfinished run like MLM pretraining does.

    Returns:
        dict of held-out metrics: the masked-LM ones plus `next_sentence_accuracy`.
    """
    objective = pair_objective(settings.objective)
    if settings.distribution != "default" or getattr(settings, "data_service", None):
        raise ValueError(f"--objective {settings.objective} runs on one device; leave --strategy default")
    stats = CorpusStats()
    documents = load_documents(settings.corpus, one_per_line=settings.one_per_line, stats=stats)
    train_documents = split_documents(documents, "train", settings.eval_fraction)
    eval_documents = split_documents(documents, "eval", settings.eval_fraction)
    previous = None
    if os.path.exists(out):
        if os.path.isfile(os.path.join(out, rd.MODEL_FILE)):
            raise ValueError(f"{out!r} already holds a finished run; choose a new --out (or delete it to retrain)")
        if os.path.isfile(os.path.join(out, rd.CONFIG_FILE)):
            previous = rd.read_settings(out)
        elif not os.path.isdir(out) or os.listdir(out):
            raise ValueError(f"--out {out!r} exists and is not a kmlm run directory; choose a new --out")
    if previous is not None:
        vocabulary = load_vocabulary(os.path.join(out, rd.VOCAB_FILE))
    elif settings.vocab:
        vocabulary = load_vocabulary(settings.vocab)
    else:
        _log(verbose, f"learning a {settings.vocab_size}-token WordPiece vocabulary ({settings.vocab_method}) ...")
        vocabulary = learn_vocabulary(train_documents, settings.vocab_size, lowercase=settings.lowercase,
                                      method=settings.vocab_method)
    model_config = settings.model_config(len(vocabulary))
    steps_per_epoch, epochs = settings.schedule()
    vocab_method = settings.vocab_method if settings.vocab is None else f"file:{settings.vocab}"
    record = _record(settings, model_config, steps_per_epoch, epochs, vocab_method)
    if previous is not None:
        if previous != record:
            raise ValueError(f"{out!r} holds an unfinished run with different settings; re-run it with its own "
                             "settings to resume, or choose a new --out")
        _log(verbose, f"resuming the unfinished run in {out}")
    else:
        os.makedirs(out, exist_ok=True)
        save_vocabulary(vocabulary, os.path.join(out, rd.VOCAB_FILE))
        rd.write_settings(out, record)

    masking = settings.masking_config()
    pair_args = dict(objective=objective, seq_len=settings.seq_len, batch_size=settings.batch_size,
                     lowercase=settings.lowercase)
    train_ds = sentence_pair_dataset(train_documents, vocabulary, masking=masking, **pair_args)
    eval_pairs = None
    try:
        eval_masking = dataclasses.replace(masking, seed=EVAL_SEED)
        eval_pairs = sentence_pair_dataset(eval_documents, vocabulary, masking=eval_masking,
                                           deterministic_eval=True, **pair_args)
        eval_pairs = eval_pairs.take(max(settings.eval_batches, 1)).cache()
        validation_steps = sum(1 for _ in eval_pairs)
    except ValueError as error:
        _log(verbose, f"no held-out {objective} evaluation: {error}")
        eval_pairs = None

    keras.utils.set_random_seed(settings.seed)
    previous_policy = keras.config.dtype_policy()
    set_precision(settings.precision)
    try:
        model = build_mlm_model(model_config, record["data"]["max_predictions"])
        trainer = build_sentence_pretraining_model(model)
        compile_for_sentence_pretraining(
            trainer, learning_rate=settings.learning_rate, total_steps=steps_per_epoch * epochs,
            warmup_steps=settings.warmup_steps, weight_decay=settings.weight_decay, jit_compile=settings.jit_compile)
    finally:
        keras.config.set_dtype_policy(previous_policy)

    os.makedirs(os.path.join(out, rd.CHECKPOINT_DIR), exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(out, rd.BACKUP_DIR)),
        keras.callbacks.ModelCheckpoint(os.path.join(out, rd.CHECKPOINT_DIR, "last.weights.h5"), save_weights_only=True),
        keras.callbacks.CSVLogger(os.path.join(out, rd.METRICS_FILE), append=True),
        keras.callbacks.TensorBoard(os.path.join(out, rd.LOG_DIR), write_graph=False),
        keras.callbacks.TerminateOnNaN(),
    ]
    _log(verbose, f"training {settings.preset} with masked LM + {objective.upper()} for {steps_per_epoch * epochs} "
                  f"steps of {settings.batch_size}x{settings.seq_len} tokens")
    start = time.time()
    use_validation = eval_pairs is not None and settings.eval_batches > 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        history = trainer.fit(
            train_ds, steps_per_epoch=steps_per_epoch, epochs=epochs,
            validation_data=eval_pairs.repeat() if use_validation else None,
            validation_steps=validation_steps if use_validation else None,
            callbacks=callbacks, verbose=verbose,
        )
    if trainer.stop_training and any(not math.isfinite(v) for v in history.history.get("loss", [0.0])):
        raise ValueError("training stopped: the loss became NaN; lower --learning-rate or use --precision float32")

    rd.save_sentence_heads(out, sentence_head_weights(trainer))
    tmp = os.path.join(out, rd.MODEL_FILE + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, os.path.join(out, rd.MODEL_FILE))
    plot_curves(os.path.join(out, rd.METRICS_FILE), os.path.join(out, rd.CURVES_FILE), steps_per_epoch)
    _log(verbose, f"trained in {time.time() - start:.0f}s; evaluating on the held-out split ...")
    metrics = evaluate_masked_lm(model, eval_dataset(record["data"], vocabulary), max_batches=100,
                                 verbose=1 if verbose else 0)
    if eval_pairs is not None:
        metrics.update(evaluate_next_sentence(trainer, eval_pairs))
        metrics["objective"] = settings.objective
    with open(os.path.join(out, "evaluation.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def _log(verbose, message):
    if verbose:
        print(message, flush=True)

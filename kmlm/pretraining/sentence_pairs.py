"""The sentence-pair pieces of `kmlm pretrain --objective mlm+nsp|mlm+sop`.

BERT adds next-sentence prediction (NSP: is B the text that follows A, or a random one?)
and ALBERT sentence-order prediction (SOP: are A and B in order, or swapped?). Both read a
pooled [CLS] vector (`kmlm.layers.Pooler`) through a 2-way classifier; the loss is the sum
of the masked-LM loss and the pair loss. The job itself is `kmlm.pretraining.job.pretrain`,
with the objective `kmlm.pretraining.objectives.SentencePairPrediction`.

The run directory is a normal one: `model.keras` is the `MaskedLMModel` (so fill-mask,
evaluate, score, generate and export work as usual) and `pooler.safetensors` holds the
pooler and the pair classifier, which `Run.pooler_weights` returns for fine-tuning.
"""

import keras
import numpy as np
import tensorflow as tf

from kmlm.layers.pooler import Pooler
from kmlm.model import ENCODER_INPUTS, model_inputs
from kmlm.training import MaskedPerplexity, make_optimizer, masked_lm_loss


def build_sentence_pretraining_model(mlm_model):
    """Wraps a `MaskedLMModel` with a pooler and a 2-way sentence-pair classifier.

    The encoder and MLM head are shared with `mlm_model`, so training this model trains it.

    Returns:
        A functional model with the `MaskedLMModel` inputs and outputs
        `{"masked_lm": [B, P, V] logits, "next_sentence": [B, 2] logits}`.

    Example:
    >>> from kmlm import ModelConfig, build_mlm_model
    >>> mlm = build_mlm_model(ModelConfig.from_preset("tiny", vocabulary_size=100))
    >>> sorted(build_sentence_pretraining_model(mlm).output)
    ['masked_lm', 'next_sentence']
    """
    config = mlm_model.config
    inputs = model_inputs(ENCODER_INPUTS + ("mask_positions",))
    sequence = mlm_model.encoder({name: inputs[name] for name in ENCODER_INPUTS})
    logits = mlm_model.get_layer("mlm_head")(sequence, inputs["mask_positions"])
    pooled = Pooler(initializer_range=config.initializer_range, name="pooler")(sequence)
    pair_logits = keras.layers.Dense(
        2, kernel_initializer=keras.initializers.TruncatedNormal(stddev=config.initializer_range),
        dtype="float32", name="next_sentence",
    )(pooled)
    return keras.Model(inputs, {"masked_lm": logits, "next_sentence": pair_logits}, name="sentence_pretraining")


def compile_for_sentence_pretraining(model, *, learning_rate=5e-4, total_steps=10_000, warmup_steps=None,
                                     weight_decay=0.01, clipnorm=1.0, jit_compile=True, schedule="linear",
                                     beta_2=0.98, epsilon=1e-6, decay_steps=None):
    """Compiles a `build_sentence_pretraining_model` model: summed MLM + pair losses,
    masked accuracy and perplexity for the MLM output, accuracy for the pair output."""
    model.compile(
        optimizer=make_optimizer(learning_rate, total_steps, warmup_steps, weight_decay, clipnorm, schedule,
                                 beta_2=beta_2, epsilon=epsilon, decay_steps=decay_steps),
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

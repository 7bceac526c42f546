"""Held-out masked-LM evaluation: masked accuracy, loss and perplexity."""

import math

import keras
import numpy as np
import tensorflow as tf

from kmlm.pipelines import MaskingConfig, load_documents, mlm_dataset, split_documents

# Held-out masked accuracy is measured one way whatever a run trained with: token masking of
# 15% (80% [MASK], 10% random, 10% kept) drawn with one fixed seed, so numbers compare across
# runs, recipes and models.
EVAL_SEED = 20_240_601
EVAL_MASK_RATE = 0.15


def evaluation_masking(seed=EVAL_SEED):
    """The `MaskingConfig` of every held-out evaluation.

    Example:
    >>> masking = evaluation_masking()
    >>> masking.strategy, masking.rate, masking.seed == EVAL_SEED
    ('token', 0.15, True)
    """
    return MaskingConfig(strategy="token", rate=EVAL_MASK_RATE, mask_token_rate=0.8, random_token_rate=0.1, seed=seed)


def eval_dataset(data, vocabulary, corpus=None, batch_size=None, seed=EVAL_SEED):
    """Deterministic evaluation batches of a run (its `DataRecord`: corpus, rows, case).

    Without `corpus` the held-out split of the training corpus is used; a `corpus` given
    explicitly is evaluated whole (it is the user's own held-out text). The masks are
    `evaluation_masking(seed)`, whatever masking the run trained with.
    """
    if corpus is None:
        documents = split_documents(
            load_documents(data.corpus, one_per_line=data.one_per_line), "eval", data.eval_fraction
        )
    else:
        documents = load_documents(corpus, one_per_line=data.one_per_line)
    return mlm_dataset(
        documents,
        vocabulary,
        seq_len=data.seq_len,
        batch_size=batch_size or data.batch_size,
        masking=evaluation_masking(seed),
        lowercase=data.lowercase,
        packing=data.packing,
        deterministic_eval=True,
    )


def evaluate_masked_lm(model, dataset, max_batches=None, verbose=1):
    """Exact corpus-level masked metrics of `model` over `dataset`.

    Every masked slot counts once (batches with fewer masked tokens weigh less), unlike
    the per-batch averages of `model.evaluate`.

    Returns:
        dict with `masked_accuracy`, `loss` (mean cross-entropy, nats), `perplexity`,
        `masked_tokens` and `batches`.
    """

    @tf.function
    def batch_totals(features, mask_ids, mask_weights):
        logits = model(features, training=False)
        losses = keras.losses.sparse_categorical_crossentropy(mask_ids, logits, from_logits=True)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), mask_ids), tf.float32)
        return tf.reduce_sum(losses * mask_weights), tf.reduce_sum(correct * mask_weights), tf.reduce_sum(mask_weights)

    if max_batches is not None:
        dataset = dataset.take(max_batches)
    progress = keras.utils.Progbar(None, verbose=verbose, unit_name="batch")
    total_loss = total_correct = total_weight = 0.0
    batches = tokens = 0
    for features, mask_ids, mask_weights in dataset:
        tokens += int(tf.math.count_nonzero(features["document_ids"]))
        loss, correct, weight = (float(v) for v in batch_totals(features, mask_ids, mask_weights))
        total_loss += loss
        total_correct += correct
        total_weight += weight
        batches += 1
        progress.update(batches)
    if batches == 0:
        raise ValueError("the evaluation text is empty: no document reached the evaluation (a held-out split "
                         "of identical documents holds none); evaluate with --corpus on other text")
    if total_weight == 0:
        raise ValueError(f"none of the {tokens} tokens of the evaluation text can be masked: all are [CLS], "
                         "[SEP] or [UNK] (the run's vocabulary does not cover this text); evaluate on text like "
                         "the training corpus")
    mean_loss = total_loss / total_weight
    return {
        "masked_accuracy": total_correct / total_weight,
        "loss": mean_loss,
        "perplexity": math.exp(min(mean_loss, 700.0)),
        "masked_tokens": int(total_weight),
        "batches": batches,
    }


def unigram_entropy(dataset, vocabulary_size, max_batches=None):
    """Entropy (nats) of the masked-target distribution: the loss of a model that ignores
    context and predicts token frequencies. A useful floor for 'did it learn anything'."""
    counts = np.zeros(vocabulary_size, np.float64)
    if max_batches is not None:
        dataset = dataset.take(max_batches)
    for _, mask_ids, mask_weights in dataset:
        np.add.at(counts, mask_ids.numpy().ravel(), mask_weights.numpy().ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())

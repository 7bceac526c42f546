"""Which part of the masked-LM gap to keras-hub is where: swaps one component at a time.

`heldout_eval.py` compares whole recipes; this script trains ONE arm made of four
independently chosen parts, for a fixed number of optimizer steps (not minutes, so a busy
machine changes the wall time, never the result), and scores it with budget_vs_kerashub's
one evaluation (held-out split, one document per row at S=128, token masking 15%, five seeds):

  --model      kmlm: `kmlm.build_mlm_model` of the run's ModelConfig (its norm placement,
               dropout, positions); kerashub: `keras_hub.models.BertMaskedLM` of the same
               shape (layers, hidden, heads, FFN, vocabulary, dropout).
  --data       kmlm: `kmlm.pipelines.mlm_dataset` (one document per row, token masking 15%,
               80/10/10, seed --seed); kerashub: `BertMaskedLMPreprocessor` over the
               shuffled training documents, as budget_vs_kerashub.py trains keras-hub.
  --optimizer  kmlm: `kmlm.training.make_optimizer` (beta_2 0.98, epsilon 1e-6, global clip
               1.0, weight decay 0.01 off LayerNorm and biases), constant rate;
               kerashub: `keras.optimizers.AdamW(rate)` with Keras' defaults.
  --loss       kmlm: `MaskedLMLoss`, the mean over the batch's masked tokens;
               kerashub: `keras.losses.SparseCategoricalCrossentropy(from_logits=True)` with
               the mask weights, i.e. the weighted sum over the B x P slots divided by B x P.

The corpus, vocabulary, case and model shape come from a finished `kmlm pretrain` run. The
features of either data pipeline are renamed for either model (document_ids = padding_mask).

Example (all four parts keras-hub's but the model: does kmlm's model learn as fast?):

    python benchmarks/kerashub_swap.py runs/abl/khexact64 --steps 720 --model kmlm \\
        --data kerashub --optimizer kerashub --loss kerashub
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import budget_vs_kerashub  # noqa: E402

BENCHMARK = "kerashub_swap"
PARTS = ("model", "data", "optimizer", "loss")
CHOICES = ("kmlm", "kerashub")


def parse_args(argv=None):
    from kmlm.pretraining.settings import PretrainSettings

    parser = argparse.ArgumentParser(
        description="Train one masked-LM arm whose model, data, optimizer and loss are each kmlm's or keras-hub's, "
        "for a number of steps, and score it on the held-out split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN_DIR", help="a finished kmlm pretrain run: corpus, vocabulary, model shape")
    parser.add_argument("--steps", type=int, default=720, help="optimizer steps to train")
    parser.add_argument("--seq-len", type=int, default=64, help="training row length S")
    parser.add_argument("--batch-size", type=int, default=32, help="training rows per batch B")
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="constant learning rate of either optimizer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, the masks and the kmlm pipeline")
    for part in PARTS:
        parser.add_argument(f"--{part}", choices=CHOICES, default="kmlm", help=f"whose {part}")
    defaults = PretrainSettings()
    parser.add_argument("--kmlm-beta-2", type=float, default=defaults.adam_beta2, help="beta_2 of kmlm's optimizer")
    parser.add_argument("--kmlm-epsilon", type=float, default=defaults.adam_epsilon, help="epsilon of kmlm's optimizer")
    parser.add_argument("--kmlm-clip-norm", type=float, default=defaults.clip_norm,
                        help="global clip norm of kmlm's optimizer (0: none)")
    parser.add_argument("--kmlm-weight-decay", type=float, default=defaults.weight_decay,
                        help="weight decay of kmlm's optimizer (off LayerNorm and biases)")
    parser.add_argument("--eval-seq-len", type=int, default=128, help="row length of the evaluation batches")
    parser.add_argument("--jsonl", metavar="PATH", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    common.require_positive(parser, args, ("steps", "seq_len", "batch_size", "eval_seq_len"))
    if not args.learning_rate > 0:
        parser.error("--learning-rate must be positive")
    if not os.path.isfile(os.path.join(args.run, "config.json")):
        parser.error(f"{args.run} is not a finished kmlm run directory (no config.json)")
    return args


def kmlm_features(features, labels, weights):
    import tensorflow as tf

    return ({"token_ids": features["token_ids"], "segment_ids": features["segment_ids"],
             "document_ids": tf.cast(features["padding_mask"], tf.int32),
             "mask_positions": features["mask_positions"]}, labels, weights)


def kerashub_features(features, labels, weights):
    import tensorflow as tf

    return ({"token_ids": features["token_ids"], "segment_ids": features["segment_ids"],
             "padding_mask": tf.cast(tf.not_equal(features["document_ids"], 0), tf.int32),
             "mask_positions": features["mask_positions"]}, labels, weights)


def training_data(args, run, train_documents, predictions):
    """Batches (features, mask_ids, mask_weights) in the layout of the chosen model."""
    import keras_hub
    import tensorflow as tf

    from kmlm import pipelines

    lowercase = run.config.data.lowercase
    if args.data == "kerashub":
        texts = [text.decode("utf-8") for text in train_documents.as_numpy_iterator()]
        preprocessor = keras_hub.models.BertMaskedLMPreprocessor(
            budget_vs_kerashub.kerashub_tokenizer(list(run.vocabulary), lowercase), sequence_length=args.seq_len,
            mask_selection_rate=budget_vs_kerashub.MASK_RATE, mask_selection_length=predictions)
        batches = budget_vs_kerashub.kerashub_rows(texts, args.batch_size).map(
            preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
        rename = kmlm_features if args.model == "kmlm" else None
    else:
        masking = pipelines.MaskingConfig(strategy="token", rate=budget_vs_kerashub.MASK_RATE, mask_token_rate=0.8,
                                          random_token_rate=0.1, seed=args.seed)
        batches = pipelines.mlm_dataset(train_documents, run.vocabulary, seq_len=args.seq_len,
                                        batch_size=args.batch_size, masking=masking, lowercase=lowercase,
                                        packing=False)
        rename = kerashub_features if args.model == "kerashub" else None
    if rename is not None:
        batches = batches.map(rename)
    return batches.prefetch(tf.data.AUTOTUNE)


def build_arm(args, model_config):
    """(compiled model, caller of the evaluation) of the chosen model, optimizer and loss."""
    import keras

    from kmlm.model import build_mlm_model
    from kmlm.training import make_optimizer, masked_lm_loss

    if args.model == "kmlm":
        model, caller = build_mlm_model(model_config), budget_vs_kerashub.kmlm_caller
    else:
        model = budget_vs_kerashub.kerashub_masked_lm(model_config, model_config.vocabulary_size, args.seq_len)
        caller = budget_vs_kerashub.kerashub_caller
    if args.optimizer == "kmlm":
        optimizer = make_optimizer(args.learning_rate, total_steps=args.steps, warmup_steps=1, schedule="constant",
                                   weight_decay=args.kmlm_weight_decay, clipnorm=args.kmlm_clip_norm or None,
                                   beta_2=args.kmlm_beta_2, epsilon=args.kmlm_epsilon)
    else:
        optimizer = keras.optimizers.AdamW(args.learning_rate)
    loss = masked_lm_loss() if args.loss == "kmlm" else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
                  jit_compile=True)
    return model, caller


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from kmlm import pipelines
    from kmlm.run_directory import load_run

    warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
    run = load_run(args.run)
    data = dataclasses.replace(run.config.data, seq_len=args.eval_seq_len, batch_size=32)
    evaluation = budget_vs_kerashub.evaluation_batches(data, run.vocabulary)
    documents = pipelines.load_documents(data.corpus, one_per_line=data.one_per_line)
    train_documents = pipelines.split_documents(documents, "train", data.eval_fraction)
    keras.utils.set_random_seed(args.seed)
    predictions = pipelines.max_predictions_for(args.seq_len, budget_vs_kerashub.MASK_RATE)
    model, caller = build_arm(args, run.config.model)
    batches = training_data(args, run, train_documents, predictions)
    epochs = max(1, min(10, args.steps))
    per_epoch = -(-args.steps // epochs)
    history = model.fit(batches, steps_per_epoch=per_epoch, epochs=epochs, verbose=0,
                        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(
                            f"  step {(epoch + 1) * per_epoch}: training loss {logs['loss']:.3f}", file=sys.stderr,
                            flush=True))])
    score = budget_vs_kerashub.pooled_accuracy(caller(model), evaluation)
    arm = " ".join(f"{part}={getattr(args, part)}" for part in PARTS)
    steps = int(model.optimizer.iterations.numpy())
    print(f"{arm}: {steps} steps, held-out masked accuracy {score['masked_accuracy']:.4f}, loss {score['loss']:.3f} "
          f"({score['masked_tokens']} masked tokens)", file=sys.stderr)
    machine = common.machine()
    for measurement, unit in (("masked_accuracy", "fraction"), ("loss", "nats")):
        common.emit(common.record(
            BENCHMARK, measurement, arm, score[measurement], unit, higher_is_better=measurement == "masked_accuracy",
            steps=steps, seed=args.seed, learning_rate=args.learning_rate,
            shape=dict(seq_len=args.seq_len, batch_size=args.batch_size), masked_tokens=score["masked_tokens"],
            kmlm_optimizer=dict(beta_2=args.kmlm_beta_2, epsilon=args.kmlm_epsilon, clip_norm=args.kmlm_clip_norm,
                                weight_decay=args.kmlm_weight_decay) if args.optimizer == "kmlm" else None,
            final_training_loss=float(history.history["loss"][-1]), corpus=data.corpus, machine=machine),
            jsonl_path=args.jsonl)


if __name__ == "__main__":
    main()

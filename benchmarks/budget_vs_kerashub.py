"""Held-out masked accuracy at an EQUAL wall-clock training budget: `kmlm pretrain` vs keras-hub.

Both arms learn from the same training documents of one corpus, with one WordPiece
vocabulary, at the same model shape, row length S and batch size B, for the same number of
minutes of training, one after the other (never at the same time):

  kmlm      the real command, in a fresh process, the way a user runs it:
            `python -m kmlm pretrain --corpus C --preset P --time-budget MINUTES --seq-len S
            --batch-size B --quiet [--kmlm-flags ...] --out DIR` with all its defaults
            (packing, its optimizer and its schedule over the budget, per-epoch checkpoints).
            It learns the vocabulary; DIR/vocab.txt is then the vocabulary of both arms.
  kerashub  keras_hub.models.BertMaskedLM trained the way its documentation shows:
            BertBackbone of the run's shape (layers, hidden, heads, FFN, vocabulary size,
            dropout; max_sequence_length max(512, S)), BertTokenizer(vocabulary=the run's
            vocab.txt, lowercase=the run's), BertMaskedLMPreprocessor(sequence_length=S,
            mask_selection_rate=0.15, mask_selection_length=P, P =
            kmlm.pipelines.max_predictions_for(S, 0.15)), BertMaskedLM(backbone,
            preprocessor=None) compiled with keras.optimizers.AdamW(5e-4) (constant, no
            warmup), SparseCategoricalCrossentropy(from_logits=True), weighted
            SparseCategoricalAccuracy and jit_compile=True. Its data are the training
            documents kmlm trains on (`split_documents(load_documents(C), "train",
            eval_fraction)`), one per row: shuffled (whole-corpus buffer, seed 0), repeated,
            batched B (last partial batch dropped), mapped through the preprocessor.
            `model.fit(steps_per_epoch=50, epochs=10**9)`, no validation.

The budget is measured for keras-hub exactly as kmlm's TrainingClock measures it: the clock
starts when the FIRST train step has finished (that step traces and XLA-compiles: start-up),
pauses during validation (keras-hub has none; kmlm validates 4 held-out batches per epoch)
and training stops at the first step that ends past the budget. "steps" are optimizer steps,
the untimed first one included; "train seconds" is the clock.

Evaluation is IDENTICAL for both models: one function, `heldout_accuracy(call_model,
batches)`, over the same batches. They are the held-out split of the corpus
(`split_documents(..., "eval", eval_fraction)`), ONE DOCUMENT PER ROW (no packing: keras-hub's
model cannot keep packed documents apart), built by `kmlm.pipelines.mlm_dataset(...,
masking=evaluation_masking(seed), packing=False, deterministic_eval=True)`: token masking at
15% (80/10/10), pooled over the five fixed seeds EVAL_SEED + k (k = 0..4), at most 100 batches
each. kmlm's model gets token_ids, segment_ids, document_ids and mask_positions; keras-hub's
the same token_ids, segment_ids and mask_positions with padding_mask = (document_ids != 0).
Masked accuracy and loss are pooled over every masked slot (mask_weights).

Tokens/s counts real (non-padding) tokens of the timed steps (all but the first) per train
second, [CLS]/[SEP] included. They are counted by replaying each arm's training pipeline
afterwards (kmlm: `mlm_dataset` with the run's data settings and seed, `document_ids != 0`;
keras-hub: the same shuffled, batched documents, min(WordPiece length + 2, S) per row) on at
most --count-batches batches, scaled to all timed steps when there were more. The replayed
kmlm shuffle order need not be the run's own (the global TensorFlow seed differs between the
two processes), which hardly moves the count when documents are packed. Slot tokens/s
(B*S per timed step, padding included) is reported too.

Reported per arm (medians over --rounds; rounds alternate kmlm, kerashub, kmlm, ...):
held-out masked accuracy and loss, steps, train seconds, effective and slot tokens/s, the
non-padding share of the rows; then the accuracy difference kmlm - kerashub (target >= +0.05)
as the difference of the medians and the median of the per-round differences. One JSON line
per measurement on stdout (benchmarks/common.py), the table on stderr. Run directories and
the kmlm logs stay in --work-dir (default: a new temporary folder).

Example:
    python benchmarks/budget_vs_kerashub.py --preset mini --budget 10 --jsonl out.jsonl
    python benchmarks/budget_vs_kerashub.py --preset tiny --budget 0.2        # smoke test
    python benchmarks/budget_vs_kerashub.py --rounds 3 --kmlm-flags "--masking whole_word"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

BENCHMARK = "budget_vs_kerashub"
ARMS = ("kmlm", "kerashub")
TARGET_DIFFERENCE = 0.05
MASK_RATE = 0.15
EVAL_SEEDS = 5
EVAL_BATCHES = 100
STEPS_PER_EPOCH = 50
KERASHUB_LEARNING_RATE = 5e-4
SEED = 0
KMLM_INPUTS = ("token_ids", "segment_ids", "document_ids", "mask_positions")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Held-out masked accuracy at an equal wall-clock training budget: the real "
        "`kmlm pretrain` vs keras-hub BertMaskedLM trained as its docs show.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--corpus", default="builtin:python-docs",
                        help="any corpus source kmlm accepts: builtin:python-docs, a file, a folder, a glob, "
                        "tfds:NAME")
    parser.add_argument("--preset", default="mini", help="kmlm model preset (tiny, mini, small, ...)")
    parser.add_argument("--budget", type=float, default=10.0, metavar="MINUTES",
                        help="training minutes of each arm (kmlm --time-budget)")
    parser.add_argument("--seq-len", type=int, default=128, help="row length S")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch B")
    parser.add_argument("--kmlm-flags", default="",
                        help="extra flags for `kmlm pretrain`, one shell-quoted string (default: none, "
                        "its defaults)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs per arm, alternating kmlm, kerashub, kmlm, ...; medians are reported")
    parser.add_argument("--count-batches", type=int, default=500,
                        help="at most this many timed batches per run are replayed to count non-padding tokens")
    parser.add_argument("--work-dir", default=None,
                        help="folder for the kmlm run directories and logs (default: a new temporary folder)")
    parser.add_argument("--jsonl", metavar="PATH", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    common.require_positive(parser, args, ("seq_len", "batch_size", "rounds", "count_batches"))
    if not args.budget > 0:
        parser.error("--budget must be a positive number of minutes")
    try:
        args.extra_flags = shlex.split(args.kmlm_flags)
    except ValueError as error:
        parser.error(f"--kmlm-flags: {error}")
    owned = {"--corpus", "--preset", "--time-budget", "--steps", "--out", "--seq-len", "--batch-size"}
    clashing = sorted({flag.split("=", 1)[0] for flag in args.extra_flags} & owned)
    if clashing:
        parser.error(f"--kmlm-flags must not set {', '.join(clashing)}: this script sets them for both arms")
    return args


def log(message=""):
    print(message, file=sys.stderr, flush=True)


def median(values):
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------
# Arm (a): the real `kmlm pretrain` command


def run_kmlm(args, out):
    """Runs `kmlm pretrain` into `out` in a fresh process; returns what its run recorded."""
    command = [sys.executable, "-m", "kmlm", "pretrain", "--corpus", args.corpus, "--preset", args.preset,
               "--time-budget", f"{args.budget:g}", "--seq-len", str(args.seq_len),
               "--batch-size", str(args.batch_size), "--quiet", *args.extra_flags, "--out", out]
    log_path = out + ".log"
    log(f"[kmlm] {shlex.join(command[2:])}  (output: {log_path})")
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    with open(log_path, "w") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - started
    if result.returncode:
        with open(log_path) as output:
            log(output.read()[-3000:])
        raise SystemExit(f"`kmlm pretrain` failed with exit code {result.returncode} (log: {log_path})")
    with open(os.path.join(out, "progress.json")) as file:
        progress = json.load(file)
    return {"steps": int(progress["steps"]), "train_seconds": float(progress["train_seconds"]),
            "first_step_seconds": progress.get("first_step_seconds"), "wall_seconds": wall,
            "command": shlex.join(command[2:])}


# ---------------------------------------------------------------------------------------
# Arm (b): keras-hub BertMaskedLM, as its documentation trains it


def make_budget_clock(budget_seconds, max_steps=None):
    """A Keras callback that keeps kmlm's TrainingClock rules: start at the end of the first
    step, pause while validating, stop at the first step that ends past the budget (or, with
    `max_steps`, at that many optimizer steps if they come first)."""
    import keras

    class BudgetClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.fit_began = None
            self.started = None
            self.paused_at = None
            self.first_step_seconds = None

        def elapsed(self):
            if self.started is None:
                return 0.0
            now = self.paused_at if self.paused_at is not None else time.perf_counter()
            return now - self.started

        def on_train_begin(self, logs=None):
            self.fit_began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if self.started is None:
                self.started = time.perf_counter()
                self.first_step_seconds = self.started - self.fit_began
            if self.elapsed() >= budget_seconds or (
                    max_steps is not None and int(self.model.optimizer.iterations.numpy()) >= max_steps):
                self.model.stop_training = True

        def on_test_begin(self, logs=None):
            if self.started is not None and self.paused_at is None:
                self.paused_at = time.perf_counter()

        def on_test_end(self, logs=None):
            if self.paused_at is not None:
                self.started += time.perf_counter() - self.paused_at
                self.paused_at = None

        def on_train_end(self, logs=None):
            if self.started is not None and self.paused_at is None:
                self.paused_at = time.perf_counter()

    return BudgetClock()


def kerashub_tokenizer(vocabulary, lowercase):
    import keras_hub

    return keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=lowercase)


def kerashub_rows(train_texts, batch_size):
    """The documents as keras-hub trains on them, before preprocessing: shuffled, repeated,
    batched (the same order on every call: the shuffle is seeded)."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices(train_texts)
        .shuffle(len(train_texts), seed=SEED)
        .repeat()
        .batch(batch_size, drop_remainder=True)
    )


def kerashub_masked_lm(model_config, vocabulary_size, seq_len):
    """keras-hub's BertMaskedLM (no preprocessor) of a kmlm ModelConfig's shape and dropout."""
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=model_config.num_layers,
        num_heads=model_config.num_heads,
        hidden_dim=model_config.hidden_dim,
        intermediate_dim=model_config.intermediate_dim,
        dropout=model_config.dropout,
        max_sequence_length=max(512, seq_len),
    )
    return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)


def train_kerashub(args, model_config, vocabulary, lowercase, train_texts, predictions):
    """Trains BertMaskedLM for the budget; returns (model, record)."""
    import keras
    import keras_hub
    import tensorflow as tf

    keras.utils.clear_session()
    keras.utils.set_random_seed(SEED)
    tokenizer = kerashub_tokenizer(vocabulary, lowercase)
    preprocessor = keras_hub.models.BertMaskedLMPreprocessor(
        tokenizer, sequence_length=args.seq_len, mask_selection_rate=MASK_RATE,
        mask_selection_length=predictions,
    )
    dataset = (kerashub_rows(train_texts, args.batch_size)
               .map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    model = kerashub_masked_lm(model_config, len(vocabulary), args.seq_len)
    model.compile(
        optimizer=keras.optimizers.AdamW(KERASHUB_LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
        jit_compile=True,
    )
    clock = make_budget_clock(60.0 * args.budget, getattr(args, "max_steps", None))
    log(f"[kerashub] BertMaskedLM L{model_config.num_layers}/H{model_config.hidden_dim}/"
        f"{model_config.num_heads} heads/FFN {model_config.intermediate_dim}, V={len(vocabulary)}, "
        f"S={args.seq_len}, B={args.batch_size}, P={predictions}; AdamW({KERASHUB_LEARNING_RATE:g}) constant; "
        f"{args.budget:g}-minute budget")
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=STEPS_PER_EPOCH, epochs=10**9, verbose=0, shuffle=False,
              callbacks=[clock])
    wall = time.perf_counter() - started
    record = {"steps": int(model.optimizer.iterations.numpy()), "train_seconds": clock.elapsed(),
              "first_step_seconds": clock.first_step_seconds, "wall_seconds": wall}
    return model, record


# ---------------------------------------------------------------------------------------
# The one evaluation


def evaluation_batches(data, vocabulary):
    """{seed: [(features, mask_ids, mask_weights), ...]}: the held-out split, one document
    per row, token masking at 15% with seed EVAL_SEED + k, at most EVAL_BATCHES batches each."""
    from kmlm import pipelines
    from kmlm.pretraining.evaluation import EVAL_SEED, evaluation_masking

    documents = pipelines.split_documents(
        pipelines.load_documents(data.corpus, one_per_line=data.one_per_line), "eval", data.eval_fraction)
    batches = {}
    for k in range(EVAL_SEEDS):
        seed = EVAL_SEED + k
        dataset = pipelines.mlm_dataset(
            documents, vocabulary, seq_len=data.seq_len, batch_size=data.batch_size,
            masking=evaluation_masking(seed), lowercase=data.lowercase, packing=False,
            deterministic_eval=True,
        )
        batches[seed] = list(dataset.take(EVAL_BATCHES))
    return batches


def heldout_accuracy(call_model, batches):
    """Masked accuracy and mean loss (nats) pooled over every masked slot of `batches`.

    `call_model(features)` gives the logits [B, P, V] of one batch's features (the dict the
    kmlm pipeline yields); `batches` is an iterable of (features, mask_ids, mask_weights).
    Both arms are scored by this function on the same batches.
    """
    import tensorflow as tf

    correct = loss = weight = 0.0
    count = 0
    for features, mask_ids, mask_weights in batches:
        logits = tf.cast(call_model(features), tf.float32)
        mask_ids = tf.cast(mask_ids, tf.int32)
        mask_weights = tf.cast(mask_weights, tf.float32)
        used = mask_weights > 0
        hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), mask_ids), tf.float32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=mask_ids, logits=logits)
        # An all-padding filler row may give non-finite logits; its slots weigh 0 either way.
        correct += float(tf.reduce_sum(tf.where(used, hits * mask_weights, 0.0)))
        loss += float(tf.reduce_sum(tf.where(used, losses * mask_weights, 0.0)))
        weight += float(tf.reduce_sum(mask_weights))
        count += 1
    if weight == 0:
        raise ValueError("the held-out split produced no masked tokens; use a corpus with more text")
    return {"masked_accuracy": correct / weight, "loss": loss / weight, "masked_tokens": int(weight),
            "batches": count}


def pooled_accuracy(call_model, batches_by_seed):
    """`heldout_accuracy` over the batches of every evaluation seed together."""
    return heldout_accuracy(call_model, [batch for seed in sorted(batches_by_seed) for batch in batches_by_seed[seed]])


def kmlm_caller(model):
    import tensorflow as tf

    @tf.function
    def call(features):
        return model({name: features[name] for name in KMLM_INPUTS}, training=False)

    return call


def kerashub_caller(model):
    import tensorflow as tf

    @tf.function
    def call(features):
        inputs = {
            "token_ids": features["token_ids"],
            "segment_ids": features["segment_ids"],
            "padding_mask": tf.cast(tf.not_equal(features["document_ids"], 0), tf.int32),
            "mask_positions": features["mask_positions"],
        }
        return model(inputs, training=False)

    return call


def tokenization_agreement(data, vocabulary, texts):
    """Share of the held-out documents that keras-hub's BertTokenizer and kmlm's tokenizer
    turn into the same ids (keras-hub trains on its own tokenization, both are scored on kmlm's)."""
    import tensorflow as tf

    from kmlm import pipelines

    if not texts:
        return float("nan")

    def ids(tokenizer):
        tokens = tokenizer(tf.constant(texts))  # eager keras-hub tokenizers give lists of lists
        return tokens.to_list() if hasattr(tokens, "to_list") else [list(row) for row in tokens]

    ours = ids(pipelines.make_tokenizer(vocabulary, lowercase=data.lowercase))
    theirs = ids(kerashub_tokenizer(vocabulary, data.lowercase))
    return sum(a == b for a, b in zip(ours, theirs)) / len(texts)


# ---------------------------------------------------------------------------------------
# Non-padding tokens of the timed steps


def count_kmlm_tokens(run, train_documents, timed_steps, cap):
    """(non-padding tokens of the timed batches, batches counted): replays kmlm's pipeline."""
    import tensorflow as tf

    from kmlm import pipelines

    data = run.config.data
    if run.config.training.get("objective", "mlm") != "mlm" or timed_steps < 1:
        return None, 0
    masking = pipelines.MaskingConfig(
        strategy=data.masking, rate=data.mask_rate, mask_token_rate=data.mask_token_rate,
        random_token_rate=data.random_token_rate, seed=int(run.config.training.get("seed", 0)))
    dataset = pipelines.mlm_dataset(
        train_documents, run.vocabulary, seq_len=data.seq_len, batch_size=data.batch_size, masking=masking,
        lowercase=data.lowercase, packing=data.packing)
    counted = min(timed_steps, cap)
    tokens = 0
    for features, _, _ in dataset.skip(1).take(counted):
        tokens += int(tf.math.count_nonzero(features["document_ids"]))
    return tokens, counted


def count_kerashub_tokens(train_texts, vocabulary, lowercase, args, timed_steps, cap):
    """(non-padding tokens of the timed batches, batches counted): replays keras-hub's row order."""
    import tensorflow as tf

    if timed_steps < 1:
        return None, 0
    tokenizer = kerashub_tokenizer(vocabulary, lowercase)

    @tf.autograph.experimental.do_not_convert
    def row_tokens(texts):
        lengths = tf.cast(tokenizer(texts).row_lengths(), tf.int64) + 2
        return tf.reduce_sum(tf.minimum(lengths, args.seq_len))

    counted = min(timed_steps, cap)
    rows = kerashub_rows(train_texts, args.batch_size).skip(1).take(counted).map(row_tokens)
    return int(sum(int(value) for value in rows)), counted


def throughput(record, tokens, counted, args):
    """Adds effective and slot tokens/s and the non-padding share to an arm's `record`."""
    timed = record["steps"] - 1
    slots = args.batch_size * args.seq_len
    seconds = record["train_seconds"]
    record["slot_tokens_per_second"] = slots * timed / seconds if seconds > 0 else float("nan")
    if tokens is None or counted == 0:
        record["non_padding_share"] = float("nan")
        record["tokens_per_second"] = float("nan")
        record["token_count"] = "not counted"
        return record
    share = tokens / (slots * counted)
    record["non_padding_share"] = share
    record["tokens_per_second"] = share * record["slot_tokens_per_second"]
    record["token_count"] = "exact" if counted == timed else f"share of {counted} of {timed} timed batches"
    return record


# ---------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    import keras_hub  # noqa: F401 - for common.machine()
    import tensorflow as tf  # noqa: F401

    import kmlm
    from kmlm import pipelines
    from kmlm.pretraining.evaluation import EVAL_SEED
    from kmlm.run_directory import load_run

    # BertBackbone builds a pooler the MLM loss never reaches; Keras warns on every trace.
    warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
    if args.preset not in kmlm.PRESETS:
        sys.exit(f"error: unknown preset {args.preset!r}; choose one of {', '.join(kmlm.PRESETS)}")
    try:
        pipelines.check_seq_len(args.seq_len)
    except ValueError as error:
        sys.exit(f"error: {error}")
    work = args.work_dir or tempfile.mkdtemp(prefix="kmlm-budget-")
    os.makedirs(work, exist_ok=True)
    outs = [os.path.join(work, f"kmlm-round{r + 1}") for r in range(args.rounds)]
    taken = [out for out in outs if os.path.exists(out)]
    if taken:
        sys.exit(f"error: {taken[0]} already exists; choose a new --work-dir")
    predictions = pipelines.max_predictions_for(args.seq_len, MASK_RATE)
    log(f"budget {args.budget:g} min per arm, {args.rounds} round(s) alternating kmlm / kerashub; corpus "
        f"{args.corpus}; preset {args.preset}; S={args.seq_len}, B={args.batch_size}, P={predictions}; "
        f"work dir {work}; load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()))

    started = time.perf_counter()
    results = {arm: [] for arm in ARMS}
    shared = None  # set by the first kmlm run: vocabulary, data settings, documents, eval batches
    for r in range(args.rounds):
        # (a) kmlm, in its own process
        record = run_kmlm(args, outs[r])
        run = load_run(outs[r])
        data = run.config.data
        if (data.seq_len, data.batch_size) != (args.seq_len, args.batch_size):
            sys.exit(f"error: the kmlm run used S={data.seq_len}, B={data.batch_size}, not the asked "
                     f"S={args.seq_len}, B={args.batch_size}")
        if shared is None:
            documents = pipelines.load_documents(data.corpus, one_per_line=data.one_per_line)
            train_documents = pipelines.split_documents(documents, "train", data.eval_fraction)
            train_texts = [text.decode("utf-8") for text in train_documents.as_numpy_iterator()]
            eval_texts = [text.decode("utf-8") for text in
                          pipelines.split_documents(documents, "eval", data.eval_fraction).as_numpy_iterator()]
            batches = evaluation_batches(data, run.vocabulary)
            shared = dict(vocabulary=list(run.vocabulary), data=data, model_config=run.config.model,
                          train_documents=train_documents, train_texts=train_texts, batches=batches,
                          agreement=tokenization_agreement(data, run.vocabulary, eval_texts),
                          eval_documents=len(eval_texts))
            preset_shape = kmlm.PRESETS[args.preset]
            model_config = run.config.model
            if (model_config.num_layers, model_config.hidden_dim, model_config.num_heads) != preset_shape:
                log(f"note: the kmlm run's shape differs from preset {args.preset} {preset_shape} "
                    "(--kmlm-flags); keras-hub gets the run's shape")
            log(f"corpus: {len(train_texts)} training documents, {len(eval_texts)} held-out; vocabulary "
                f"{len(run.vocabulary)} tokens (from {outs[r]}/vocab.txt); "
                f"{sum(len(b) for b in batches.values())} evaluation batches over {EVAL_SEEDS} seeds; "
                f"keras-hub tokenizes {shared['agreement']:.1%} of the held-out documents as kmlm does")
        elif list(run.vocabulary) != shared["vocabulary"]:
            log(f"warning: {outs[r]} learned another vocabulary than round 1; keras-hub keeps round 1's")
        if run.config.data.to_dict() != shared["data"].to_dict():
            log(f"warning: {outs[r]} has other data settings than round 1; evaluation keeps round 1's")
        record.update(pooled_accuracy(kmlm_caller(run.model), shared["batches"]))
        tokens, counted = count_kmlm_tokens(run, shared["train_documents"], record["steps"] - 1, args.count_batches)
        results["kmlm"].append(throughput(record, tokens, counted, args))
        log(f"[kmlm] round {r + 1}: {record['steps']} steps in {record['train_seconds']:.1f} s "
            f"(first step {record['first_step_seconds'] or 0:.1f} s, command {record['wall_seconds']:.0f} s); "
            f"held-out masked accuracy {record['masked_accuracy']:.4f}, loss {record['loss']:.3f}")
        del run
        keras.utils.clear_session()

        # (b) keras-hub, in this process, after kmlm has finished
        model, record = train_kerashub(args, shared["model_config"], shared["vocabulary"], shared["data"].lowercase,
                                       shared["train_texts"], predictions)
        record.update(pooled_accuracy(kerashub_caller(model), shared["batches"]))
        tokens, counted = count_kerashub_tokens(shared["train_texts"], shared["vocabulary"], shared["data"].lowercase,
                                                args, record["steps"] - 1, args.count_batches)
        results["kerashub"].append(throughput(record, tokens, counted, args))
        log(f"[kerashub] round {r + 1}: {record['steps']} steps in {record['train_seconds']:.1f} s "
            f"(first step {record['first_step_seconds'] or 0:.1f} s, fit {record['wall_seconds']:.0f} s); "
            f"held-out masked accuracy {record['masked_accuracy']:.4f}, loss {record['loss']:.3f}")
        del model
        keras.utils.clear_session()

    # ----------------------------------------------------------------------------- report
    model_config = shared["model_config"]
    shape = dict(preset=args.preset, num_layers=model_config.num_layers, hidden=model_config.hidden_dim,
                 num_heads=model_config.num_heads, intermediate=model_config.intermediate_dim,
                 vocab_size=len(shared["vocabulary"]), seq_len=args.seq_len, batch_size=args.batch_size,
                 predictions=predictions, corpus=args.corpus, training_documents=len(shared["train_texts"]),
                 heldout_documents=shared["eval_documents"])
    machine = common.machine()
    machine["load_average_end"] = list(os.getloadavg())
    evaluation = dict(seeds=[EVAL_SEED + k for k in range(EVAL_SEEDS)], max_batches_per_seed=EVAL_BATCHES,
                      packing=False, masking="token 0.15 (80/10/10)",
                      masked_tokens=results["kmlm"][0]["masked_tokens"],
                      tokenization_agreement=round(shared["agreement"], 4))
    extra = dict(budget_minutes=args.budget, rounds=args.rounds, kmlm_flags=args.kmlm_flags,
                 kmlm_command=results["kmlm"][0]["command"], shape=shape, evaluation=evaluation, machine=machine)

    def values(arm, key):
        return [row[key] for row in results[arm]]

    def per_round(arm, key, digits=4):
        return [round(v, digits) for v in values(arm, key)]

    entries = []
    measurements = (
        ("heldout_masked_accuracy", "masked_accuracy", "accuracy", True, 4),
        ("heldout_loss", "loss", "nats", False, 4),
        ("steps", "steps", "steps", True, 0),
        ("train_seconds", "train_seconds", "s", True, 2),
        ("tokens_per_second", "tokens_per_second", "tokens/s", True, 1),
        ("slot_tokens_per_second", "slot_tokens_per_second", "tokens/s", True, 1),
        ("non_padding_share", "non_padding_share", "fraction", True, 4),
    )
    for measurement, key, unit, higher, digits in measurements:
        for arm in ARMS:
            value = median(values(arm, key))
            if value != value:  # NaN: not measured
                continue
            base = {}
            if arm == "kmlm":
                base = dict(baseline="kerashub", baseline_value=median(values("kerashub", key)))
            note = {}
            if key == "tokens_per_second":
                note = dict(note="non-padding tokens ([CLS]/[SEP] included) of the timed steps per train second",
                            token_count=results[arm][0]["token_count"])
            elif key == "slot_tokens_per_second":
                note = dict(note="B*S*(steps-1)/train_seconds, padding included")
            elif key == "steps":
                note = dict(note="optimizer steps, the untimed first step included",
                            first_step_seconds=per_round(arm, "first_step_seconds", 2))
            entries.append(common.record(BENCHMARK, measurement, arm, value, unit, higher_is_better=higher,
                                         per_round=per_round(arm, key, digits), **base, **note, **extra))
    accuracy = {arm: median(values(arm, "masked_accuracy")) for arm in ARMS}
    difference = accuracy["kmlm"] - accuracy["kerashub"]
    paired = [k - h for k, h in zip(values("kmlm", "masked_accuracy"), values("kerashub", "masked_accuracy"))]
    entries.append(common.record(
        BENCHMARK, "heldout_masked_accuracy_difference", "kmlm", difference, "accuracy",
        against="kerashub", target=TARGET_DIFFERENCE, meets_target=bool(difference >= TARGET_DIFFERENCE),
        median_paired_difference=round(median(paired), 6), per_round=[round(v, 4) for v in paired],
        note="median kmlm accuracy - median kerashub accuracy, same held-out batches", **extra))
    for entry in entries:
        common.emit(entry, jsonl_path=args.jsonl)

    header = (f"{'arm':<9} {'accuracy':>9} {'loss':>7} {'steps':>7} {'train s':>8} {'tokens/s':>9} "
              f"{'slot tok/s':>10} {'non-pad':>8} {'1st step s':>10}")
    log()
    log(header)
    log("-" * len(header))
    for arm in ARMS:
        share = median(values(arm, "non_padding_share"))
        tokens_per_second = median(values(arm, "tokens_per_second"))
        log(f"{arm:<9} {accuracy[arm]:>9.4f} {median(values(arm, 'loss')):>7.3f} "
            f"{median(values(arm, 'steps')):>7.0f} {median(values(arm, 'train_seconds')):>8.1f} "
            f"{tokens_per_second:>9,.0f} {median(values(arm, 'slot_tokens_per_second')):>10,.0f} "
            f"{share:>8.1%} {median([v or 0 for v in values(arm, 'first_step_seconds')]):>10.1f}")
    log()
    log(f"held-out masked accuracy kmlm - kerashub: {difference:+.4f} (median of the per-round differences "
        f"{median(paired):+.4f}; target >= +{TARGET_DIFFERENCE}: {'met' if difference >= TARGET_DIFFERENCE else 'not met'})")
    log(f"evaluation: {evaluation['masked_tokens']:,} masked tokens over {EVAL_SEEDS} seeds, one held-out "
        f"document per row; tokens/s counted {results['kmlm'][0]['token_count']} (kmlm), "
        f"{results['kerashub'][0]['token_count']} (kerashub)")
    log(f"total {time.perf_counter() - started:.0f} s; run directories in {work}; load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()

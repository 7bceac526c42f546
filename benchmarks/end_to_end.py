"""End-to-end pretraining throughput on real variable-length text: kmlm vs keras-hub.

Both arms train the same model shape (default the kmlm `mini` preset) at the same row length
S and batch size B on the SAME documents with the same WordPiece vocabulary (learned from
the corpus), each through its own standard input pipeline, with `model.fit` pulling batches
from the live tf.data pipeline:

  kmlm      kmlm.pipelines.mlm_dataset (documents packed back to back, kmlm's default
            token masking at 15%, P slots) -> kmlm.build_mlm_model +
            compile_for_pretraining(jit_compile=True)
  kerashub  one document per row: keras_hub.models.BertTokenizer + BertMaskedLMPreprocessor
            (truncate to S, pad, mask_selection_rate 0.15, mask_selection_length P) mapped
            over batches of B documents -> keras_hub.models.BertMaskedLM (BertBackbone of
            the same shape, preprocessor=None), AdamW, SparseCategoricalCrossentropy
            (from_logits), weighted accuracy, jit_compile=True

What counts is the *effective* throughput: non-padding tokens trained on per second. Packing
fills nearly every row slot; one-document-per-row leaves the tail of every short document as
padding, which still costs a full row of compute.

Each arm runs ONE `model.fit(dataset, steps_per_epoch=2 + rounds*steps, epochs=1)` in its own
thread; a callback that timestamps batch ends passes a baton between the two so that exactly
one arm trains at a time, alternating: warmup (2 steps, untimed: they trace and XLA-compile),
then per round a chunk of --steps steps of kmlm, then of kerashub. Both datasets' iterators
therefore stay alive across rounds (no pipeline restart), and a change in machine load hits
both arms alike. A chunk's time runs from the moment its arm gets the baton to the end of
its last step (the step's loss is fetched to the host, so the step has finished).

The non-padding tokens of the timed steps are counted afterwards by replaying each arm's
pipeline (both are deterministic in which rows they yield: seeded shuffles, and the padding
does not depend on the masks) for the same number of batches: kmlm counts
`document_ids != 0`, keras-hub the `padding_mask` sum. [CLS]/[SEP] count as tokens in both.

Reported per arm (medians over the rounds): effective tokens/s, padded row-slot tokens/s
(B*S*steps/s), the non-padding share of the row slots, the warmup time; and the ratio of
effective tokens/s kmlm/kerashub (target >= 3.5x). Every measurement is one JSON line on
stdout (see benchmarks/common.py); the table goes to stderr.

Example:
    python benchmarks/end_to_end.py --rounds 3 --steps 5 --jsonl results.jsonl
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

BENCHMARK = "end_to_end"
ARMS = ("kmlm", "kerashub")
WARMUP_STEPS = 2
TARGET_RATIO = 3.5
MASK_RATE = 0.15
DROPOUT = 0.1
SEED = 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="End-to-end pretraining throughput on real text: kmlm (packing) vs "
        "keras-hub BertMaskedLM (one document per row), in effective (non-padding) tokens/s.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--corpus", default="builtin:python-docs",
                        help="any corpus source kmlm accepts: builtin:python-docs, a file, "
                        "a folder, a glob, tfds:NAME")
    parser.add_argument("--max-documents", type=int, default=None,
                        help="use only the first N documents of the corpus (default: all)")
    parser.add_argument("--preset", default="mini", help="kmlm model preset (tiny, mini, small, ...)")
    parser.add_argument("--vocab-size", type=int, default=8192,
                        help="WordPiece vocabulary size learned from the corpus")
    parser.add_argument("--seq-len", type=int, default=128, help="row length S")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch B")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed chunk")
    parser.add_argument("--no-jit", action="store_true",
                        help="compile both models without XLA (quicker to start; for smoke tests)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed chunks per arm, alternating kmlm / kerashub")
    parser.add_argument("--jsonl", metavar="PATH", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    common.require_positive(parser, args, ("vocab_size", "seq_len", "batch_size", "steps", "rounds"))
    if args.max_documents is not None and args.max_documents < 1:
        parser.error("--max-documents must be at least 1")
    return args


def log(message=""):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Data


def load_corpus(source, max_documents):
    """The documents as a Python list (both arms then read exactly the same texts)."""
    from kmlm import pipelines

    documents = pipelines.load_documents(source)
    if max_documents:
        documents = documents.take(max_documents)
    return [text.decode("utf-8") for text in documents.as_numpy_iterator()]


def kmlm_dataset(texts, vocabulary, args):
    import tensorflow as tf

    from kmlm import pipelines

    documents = tf.data.Dataset.from_tensor_slices(texts)
    return pipelines.mlm_dataset(
        documents, vocabulary, seq_len=args.seq_len, batch_size=args.batch_size,
        masking=pipelines.MaskingConfig(rate=MASK_RATE, seed=SEED), lowercase=True,
        packing=True,
    )


def kerashub_dataset(texts, vocabulary, args, predictions):
    import keras_hub
    import tensorflow as tf

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    preprocessor = keras_hub.models.BertMaskedLMPreprocessor(
        tokenizer, sequence_length=args.seq_len, mask_selection_rate=MASK_RATE,
        mask_selection_length=predictions,
    )
    return (
        tf.data.Dataset.from_tensor_slices(texts)
        .shuffle(2048, seed=SEED)
        .repeat()
        .batch(args.batch_size, drop_remainder=True)
        .map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def counting(dataset, arm):
    """`dataset` plus a counter of the non-padding tokens of the batches taken from it.

    The count runs in a sequential map after the pipeline's final prefetch, so it happens
    when `fit` pulls a batch, not ahead of it; tf.data's `inject_prefetch` optimization,
    which would add a prefetch after that map (and so count batches not yet trained on), is
    turned off. The rest of the pipeline is untouched.
    """
    import tensorflow as tf

    key = "document_ids" if arm == "kmlm" else "padding_mask"
    counter = tf.Variable(0, dtype=tf.int64, trainable=False, name=f"{arm}_non_padding_tokens")

    def count(x, y, sample_weight):
        counter.assign_add(tf.math.count_nonzero(x[key], dtype=tf.int64))
        return x, y, sample_weight

    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    return dataset.map(count).with_options(options), counter


# ---------------------------------------------------------------------------------------
# Models


def build_kmlm_model(args, vocab_size, predictions):
    import kmlm

    config = kmlm.ModelConfig.from_preset(
        args.preset, vocabulary_size=vocab_size, dropout=DROPOUT, attention_dropout=DROPOUT,
        max_position=max(512, args.seq_len),
    )
    model = kmlm.build_mlm_model(config, predictions)
    kmlm.compile_for_pretraining(model, total_steps=100_000, jit_compile=not args.no_jit)
    return model


def build_kerashub_model(args, vocab_size, shape):
    from train_throughput import make_kerashub_arm

    settings = argparse.Namespace(vocab_size=vocab_size, dropout=DROPOUT, seq_len=args.seq_len)
    return make_kerashub_arm(settings, shape, [], jit=not args.no_jit).model


# ---------------------------------------------------------------------------------------
# Alternating fit


class Baton:
    """Lets exactly one arm train at a time, in a fixed alternating order."""

    def __init__(self, order):
        self.order = list(order)
        self.turn = 0
        self.condition = threading.Condition()
        self.error = None

    def wait(self, arm):
        with self.condition:
            self.condition.wait_for(
                lambda: self.error is not None or self.turn >= len(self.order) or self.order[self.turn] == arm
            )
            if self.error is not None:
                raise RuntimeError("the other arm failed")

    def release(self):
        with self.condition:
            self.turn += 1
            self.condition.notify_all()

    def fail(self, error):
        with self.condition:
            self.error = error
            self.condition.notify_all()


def make_timer(arm, baton, chunk_ends, counter, times, tokens):
    """A Keras callback that timestamps chunk ends, reads the non-padding token counter there
    and hands the baton over after each chunk."""
    import keras
    import numpy as np

    class ChunkTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step = 0
            self.started = None

        def on_train_begin(self, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step not in chunk_ends:
                return
            if logs and "loss" in logs:
                np.asarray(logs["loss"])  # the step has finished when its loss is on the host
            times.append(time.perf_counter() - self.started)
            tokens.append(int(counter.numpy()))
            chunk = len(times) - 1
            log(f"{arm}: {'warmup' if chunk == 0 else f'round {chunk}'} took {times[-1]:.1f} s, "
                f"{tokens[-1] - (tokens[-2] if chunk else 0):,} non-padding tokens")
            baton.release()
            if self.step != chunk_ends[-1]:
                baton.wait(arm)
                self.started = time.perf_counter()

    return ChunkTimer()


def run_arm(arm, model, dataset, counter, total_steps, baton, chunk_ends, times, tokens, errors):
    try:
        baton.wait(arm)
        model.fit(dataset, steps_per_epoch=total_steps, epochs=1, verbose=0, shuffle=False,
                  callbacks=[make_timer(arm, baton, chunk_ends, counter, times, tokens)])
    except BaseException as error:  # noqa: BLE001 - reported by the main thread
        errors[arm] = error
        baton.fail(error)


# ---------------------------------------------------------------------------------------


def median(values):
    return statistics.median(values) if values else float("nan")


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    import keras_hub  # noqa: F401 - for common.machine()
    import tensorflow as tf  # noqa: F401

    import kmlm
    from kmlm import pipelines

    # BertBackbone builds a pooler the MLM loss never reaches; Keras warns on every trace.
    warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
    keras.utils.set_random_seed(SEED)

    if args.preset not in kmlm.PRESETS:
        sys.exit(f"error: unknown preset {args.preset!r}; choose one of {', '.join(kmlm.PRESETS)}")
    try:
        pipelines.check_seq_len(args.seq_len)
    except ValueError as error:
        sys.exit(f"error: {error}")
    num_layers, hidden, num_heads = kmlm.PRESETS[args.preset]
    predictions = pipelines.max_predictions_for(args.seq_len, MASK_RATE)

    started = time.perf_counter()
    try:
        texts = load_corpus(args.corpus, args.max_documents)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    if not texts:
        sys.exit(f"error: corpus {args.corpus!r} holds no documents")
    vocabulary = pipelines.learn_vocabulary(texts, args.vocab_size, lowercase=True)
    vocab_size = len(vocabulary)
    shape = dict(preset=args.preset, num_layers=num_layers, hidden=hidden, num_heads=num_heads,
                 intermediate=4 * hidden, vocab_size=vocab_size, seq_len=args.seq_len,
                 batch_size=args.batch_size, predictions=predictions, steps=args.steps,
                 rounds=args.rounds, warmup_steps=WARMUP_STEPS, corpus=args.corpus,
                 documents=len(texts), precision="float32")
    log(f"corpus {args.corpus}: {len(texts)} documents, vocabulary {vocab_size} tokens "
        f"(asked {args.vocab_size}), prepared in {time.perf_counter() - started:.1f} s")
    log(f"shape: preset {args.preset} (L{num_layers}/H{hidden}/{num_heads} heads/FFN {4 * hidden}), "
        f"V={vocab_size}, S={args.seq_len}, B={args.batch_size}, P={predictions}, fp32, "
        f"dropout {DROPOUT}")
    log(f"plan: {WARMUP_STEPS} warmup steps per arm, then {args.rounds} rounds x {args.steps} "
        f"steps, alternating {' / '.join(ARMS)}; load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg()))

    models = {"kmlm": build_kmlm_model(args, vocab_size, predictions),
              "kerashub": build_kerashub_model(args, vocab_size, shape)}
    datasets, counters = {}, {}
    datasets["kmlm"], counters["kmlm"] = counting(kmlm_dataset(texts, vocabulary, args), "kmlm")
    datasets["kerashub"], counters["kerashub"] = counting(
        kerashub_dataset(texts, vocabulary, args, predictions), "kerashub")

    log(f"models built at {time.perf_counter() - started:.1f} s")
    total_steps = WARMUP_STEPS + args.rounds * args.steps
    chunk_ends = [WARMUP_STEPS + r * args.steps for r in range(args.rounds + 1)]
    baton = Baton(ARMS * (args.rounds + 1))
    times = {arm: [] for arm in ARMS}
    tokens = {arm: [] for arm in ARMS}  # cumulative non-padding tokens at each chunk end
    errors = {}
    threads = [
        threading.Thread(target=run_arm, name=f"fit-{arm}", daemon=True,
                         args=(arm, models[arm], datasets[arm], counters[arm], total_steps, baton,
                               chunk_ends, times[arm], tokens[arm], errors))
        for arm in ARMS
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for arm, error in errors.items():
            log(f"{arm} failed: {error!r}")
        raise next(iter(errors.values()))

    log(f"training done at {time.perf_counter() - started:.1f} s")
    slots_per_chunk = args.batch_size * args.seq_len * args.steps
    results = {}
    for arm in ARMS:
        warmup_s, chunk_s = times[arm][0], times[arm][1:]
        chunk_tokens = [end - start for start, end in zip(tokens[arm][:-1], tokens[arm][1:])]
        effective = [tokens / seconds for tokens, seconds in zip(chunk_tokens, chunk_s)]
        slots = [slots_per_chunk / seconds for seconds in chunk_s]
        results[arm] = {
            "effective": effective,
            "slots": slots,
            "share": sum(chunk_tokens) / (slots_per_chunk * args.rounds),
            "step_s": [seconds / args.steps for seconds in chunk_s],
            "warmup_s": warmup_s,
        }

    machine = common.machine()
    machine["load_average_end"] = list(os.getloadavg())
    extra = dict(shape=shape, machine=machine)
    kmlm_r, hub_r = results["kmlm"], results["kerashub"]
    paired = [k / h for k, h in zip(kmlm_r["effective"], hub_r["effective"])]
    entries = []
    for arm in ARMS:
        r = results[arm]
        base = {} if arm == "kerashub" else {
            "baseline": "kerashub", "baseline_value": median(hub_r["effective"])}
        entries.append(common.record(
            BENCHMARK, "effective_tokens_per_second", arm, median(r["effective"]), "tokens/s",
            per_round=[round(v, 1) for v in r["effective"]], **base, **extra))
        base = {} if arm == "kerashub" else {
            "baseline": "kerashub", "baseline_value": median(hub_r["slots"])}
        entries.append(common.record(
            BENCHMARK, "padded_tokens_per_second", arm, median(r["slots"]), "tokens/s",
            per_round=[round(v, 1) for v in r["slots"]], **base, **extra))
        base = {} if arm == "kerashub" else {"baseline": "kerashub", "baseline_value": hub_r["share"]}
        entries.append(common.record(
            BENCHMARK, "non_padding_share", arm, r["share"], "fraction", **base, **extra))
        entries.append(common.record(
            BENCHMARK, "step_seconds", arm, median(r["step_s"]), "s", higher_is_better=False,
            **extra))
        entries.append(common.record(
            BENCHMARK, "warmup_seconds", arm, r["warmup_s"], "s", higher_is_better=False,
            note=f"first {WARMUP_STEPS} steps (tracing, XLA compilation, pipeline start); untimed",
            **extra))
    ratio = median(kmlm_r["effective"]) / median(hub_r["effective"])
    entries.append(common.record(
        BENCHMARK, "effective_tokens_per_second_ratio", "kmlm", ratio, "x",
        target=TARGET_RATIO, meets_target=bool(ratio >= TARGET_RATIO),
        median_paired_ratio=round(median(paired), 4), against="kerashub",
        note="ratio of the medians of effective tokens/s, kmlm / kerashub", **extra))
    for entry in entries:
        common.emit(entry, jsonl_path=args.jsonl)

    header = (f"{'arm':<9} {'effective tok/s':>15} {'min':>9} {'max':>9} {'slot tok/s':>11} "
              f"{'non-pad':>8} {'step s':>7} {'warmup s':>9}")
    log()
    log(header)
    log("-" * len(header))
    for arm in ARMS:
        r = results[arm]
        log(f"{arm:<9} {median(r['effective']):>15,.0f} {min(r['effective']):>9,.0f} "
            f"{max(r['effective']):>9,.0f} {median(r['slots']):>11,.0f} {r['share']:>8.1%} "
            f"{median(r['step_s']):>7.3f} {r['warmup_s']:>9.1f}")
    log()
    log(f"effective tokens/s kmlm / kerashub: {ratio:.2f}x (ratio of medians; median of the "
        f"per-round ratios {median(paired):.2f}x; target >= {TARGET_RATIO}x: "
        f"{'met' if ratio >= TARGET_RATIO else 'not met'})")
    log(f"padded slot tokens/s kmlm / kerashub: "
        f"{median(kmlm_r['slots']) / median(hub_r['slots']):.2f}x; non-padding share "
        f"{kmlm_r['share']:.1%} vs {hub_r['share']:.1%}")
    log(f"total {time.perf_counter() - started:.0f} s; load average "
        + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()

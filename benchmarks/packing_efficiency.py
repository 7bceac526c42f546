"""How much of each training row is real text: packing vs one document per row.

On a corpus (default `builtin:python-docs`) it learns a vocabulary (or reads --vocab),
then builds the rows both ways with kmlm's own pipeline (`kmlm.pipelines.mlm_dataset` in
deterministic mode, `packing=True` and `packing=False`) and counts, for the same
documents:

  rows          rows of S tokens needed
  real          tokens that are not padding ([CLS]/[SEP] included), and their share of
                rows x S
  dropped       text tokens lost: one document per row keeps only the first S-2 tokens
  predictions   mask slots in use per row (mask_weights > 0), i.e. the training signal

A third line, "one doc/row, split", is computed from the token counts alone: one document
per row but long documents continued over extra rows (nothing dropped), the best
unpacked layout.

The model's step time depends only on [B, S], never on how much of a row is padding, so
real tokens/s = (real share) x B*S / step time. The step time is measured here with a
few kmlm (XLA) training steps on the packed and the padded batches, alternated; or taken
from `benchmarks/train_throughput.py --json` output (--throughput-json, one line per arm)
or given with --tokens-per-second.

Example:
    python benchmarks/packing_efficiency.py
    python benchmarks/packing_efficiency.py --throughput-json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Real tokens per row with packing vs one document per row, and the "
        "real-token throughput that implies.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--corpus", default="builtin:python-docs", help="kmlm corpus source")
    parser.add_argument("--vocab", help="vocabulary file (default: learn one from the corpus)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="size of the learned vocabulary")
    parser.add_argument("--max-documents", type=int, default=0,
                        help="use only the first N documents (0: all)")
    parser.add_argument("--seq-len", type=int, default=128, help="row length S")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch B")
    parser.add_argument("--mask-rate", type=float, default=0.15, help="masking rate")
    parser.add_argument("--preset", default="mini", help="model preset for the step-time measurement")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per chunk")
    parser.add_argument("--rounds", type=int, default=2, help="chunks per layout (alternated)")
    parser.add_argument("--tokens-per-second", type=float,
                        help="use this training speed (B*S tokens/s) instead of measuring")
    parser.add_argument("--throughput-json", metavar="PATH",
                        help="use the arms' median speeds from train_throughput.py --json")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    common.require_positive(parser, args, ("vocab_size", "seq_len", "batch_size", "steps", "rounds"))
    if args.max_documents < 0:
        parser.error("--max-documents must be 0 (all) or positive")
    if args.tokens_per_second is not None and args.tokens_per_second <= 0:
        parser.error("--tokens-per-second must be positive")
    return args


def count_layout(dataset):
    """Sums rows, real tokens, mask slots in use, and keeps a few batches for timing."""
    rows = real = predictions = 0
    kept = []
    for features, mask_ids, mask_weights in dataset.as_numpy_iterator():
        used = features["document_ids"] != 0
        non_empty = used.any(axis=1)  # the last batch is filled up with all-padding rows
        rows += int(non_empty.sum())
        real += int(used.sum())
        predictions += int((mask_weights > 0).sum())
        if len(kept) < 4 and non_empty.all():
            kept.append((features, mask_ids, mask_weights))
    return {"rows": rows, "real_tokens": real, "predictions": predictions, "batches": kept}


def token_lengths(documents, vocabulary):
    """Number of WordPiece tokens of every non-empty document."""
    import tensorflow as tf

    from kmlm.pipelines import make_tokenizer

    tokenizer = make_tokenizer(vocabulary)
    lengths = documents.batch(256).map(
        tf.autograph.experimental.do_not_convert(lambda texts: tokenizer.tokenize(texts).row_lengths()),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return [int(n) for batch in lengths.as_numpy_iterator() for n in batch if n > 0]


def measure_step_seconds(args, vocabulary, layouts):
    """Median seconds per kmlm XLA training step on each layout's batches, alternated."""
    import tensorflow as tf

    import kmlm

    config = kmlm.ModelConfig.from_preset(args.preset, vocabulary_size=len(vocabulary))
    model = kmlm.build_mlm_model(config)
    kmlm.compile_for_pretraining(model, total_steps=10_000, jit_compile=True)
    batches = {name: [tuple(tf.nest.map_structure(tf.constant, b)) for b in counts["batches"]]
               for name, counts in layouts.items()}
    for name in batches:  # warm up (the first step compiles)
        for x, y, w in batches[name][:2]:
            model.train_on_batch(x, y, sample_weight=w)
    seconds = {name: [] for name in batches}
    for _ in range(args.rounds):
        for name, items in batches.items():
            start = time.perf_counter()
            for i in range(args.steps):
                x, y, w = items[i % len(items)]
                model.train_on_batch(x, y, sample_weight=w)
            seconds[name].append((time.perf_counter() - start) / args.steps)
    return {name: statistics.median(values) for name, values in seconds.items()}, seconds


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kmlm import pipelines

    started = time.perf_counter()
    documents = pipelines.load_documents(args.corpus)
    if args.max_documents:
        documents = documents.take(args.max_documents)
    if args.vocab:
        vocabulary = pipelines.load_vocabulary(args.vocab)
    else:
        vocabulary = pipelines.learn_vocabulary(documents, args.vocab_size)
    print(f"vocabulary: {len(vocabulary)} tokens ({time.perf_counter() - started:.0f} s)")
    sys.stdout.flush()

    seq_len, batch = args.seq_len, args.batch_size
    masking = pipelines.MaskingConfig(rate=args.mask_rate)
    layouts = {}
    for name, packing in (("packed", True), ("one doc/row", False)):
        dataset = pipelines.mlm_dataset(documents, vocabulary, seq_len=seq_len, batch_size=batch,
                                        masking=masking, packing=packing, deterministic_eval=True)
        layouts[name] = count_layout(dataset)
    lengths = token_lengths(documents, vocabulary)
    text_tokens = sum(lengths)
    num_docs = len(lengths)
    with_specials = text_tokens + 2 * num_docs
    layouts["packed"]["dropped"] = with_specials - layouts["packed"]["real_tokens"]
    layouts["one doc/row"]["dropped"] = with_specials - layouts["one doc/row"]["real_tokens"]
    split_rows = sum(math.ceil((n + 2) / seq_len) for n in lengths)
    layouts["one doc/row, split"] = {"rows": split_rows, "real_tokens": with_specials,
                                     "predictions": None, "dropped": 0, "batches": []}
    print(f"corpus: {args.corpus}, {num_docs:,} documents, {text_tokens:,} WordPiece tokens "
          f"(median {statistics.median(lengths):.0f}, mean {text_tokens / num_docs:.0f} per document; "
          f"{sum(n + 2 > seq_len for n in lengths) / num_docs:.0%} longer than a row of {seq_len}) "
          f"({time.perf_counter() - started:.0f} s)")
    sys.stdout.flush()

    speeds = {}
    step_detail = None
    if args.tokens_per_second:
        speeds["given"] = args.tokens_per_second
    elif args.throughput_json:
        with open(args.throughput_json) as file:
            report = json.load(file)
        shape = report["shape"]
        if (shape["seq_len"], shape["batch_size"]) != (seq_len, batch):
            print(f"note: {args.throughput_json} was measured at S={shape['seq_len']}, "
                  f"B={shape['batch_size']}, not S={seq_len}, B={batch}")
        speeds = {name: arm["median_tokens_per_s"] for name, arm in report["arms"].items()}
    else:
        step_s, step_detail = measure_step_seconds(
            args, vocabulary, {k: v for k, v in layouts.items() if v["batches"]})
        for name, seconds in step_s.items():
            print(f"kmlm-jit step on {name} batches: median {seconds:.2f} s "
                  f"({', '.join(f'{s:.2f}' for s in step_detail[name])})")
        # One speed: the step time does not depend on the layout (same shapes).
        speeds["kmlm-jit (measured)"] = batch * seq_len / statistics.median(
            [s for values in step_detail.values() for s in values])

    for name, speed in speeds.items():
        print(f"speed {name}: {speed:,.0f} tokens/s ({batch * seq_len / speed:.2f} s per step)")
    results = {}
    print()
    header = (f"{'layout':<20} {'rows':>8} {'real share':>10} {'real/row':>8} {'dropped':>9} "
              f"{'pred/row':>8} " + " ".join(f"{'real tok/s ' + n:>{max(16, len(n) + 11)}}" for n in speeds))
    print(header)
    print("-" * len(header))
    for name, counts in layouts.items():
        share = counts["real_tokens"] / (counts["rows"] * seq_len)
        per_row_predictions = None if counts["predictions"] is None else counts["predictions"] / counts["rows"]
        effective = {arm: share * speed for arm, speed in speeds.items()}
        results[name] = {
            "rows": counts["rows"], "real_tokens": counts["real_tokens"], "real_share": share,
            "real_per_row": counts["real_tokens"] / counts["rows"], "dropped_tokens": counts["dropped"],
            "predictions_per_row": per_row_predictions, "real_tokens_per_s": effective,
        }
        pred = "-" if per_row_predictions is None else f"{per_row_predictions:.1f}"
        print(f"{name:<20} {counts['rows']:>8,} {share:>10.1%} {share * seq_len:>8.1f} "
              f"{counts['dropped']:>9,} {pred:>8} "
              + " ".join(f"{v:>{max(16, len(a) + 11)},.0f}" for a, v in effective.items()))
    packed, padded = results["packed"], results["one doc/row"]
    print()
    print(f"packing needs {packed['rows'] / padded['rows']:.2f}x the rows of one doc/row "
          f"(which drops {padded['dropped_tokens'] / with_specials:.0%} of the tokens) and "
          f"{packed['rows'] / results['one doc/row, split']['rows']:.2f}x the rows of one doc/row split; "
          f"real tokens per step: {packed['real_share'] / padded['real_share']:.2f}x one doc/row, "
          f"{packed['real_share'] / results['one doc/row, split']['real_share']:.2f}x split")
    if packed["predictions_per_row"] and padded["predictions_per_row"]:
        print(f"predictions per step: {packed['predictions_per_row'] / padded['predictions_per_row']:.2f}x "
              f"with packing ({packed['predictions_per_row']:.1f} vs {padded['predictions_per_row']:.1f} "
              f"per row, of {pipelines.max_predictions_for(seq_len, args.mask_rate)} slots)")
    print(f"total time {time.perf_counter() - started:.0f} s")

    if args.json:
        with open(args.json, "w") as file:
            json.dump({"settings": vars(args), "documents": num_docs, "text_tokens": text_tokens,
                       "layouts": results, "speeds_tokens_per_s": speeds,
                       "step_seconds": step_detail}, file, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

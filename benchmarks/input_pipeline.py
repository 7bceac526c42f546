"""Input pipeline speed: tokenization alone, kmlm's whole pipeline, masking vs keras-hub, and the model.

On one corpus (default `builtin:python-docs`, `--max-documents` to cut it) and one learned
WordPiece vocabulary (`--vocab-size`, default 8192), it times, all on the same text:

  tokenize   kmlm's in-graph WordPiece tokenizer (`kmlm.pipelines.make_tokenizer`) alone,
             as a tf.data pipeline: documents batched by 256, tokenized in a parallel
             `map`, consumed to the end. Reported as MB/s of UTF-8 text and as rows/s of
             the S-token rows that text fills (the rows `pack_documents` makes of it, i.e.
             about (WordPiece tokens + [CLS]/[SEP] per document) / S, per second).
  pipeline   `kmlm.pipelines.mlm_dataset` as pretraining reads it (training mode, endless):
             tokenize, pack (`packing=True`), shuffle rows, batch B, mask with the
             whole-word strategy, prefetch. Reported as rows/s and MB/s, and as seconds per
             corpus pass against `tokenize`: overhead = pipeline / tokenize - 1, i.e. what
             packing, shuffling, batching and masking add on top of tokenizing (target: at
             most 25%).
  masking    masking alone, on a fixed set of packed [B, S] batches built once (tokenizer +
             `pack_documents`, `--mask-batches` of them): kmlm's `Masker` (whole-word and
             plain per-token strategies) vs keras-hub's `MaskedLMMaskGenerator`
             (mask_selection_rate 0.15, mask_selection_length P = kmlm's max predictions,
             unselectable [PAD], [CLS], [SEP]), each applied the way kmlm applies its masker:
             in a parallel tf.data `map` over the same batches. Reported as rows/s and the
             ratio kmlm / keras-hub (target: at least 5x).
  model      for context, the rows/s a kmlm model (`--preset`, default mini; XLA) trains at
             with `train_on_batch` on the masked batches (after 2 warmup steps), so that the
             input pipeline's speed can be read against what it has to feed.

Each arm keeps one endless tf.data iterator, as training does (making an iterator costs a
second or more here, whatever the data), and a timed chunk pulls the next `--passes` corpus
passes' worth of elements from it (`--mask-passes` passes over the fixed batches for
masking). Every arm first pulls one untimed chunk (tracing, autotuning), then the arms run
interleaved (A B C A B C ...) for `--rounds` rounds; values are medians over the rounds.
Between chunks a pipeline's own buffers (parallel map, prefetch) may fill while the other
arm runs; that head start is a few elements, small against a chunk of many (at the default
corpus a pass is 31 tokenizer batches and about 100 batches of 32 rows), but it makes tiny
corpora meaningless for speed. Each measurement is one JSON line on stdout
(`benchmarks/common.py` format; `ratio` = value / baseline_value); a human-readable table
goes to stderr. Timings are never asserted anywhere.

Example:
    python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --rounds 5 --jsonl results.jsonl
    python benchmarks/input_pipeline.py --max-documents 500 --skip-model
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

BENCHMARK = "input_pipeline"
TOKENIZE_BATCH = 256  # documents per tokenizer call, as mlm_dataset's default
WHOLE_WORD = "whole_word"
TARGET_OVERHEAD = 0.25
TARGET_MASKING_RATIO = 5.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", default="builtin:python-docs", help="kmlm corpus source (default: %(default)s)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="size of the learned vocabulary (default: %(default)s)")
    parser.add_argument("--max-documents", type=int, default=0, help="use only the first N documents (0: all, the default)")
    parser.add_argument("--seq-len", type=int, default=128, help="row length S (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch B (default: %(default)s)")
    parser.add_argument("--mask-rate", type=float, default=0.15, help="masking rate (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds per comparison (default: %(default)s)")
    parser.add_argument("--passes", type=int, default=2,
                        help="corpus passes per timed tokenize/pipeline chunk (default: %(default)s)")
    parser.add_argument("--mask-batches", type=int, default=50,
                        help="fixed packed batches the masking arms mask (default: %(default)s)")
    parser.add_argument("--mask-passes", type=int, default=10,
                        help="passes over those batches per timed masking chunk (default: %(default)s)")
    parser.add_argument("--preset", default="mini", help="model preset of the model arm (default: %(default)s)")
    parser.add_argument("--model-steps", type=int, default=3, help="timed train steps per round (default: %(default)s)")
    parser.add_argument("--skip-model", action="store_true", help="do not measure the model")
    parser.add_argument("--no-jit", action="store_true",
                        help="compile the model without XLA (quicker to start; for smoke tests)")
    parser.add_argument("--jsonl", metavar="PATH", help="also append every JSON line to this file")
    args = parser.parse_args(argv)
    common.require_positive(parser, args, ("vocab_size", "seq_len", "batch_size", "rounds", "passes", "mask_batches", "mask_passes", "model_steps"))
    if args.max_documents < 0:
        parser.error("--max-documents must be 0 (all) or positive")
    return args


def log(message=""):
    print(message, file=sys.stderr, flush=True)


def timed(function):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def interleave(arms, rounds):
    """Runs every arm once untimed, then `rounds` rounds of A B C ...; ({arm: [seconds]}, {arm: count}).

    Each arm is a function returning (seconds, count); the count (rows or tokens) must not
    change between runs.
    """
    counts = {name: run()[1] for name, run in arms.items()}
    seconds = {name: [] for name in arms}
    for _ in range(rounds):
        for name, run in arms.items():
            elapsed, count = run()
            if count != counts[name]:
                raise RuntimeError(f"arm {name} produced {counts[name]} items, then {count}")
            seconds[name].append(elapsed)
    return seconds, counts


def puller(dataset, elements, size):
    """A function that pulls the next `elements` elements of the endless `dataset`: (seconds, sum of sizes).

    The iterator is made on the first call and kept, as training keeps it: making a
    tf.data iterator and getting its first element costs a second or more here
    (instantiating and optimizing the tokenizer's and masker's graphs), whatever the amount
    of data. Between calls the pipeline's own buffers (parallel map, prefetch) may fill up
    while another arm runs; a chunk of many elements (`--passes`) keeps that head start small.
    """
    state = {}

    def pull():
        if "iterator" not in state:
            state["iterator"] = iter(dataset)
        iterator, total = state["iterator"], 0
        start = time.perf_counter()
        for _ in range(elements):
            element = next(iterator)
            total += int(size(*element) if isinstance(element, tuple) else size(element))
        return time.perf_counter() - start, total

    return pull


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from kmlm import pipelines

    started = time.perf_counter()
    documents = pipelines.load_documents(args.corpus)
    if args.max_documents:
        documents = documents.take(args.max_documents)
    # The same documents, in memory, for every arm: reading the corpus is not measured.
    texts = [text for text in documents.as_numpy_iterator()]
    text_bytes = sum(len(text) for text in texts)
    documents = tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string))
    vocabulary = pipelines.learn_vocabulary(documents, args.vocab_size)
    seq_len, batch_size = args.seq_len, args.batch_size
    ids = pipelines.special_ids(vocabulary)
    tokenizer = pipelines.make_tokenizer(vocabulary)
    max_predictions = pipelines.max_predictions_for(seq_len, args.mask_rate)
    shape = {"seq_len": seq_len, "batch_size": batch_size, "max_predictions": max_predictions,
             "vocab_size": len(vocabulary), "documents": len(texts), "text_mb": round(text_bytes / 1e6, 4)}
    log(f"corpus {args.corpus}: {len(texts):,} documents, {text_bytes / 1e6:.2f} MB; vocabulary "
        f"{len(vocabulary)} tokens; S={seq_len} B={batch_size} P={max_predictions} "
        f"({time.perf_counter() - started:.0f} s)")
    results = []

    def emit(measurement, arm, value, unit, **extra):
        entry = common.record(BENCHMARK, measurement, arm, value, unit, shape=shape,
                              machine=common.machine(), **extra)
        common.emit(entry, jsonl_path=args.jsonl)
        results.append(entry)
        return entry

    # -- 1 + 2: tokenize alone vs the whole pipeline, the same text -------------------------
    # One pass of the corpus as kmlm packs it (untimed): its S-token rows, and the fixed
    # batches the masking arms use.
    tokenize = tf.autograph.experimental.do_not_convert(lambda batch: tokenizer.tokenize(batch))
    def pack(batch):
        tokens = tokenizer.tokenize(batch)
        rows = pipelines.pack_documents(tokens, seq_len, cls_id=ids.cls, sep_id=ids.sep, pad_id=ids.pad)
        return rows["token_ids"], rows["document_ids"], tf.size(tokens.flat_values)

    packed_pass = list(documents.batch(TOKENIZE_BATCH).map(tf.autograph.experimental.do_not_convert(pack))
                    .as_numpy_iterator())
    packed = np.concatenate([token_ids for token_ids, _, _ in packed_pass])
    packed_docs = np.concatenate([document_ids for _, document_ids, _ in packed_pass])
    rows_per_pass = len(packed)  # rows of S tokens the corpus fills
    text_tokens = int(sum(count for _, _, count in packed_pass))  # WordPiece tokens, no [CLS]/[SEP]
    tokenize_elements = -(-len(texts) // TOKENIZE_BATCH)
    tokenized = (documents.batch(TOKENIZE_BATCH)
                 .map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
                 .prefetch(tf.data.AUTOTUNE)
                 .repeat())
    pipeline_batches = max(1, round(args.passes * rows_per_pass / batch_size))
    pipeline = pipelines.mlm_dataset(
        documents, vocabulary, seq_len=seq_len, batch_size=batch_size,
        masking=pipelines.MaskingConfig(strategy=WHOLE_WORD, rate=args.mask_rate),
        packing=True, repeat=True, tokenize_batch=TOKENIZE_BATCH,
    )
    log(f"timing tokenize ({args.passes} x {tokenize_elements} batches of {TOKENIZE_BATCH} documents) vs "
        f"pipeline ({pipeline_batches} batches of {batch_size} rows; a pass is {rows_per_pass} rows): "
        f"{args.rounds} rounds of {args.passes} passes each")
    seconds, counts = interleave({
        "tokenize": puller(tokenized, args.passes * tokenize_elements, lambda ragged: ragged.flat_values.shape[0]),
        "pipeline": puller(pipeline, pipeline_batches, lambda x, y, w: x["token_ids"].shape[0]),
    }, args.rounds)
    if counts["tokenize"] != args.passes * text_tokens:
        raise RuntimeError(f"tokenize counted {counts['tokenize']} tokens, packing {args.passes} x {text_tokens}")
    # Seconds per pass; the pipeline's chunk is round(passes x rows / B) batches, scaled to passes.
    pipeline_passes = counts["pipeline"] / rows_per_pass
    tok_s = statistics.median(seconds["tokenize"]) / args.passes
    pipe_s = statistics.median(seconds["pipeline"]) / pipeline_passes
    tok_rows_per_s = rows_per_pass / tok_s
    pipe_rows_per_s = rows_per_pass / pipe_s
    round_ratios = [(p / pipeline_passes) / (t / args.passes)
                    for p, t in zip(seconds["pipeline"], seconds["tokenize"])]
    emit("text_mb_per_second", "tokenize", text_bytes / 1e6 / tok_s, "MB/s",
         rounds_s=seconds["tokenize"], tokens_per_pass=text_tokens)
    emit("text_mb_per_second", "pipeline", text_bytes / 1e6 / pipe_s, "MB/s",
         baseline="tokenize", baseline_value=text_bytes / 1e6 / tok_s, rounds_s=seconds["pipeline"])
    emit("rows_per_second", "tokenize", tok_rows_per_s, "rows/s", rows_per_pass=rows_per_pass,
         note="S-token rows equivalent: the rows the tokenized text packs into, per second")
    emit("rows_per_second", "pipeline", pipe_rows_per_s, "rows/s",
         baseline="tokenize", baseline_value=tok_rows_per_s, rows_per_chunk=counts["pipeline"],
         note="training mode (shuffle, repeat): rows pulled per second")
    overhead = emit("seconds_per_pass", "pipeline", pipe_s, "s", baseline="tokenize", baseline_value=tok_s,
                    higher_is_better=False, overhead=pipe_s / tok_s - 1,
                    median_round_overhead=statistics.median(round_ratios) - 1,
                    target_overhead_max=TARGET_OVERHEAD)

    # -- 3: masking alone on fixed packed batches ---------------------------------------------
    mask_batches = min(args.mask_batches, rows_per_pass // batch_size)
    if not mask_batches:
        raise SystemExit(f"the corpus fills no batch of {batch_size} rows of {seq_len}; use more documents")
    used = mask_batches * batch_size
    stacked = {"token_ids": packed[:used].reshape(mask_batches, batch_size, seq_len),
               "document_ids": packed_docs[:used].reshape(mask_batches, batch_size, seq_len)}
    maskers = {
        f"kmlm-{WHOLE_WORD}": pipelines.Masker(
            vocabulary, pipelines.MaskingConfig(strategy=WHOLE_WORD, rate=args.mask_rate), seq_len),
        "kmlm-token": pipelines.Masker(
            vocabulary, pipelines.MaskingConfig(strategy="token", rate=args.mask_rate), seq_len),
    }
    import keras_hub

    generator = keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=len(vocabulary), mask_selection_rate=args.mask_rate, mask_token_id=ids.mask,
        mask_selection_length=max_predictions, unselectable_token_ids=[ids.pad, ids.cls, ids.sep],
    )

    def kerashub_mask(batch, step):
        del step
        out = generator(batch["token_ids"])
        return ({"token_ids": out["token_ids"], "mask_positions": out["mask_positions"]},
                out["mask_ids"], out["mask_weights"])

    mask_functions = {name: masker for name, masker in maskers.items()}
    mask_functions["keras-hub"] = kerashub_mask
    fixed = tf.data.Dataset.from_tensor_slices(stacked)

    def masked_dataset(function, batches):
        mask = tf.autograph.experimental.do_not_convert(lambda step, batch: function(batch, step))
        return batches.enumerate().map(mask, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    masked = {name: masked_dataset(function, fixed.repeat())
              for name, function in mask_functions.items()}
    predictions = {}
    for name, function in mask_functions.items():  # untimed: how many targets each arm picks
        weights = np.concatenate([w for _, _, w in masked_dataset(function, fixed).as_numpy_iterator()])
        predictions[name] = float((weights > 0).sum() / len(weights))
    chunk = mask_batches * args.mask_passes
    log(f"timing masking: {chunk} batches of {batch_size} rows per chunk, {args.rounds} rounds")
    mask_seconds, mask_rows = interleave(
        {name: puller(dataset, chunk, lambda x, y, w: x["token_ids"].shape[0])
         for name, dataset in masked.items()}, args.rounds)
    mask_rate = {name: mask_rows[name] / statistics.median(values) for name, values in mask_seconds.items()}
    for name in mask_functions:
        extra = {}
        if name != "keras-hub":
            extra = {"baseline": "keras-hub", "baseline_value": mask_rate["keras-hub"],
                     "target_ratio_min": TARGET_MASKING_RATIO}
        emit("masking_rows_per_second", name, mask_rate[name], "rows/s", rows=mask_rows[name],
             predictions_per_row=predictions[name], rounds_s=mask_seconds[name], **extra)

    # -- 4: the model, for context ------------------------------------------------------------
    model_rows_per_s = None
    if not args.skip_model:
        import kmlm

        config = kmlm.ModelConfig.from_preset(args.preset, vocabulary_size=len(vocabulary))
        model = kmlm.build_mlm_model(config, max_predictions=max_predictions)
        kmlm.compile_for_pretraining(model, total_steps=10_000, jit_compile=not args.no_jit)
        train_batches = list(masked_dataset(maskers[f"kmlm-{WHOLE_WORD}"], fixed.take(8)))
        warmup = []
        for step in range(2):
            x, y, w = train_batches[step % len(train_batches)]
            elapsed, _ = timed(lambda: model.train_on_batch(x, y, sample_weight=w))
            warmup.append(elapsed)
        log(f"timing the {args.preset} model: {args.rounds} rounds of {args.model_steps} steps "
            f"(warmup {', '.join(f'{s:.1f}' for s in warmup)} s)")
        step_seconds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for step in range(args.model_steps):
                x, y, w = train_batches[step % len(train_batches)]
                model.train_on_batch(x, y, sample_weight=w)
            step_seconds.append((time.perf_counter() - start) / args.model_steps)
        model_rows_per_s = batch_size / statistics.median(step_seconds)
        emit("rows_per_second", f"model-{args.preset}-{'nojit' if args.no_jit else 'jit'}", model_rows_per_s, "rows/s",
             baseline="pipeline", baseline_value=pipe_rows_per_s, step_s=step_seconds, warmup_s=warmup,
             note="training rows/s of the model; ratio = model / pipeline")

    # -- table ---------------------------------------------------------------------------------
    log()
    log(f"{'measurement':<26} {'arm':<20} {'value':>12} {'unit':<7} {'vs':<10} {'ratio':>7}")
    log("-" * 87)
    for entry in results:
        ratio = f"{entry['ratio']:.3f}" if entry.get("ratio") is not None else ""
        log(f"{entry['measurement']:<26} {entry['arm']:<20} {entry['value']:>12,.2f} {entry['unit']:<7} "
            f"{entry.get('baseline', ''):<10} {ratio:>7}")
    log()
    log(f"pipeline overhead over tokenization: {overhead['overhead']:+.1%} (target <= {TARGET_OVERHEAD:.0%}; "
        f"median of per-round ratios {overhead['median_round_overhead']:+.1%})")
    log(f"masking kmlm whole-word / keras-hub: {mask_rate[f'kmlm-{WHOLE_WORD}'] / mask_rate['keras-hub']:.2f}x, "
        f"token / keras-hub: {mask_rate['kmlm-token'] / mask_rate['keras-hub']:.2f}x "
        f"(target >= {TARGET_MASKING_RATIO:.0f}x); targets per row "
        + ", ".join(f"{name} {value:.1f}" for name, value in predictions.items()))
    if model_rows_per_s:
        log(f"model {args.preset}: {model_rows_per_s:,.1f} rows/s; the pipeline delivers "
            f"{pipe_rows_per_s / model_rows_per_s:,.0f}x that")
    log(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

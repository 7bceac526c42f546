"""Latency of the exported `fill_mask` signature vs the Hugging Face fill-mask pipeline, on CPU.

Both sides are randomly initialised models of the same shape (default: BERT-mini, L4/H256/4
heads/FFN 1024, vocabulary 8192), take raw strings and return the top-5 tokens per [MASK]:

- `export`: `kmlm.export_run` of a random `MaskedLMModel`, loaded with `tf.saved_model.load`
  and called through `signatures["fill_mask"]` (in-graph WordPiece, fixed S=128, no XLA),
  as TF Serving runs it minus the network;
- `hf-pad128`: `transformers.pipeline("fill-mask")` on `BertForMaskedLM` (PyTorch, eager,
  `torch.no_grad`), every text padded to 128 tokens like the export;
- `hf-dynamic`: the same pipeline with its default padding (to the longest text in a batch).

The HF tokenizer is a `BertTokenizerFast` over the same vocabulary file; nothing is downloaded.
Calls are interleaved (export, hf-pad128, hf-dynamic, export, ...) after warmup; medians.

    python benchmarks/fill_mask_latency.py
    python benchmarks/fill_mask_latency.py --repeats 30 --batch-sizes 1 32 --json out.json
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)

WORDS = ("the list of values is sorted before the function returns a new object with each item "
         "in the order given by the key argument and the default value is used when no match is found").split()


def make_texts(count, seed=0):
    """Sentences of 20-40 words with one [MASK], about 30-60 WordPiece tokens."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        words = list(rng.choice(WORDS, size=int(rng.integers(20, 41))))
        words[int(rng.integers(0, len(words)))] = "[MASK]"
        texts.append(" ".join(words) + ".")
    return texts


def make_vocabulary(size):
    """A WordPiece vocabulary learned from the built-in Python docs corpus."""
    from kmlm.pipelines import learn_vocabulary, load_documents

    return learn_vocabulary(load_documents("builtin:python-docs"), size)


def build_export(vocabulary, preset, seq_len, top_k, workdir):
    import tensorflow as tf

    from kmlm import ModelConfig, build_mlm_model
    from kmlm.serving.masked_lm import export_run
    from kmlm.run_directory import DataRecord, Run, RunConfig

    config = ModelConfig.from_preset(preset, vocabulary_size=len(vocabulary))
    model = build_mlm_model(config)
    run = Run(path=workdir, config=RunConfig(config, DataRecord(seq_len=seq_len, lowercase=True, mask_rate=0.15)),
              vocabulary=vocabulary, model=model)
    export = export_run(run, os.path.join(workdir, "serving"), seq_len=seq_len, top_k=top_k)
    signature = tf.saved_model.load(export.path).signatures["fill_mask"]
    return config, lambda texts: signature(text=tf.constant(texts))["top_k_tokens"].numpy()


def build_hf(vocabulary, config, top_k, seq_len, workdir):
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast, pipeline

    torch.manual_seed(0)
    vocab_file = os.path.join(workdir, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(vocabulary) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True)
    model = BertForMaskedLM(BertConfig(
        vocab_size=len(vocabulary), hidden_size=config.hidden_dim, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_dim,
        max_position_embeddings=config.max_position, hidden_act="gelu",
    )).eval()
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, device=-1, top_k=top_k)
    padded = {"padding": "max_length", "max_length": seq_len, "truncation": True}

    def run(texts, tokenizer_kwargs=None):
        with torch.no_grad():
            return fill(texts, batch_size=len(texts), tokenizer_kwargs=tokenizer_kwargs)

    return {"hf-pad128": lambda texts: run(texts, padded), "hf-dynamic": run}


def measure(arms, texts, repeats, warmup):
    for call in arms.values():
        for _ in range(warmup):
            call(texts)
    times = {name: [] for name in arms}
    for _ in range(repeats):
        for name, call in arms.items():
            start = time.perf_counter()
            call(texts)
            times[name].append(time.perf_counter() - start)
    return times


def say(*parts):
    print(*parts, file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", default="mini", help="kmlm preset of both models")
    parser.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size of both models")
    parser.add_argument("--seq-len", type=int, default=128, help="S of the export (and of hf-pad128)")
    parser.add_argument("--top-k", type=int, default=5, help="predictions per [MASK]")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32], help="texts per call")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per arm and batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per arm first")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of both (default: all cores)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--jsonl", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)

    threads = args.threads or os.cpu_count()
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    torch.set_num_threads(threads)

    with tempfile.TemporaryDirectory() as workdir:
        vocabulary = make_vocabulary(args.vocab_size)
        config, export = build_export(vocabulary, args.preset, args.seq_len, args.top_k, workdir)
        arms = {"export": export, **build_hf(vocabulary, config, args.top_k, args.seq_len, workdir)}
        results = {"preset": args.preset, "vocabulary_size": len(vocabulary), "seq_len": args.seq_len,
                   "top_k": args.top_k, "threads": threads, "repeats": args.repeats, "batches": {}}
        say(f"{args.preset} (L{config.num_layers}/H{config.hidden_dim}), vocabulary {len(vocabulary)}, "
              f"S={args.seq_len}, top-{args.top_k}, {threads} threads, {args.repeats} interleaved calls per arm")
        say(f"{'batch':>5}  {'arm':<11} {'median ms':>10} {'min ms':>8} {'ms/text':>8} {'vs export':>10}")
        for batch in args.batch_sizes:
            times = measure(arms, make_texts(batch, seed=batch), args.repeats, args.warmup)
            medians = {name: statistics.median(values) for name, values in times.items()}
            results["batches"][batch] = {
                name: {"median_ms": 1e3 * medians[name], "min_ms": 1e3 * min(values),
                       "ratio_to_export": medians[name] / medians["export"]}
                for name, values in times.items()
            }
            shape = {"preset": args.preset, "vocabulary_size": len(vocabulary), "seq_len": args.seq_len,
                     "top_k": args.top_k, "batch_size": batch, "threads": threads}
            extra = {"shape": shape, "machine": common.machine()}
            for name, values in times.items():
                common.emit(common.record("fill_mask_latency", "latency_ms", name, 1e3 * medians[name], "ms",
                                          higher_is_better=False, min_ms=1e3 * min(values), **extra),
                            jsonl_path=args.jsonl)
            for name in times:
                if name != "export":  # ratio = export latency / peer latency (target <= 0.5 at batch 1)
                    common.emit(common.record(
                        "fill_mask_latency", "latency_ratio", "export", 1e3 * medians["export"], "ms",
                        baseline=name, baseline_value=1e3 * medians[name], higher_is_better=False, **extra),
                        jsonl_path=args.jsonl)
            for name, values in times.items():
                say(f"{batch:>5}  {name:<11} {1e3 * medians[name]:>10.1f} {1e3 * min(values):>8.1f} "
                      f"{1e3 * medians[name] / batch:>8.2f} {medians[name] / medians['export']:>9.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

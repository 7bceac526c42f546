"""What `kmlm pretrain --deterministic` costs: the same command with and without the flag.

Two arms, interleaved in one run (A B A B ...), each a fresh `kmlm pretrain` process on the
same corpus with the same vocabulary file, model, shapes and seed:

  default        `kmlm pretrain --preset P --steps N ...`
  deterministic  the same command with `--deterministic`
                 (tf.config.experimental.enable_op_determinism)

Training seconds are read from each run's progress.json (start-up, vocabulary, the first step
with its XLA compile and the evaluations are not in them), so tokens/s is
B*S*(N - 1) / train_seconds. Reported: the median tokens/s per arm, the ratio of medians
deterministic/default, whether the runs of each arm wrote identical metrics.csv files (on CPU
they should), and whether the two arms did (they need not: the deterministic step runs without
XLA, whose fused kernels round differently).

Example:
    python benchmarks/deterministic_cost.py --preset tiny --steps 100 --rounds 3
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from kmlm.pretraining.recipe import BATCH_SIZE, SEQ_LEN  # noqa: E402  (TF-free constants)

BENCHMARK = "deterministic_cost"
ARMS = ("default", "deterministic")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mini", help="model preset (default: mini)")
    parser.add_argument("--corpus", default="builtin:python-docs", help="corpus (default: the built-in one)")
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN, help=f"row length S (default: {SEQ_LEN})")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"rows per batch B (default: {BATCH_SIZE})")
    parser.add_argument("--steps", type=int, default=100, help="steps of each run (default: 100)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (default, deterministic)")
    parser.add_argument("--jsonl", metavar="PATH", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    common.require_positive(parser, args, ("seq_len", "batch_size", "rounds"))
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is never timed)")
    return args


def run(args, out, vocab, deterministic):
    """One `kmlm pretrain` run; returns (tokens/s over its timed steps, its metrics.csv text)."""
    command = ["kmlm", "pretrain", "--preset", args.preset, "--corpus", args.corpus, "--steps", str(args.steps),
               "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--out", out,
               "--overwrite", "--quiet", *(["--vocab", vocab] if vocab else []),
               *(["--deterministic"] if deterministic else [])]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode:
        raise SystemExit(f"{shlex.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}")
    with open(os.path.join(out, "progress.json")) as file:
        progress = json.load(file)
    with open(os.path.join(out, "metrics.csv")) as file:
        metrics = file.read()
    return args.batch_size * args.seq_len * (progress["steps"] - 1) / progress["train_seconds"], metrics


def main(argv=None):
    args = parse_args(argv)
    speeds = {arm: [] for arm in ARMS}
    metrics = {arm: set() for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="kmlm-deterministic-") as work:
        vocab = None
        for round_index in range(args.rounds):
            for arm in ARMS:
                out = os.path.join(work, arm)
                speed, text = run(args, out, vocab, arm == "deterministic")
                if vocab is None:  # every later run uses the vocabulary the first one learned
                    vocab = os.path.join(work, "vocab.txt")
                    with open(os.path.join(out, "vocab.txt"), encoding="utf-8") as src, \
                            open(vocab, "w", encoding="utf-8") as dst:
                        dst.write(src.read())
                speeds[arm].append(speed)
                metrics[arm].add(text)
            print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
                f"{arm} {speeds[arm][-1]:,.0f} tokens/s" for arm in ARMS), file=sys.stderr, flush=True)
    medians = {arm: statistics.median(values) for arm, values in speeds.items()}
    repeatable = {arm: len(metrics[arm]) == 1 for arm in ARMS}
    same = len(metrics["default"] | metrics["deterministic"]) == 1
    shape = {"preset": args.preset, "seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps,
             "corpus": args.corpus, "rounds": args.rounds, "identical_metrics_default": repeatable["default"],
             "identical_metrics_deterministic": repeatable["deterministic"], "identical_metrics_across_arms": same,
             "machine": common.machine()}
    common.emit(common.record(BENCHMARK, "train_tokens_per_s", "default", medians["default"], "tokens/s",
                              runs=speeds["default"], **shape), jsonl_path=args.jsonl)
    common.emit(common.record(BENCHMARK, "train_tokens_per_s", "deterministic", medians["deterministic"], "tokens/s",
                              baseline="default", baseline_value=medians["default"], runs=speeds["deterministic"],
                              **shape), jsonl_path=args.jsonl)
    print(f"deterministic/default: {medians['deterministic'] / medians['default']:.3f} (ratio of medians); "
          + "; ".join(f"metrics.csv of the {arm} runs {'identical' if repeatable[arm] else 'DIFFERENT'}"
                      for arm in ARMS)
          + f"; across the two arms {'identical' if same else 'different'}", file=sys.stderr)


if __name__ == "__main__":
    main()

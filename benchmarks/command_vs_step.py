"""Training tokens/s of the command a user types (`kmlm pretrain`) next to the step alone.

Two arms, the same model and shapes, interleaved in one run (A B A B ...):

  command   `kmlm pretrain --preset P --steps N --seq-len S --batch-size B --out TMP` in a
            fresh process, on a real corpus (default the built-in one): tokenizing, packing
            and masking on the fly in tf.data, callbacks, checkpoints, the progress bar. Its
            training seconds are read from the run's progress.json (they exclude start-up,
            vocabulary learning, the first step with its XLA compile, validation and the
            final evaluation), so its tokens/s is B*S*(N - 1) / train_seconds.
  step      the same model (`PretrainSettings(...).model_config`, the recipe the command
            uses) compiled with `compile_for_pretraining(jit_compile=True)` in this process
            and driven by `train_on_batch` on cached synthetic batches of the same shape:
            the floor no input pipeline or callback can beat (benchmarks/train_throughput.py
            measures it the same way).

Reported per arm: the median tokens/s over the rounds, and the ratio command/step (ratio of
medians, and the median of the per-round ratios). Every measurement is one JSON line on
stdout (benchmarks/common.py).

Example:
    python benchmarks/command_vs_step.py --preset tiny --steps 200 --rounds 3
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import train_throughput  # noqa: E402

from kmlm.pretraining.recipe import BATCH_SIZE, SEQ_LEN  # noqa: E402  (TF-free constants)

BENCHMARK = "command_vs_step"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mini", help="model preset (default: mini)")
    parser.add_argument("--corpus", default="builtin:python-docs", help="corpus of the command arm")
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN, help=f"row length S (default: {SEQ_LEN}, as the command)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"rows per batch B (default: {BATCH_SIZE}, as the command)")
    parser.add_argument("--steps", type=int, default=200, help="steps of each command run and each step chunk")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (command, step)")
    parser.add_argument("--jsonl", metavar="PATH", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    common.require_positive(parser, args, ("seq_len", "batch_size", "rounds"))
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is never timed)")
    return args


def run_command(args, out):
    """One `kmlm pretrain` run; returns (tokens/s over its timed steps, its progress record)."""
    command = ["kmlm", "pretrain", "--preset", args.preset, "--corpus", args.corpus, "--steps", str(args.steps),
               "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--out", out,
               "--overwrite", "--quiet"]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode:
        raise SystemExit(f"{shlex.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}")
    with open(os.path.join(out, "progress.json")) as file:
        progress = json.load(file)
    timed_steps = progress["steps"] - 1
    return args.batch_size * args.seq_len * timed_steps / progress["train_seconds"], progress


def vocabulary_size(run_dir):
    with open(os.path.join(run_dir, "vocab.txt"), encoding="utf-8") as file:
        return sum(1 for line in file if line.strip())


def make_step_arm(args, vocab_size):
    """The command's model and optimizer on cached synthetic batches (see the docstring)."""
    import tensorflow as tf

    import kmlm
    from kmlm.pipelines import max_predictions_for
    from kmlm.pretraining.settings import PretrainSettings

    settings = PretrainSettings(preset=args.preset, steps=args.steps, seq_len=args.seq_len,
                                batch_size=args.batch_size)
    predictions = max_predictions_for(args.seq_len, settings.mask_rate)
    model = kmlm.build_mlm_model(settings.model_config(vocab_size), predictions)
    kmlm.compile_for_pretraining(model, learning_rate=settings.learning_rate, total_steps=100_000,
                                 jit_compile=True)
    inputs = []
    for batch in train_throughput.synthetic_batches(4, args.batch_size, args.seq_len, predictions, vocab_size, 0):
        token_ids = tf.constant(batch["token_ids"])
        x = {"token_ids": token_ids, "segment_ids": tf.constant(batch["segment_ids"]),
             "document_ids": tf.ones_like(token_ids), "mask_positions": tf.constant(batch["mask_positions"])}
        inputs.append((x, tf.constant(batch["mask_ids"]), tf.constant(batch["mask_weights"])))
    return train_throughput.KerasArm(model, inputs)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    speeds = {"command": [], "step": []}
    with tempfile.TemporaryDirectory(prefix="kmlm-command-vs-step-") as work:
        out = os.path.join(work, "run")
        arm = None
        for round_index in range(args.rounds):
            command_speed, progress = run_command(args, out)
            speeds["command"].append(command_speed)
            if arm is None:  # built after the first command run, which learns the vocabulary
                arm = make_step_arm(args, vocabulary_size(out))
                arm.step(0)  # traces and compiles; never timed
            start = time.perf_counter()
            for i in range(1, args.steps):
                arm.step(i)
            speeds["step"].append(args.batch_size * args.seq_len * (args.steps - 1) / (time.perf_counter() - start))
            print(f"round {round_index + 1}/{args.rounds}: command {command_speed:,.0f} tokens/s "
                  f"({progress['steps']} steps, {progress['train_seconds']:.1f} s timed), "
                  f"step {speeds['step'][-1]:,.0f} tokens/s", file=sys.stderr, flush=True)
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    paired = statistics.median(c / s for c, s in zip(speeds["command"], speeds["step"]))
    shape = {"preset": args.preset, "seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps,
             "corpus": args.corpus, "rounds": args.rounds, "machine": common.machine()}
    common.emit(common.record(BENCHMARK, "train_tokens_per_s", "step", medians["step"], "tokens/s",
                              runs=speeds["step"], **shape), jsonl_path=args.jsonl)
    common.emit(common.record(BENCHMARK, "train_tokens_per_s", "command", medians["command"], "tokens/s",
                              baseline="step", baseline_value=medians["step"], paired_ratio=paired,
                              runs=speeds["command"], **shape), jsonl_path=args.jsonl)
    print(f"command/step: {medians['command'] / medians['step']:.3f} (ratio of medians), {paired:.3f} "
          "(median of per-round ratios)", file=sys.stderr)


if __name__ == "__main__":
    main()

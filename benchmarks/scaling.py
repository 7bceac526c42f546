"""How kmlm training cost grows with the row length S and with the model size.

Two sweeps, each configuration trained in its own subprocess (so that its peak memory is
its own):

  sequence length   --seq-lens 128 256 512 at preset --seq-len-preset (default mini)
  model size        --presets tiny mini small medium base at S=--preset-seq-len (default 128)

A configuration shared by both sweeps (mini at S=128 by default) runs once. Each one builds
`kmlm.build_mlm_model(ModelConfig.from_preset(preset, vocabulary_size=V,
max_position=max(512, S)), P)` with P = `kmlm.pipelines.max_predictions_for(S, 0.15)`,
compiles it with `kmlm.compile_for_pretraining(model, jit_compile=True)` and trains on
synthetic full rows (`train_throughput.synthetic_batches`, no padding) with
`train_on_batch`. The first step (tracing + XLA compilation) and one more warmup step are
not timed; then --steps steps are timed one by one and the median is reported.

Batch size: by default every configuration uses B=--batch-size rows (32), the same B as
`train_throughput.py`, so a step of the seq-len sweep holds more tokens as S grows and the
step time shows the whole cost of a longer row (the S-linear matmuls and the S^2 attention
term). With --tokens-per-batch N, B = N // S instead, so that B*S stays constant and the
step time compares equal token counts.

Reported per configuration (one JSON line each, `benchmarks/common.py` format, with
`shape` and `machine` extras): step_time (median s), tokens_per_second, first_step_s,
params (model.count_params()), training_flops_per_token (matmuls only,
`train_throughput.training_flops_per_token`), achieved_gflops (FLOPs/token x tokens/s),
peak_rss_mib (the child's `ru_maxrss`) and model_memory_mib (peak RSS minus the RSS right
after importing TensorFlow and kmlm). A configuration that fails or exceeds --timeout is
one JSON line with measurement "error" and an `error` field; the sweep goes on. A Markdown
table goes to stderr.

Example:
    python benchmarks/scaling.py                                    # both default sweeps
    python benchmarks/scaling.py --presets --seq-lens 128 256 512 1024 --tokens-per-batch 4096
    python benchmarks/scaling.py --presets tiny mini --seq-lens --jsonl out.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from train_throughput import (  # noqa: E402
    FIRST_REGULAR_ID,
    make_kmlm_arm,
    synthetic_batches,
    training_flops_per_token,
)

BENCHMARK = "scaling"
RESULT_PREFIX = "SCALING_RESULT "
WARMUP_STEPS = 2  # the first compiles; neither is timed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Training cost of kmlm vs row length and model size; one subprocess per configuration.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seq-lens", type=int, nargs="*", default=[128, 256, 512],
                        help="row lengths S of the sequence-length sweep (none: skip it)")
    parser.add_argument("--seq-len-preset", default="mini", help="preset of the sequence-length sweep")
    parser.add_argument("--presets", nargs="*", default=["tiny", "mini", "small", "medium", "base"],
                        help="presets of the model-size sweep (none: skip it)")
    parser.add_argument("--preset-seq-len", type=int, default=128, help="row length S of the model-size sweep")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch B (fixed across S)")
    parser.add_argument("--tokens-per-batch", type=int, default=None,
                        help="keep B*S constant: B = this // S (overrides --batch-size)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size V")
    parser.add_argument("--mask-rate", type=float, default=0.15, help="P = max_predictions_for(S, rate)")
    parser.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout")
    parser.add_argument("--steps", type=int, default=3, help=f"timed steps after {WARMUP_STEPS} warmup steps")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per configuration")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and weights")
    parser.add_argument("--jsonl", metavar="PATH", help="also append every JSON line to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: JSON of one configuration
    args = parser.parse_args(argv)
    if args.one is None:
        common.require_positive(parser, args, ("batch_size", "vocab_size", "steps", "preset_seq_len"))
        if any(s < 1 for s in args.seq_lens):
            parser.error("--seq-lens must be positive")
        if args.tokens_per_batch is not None and args.tokens_per_batch < max(args.seq_lens + [args.preset_seq_len]):
            parser.error("--tokens-per-batch must be at least the longest S (one row per batch)")
        if args.vocab_size <= FIRST_REGULAR_ID:
            parser.error(f"--vocab-size must exceed {FIRST_REGULAR_ID} (the special tokens)")
        if not 0.0 < args.mask_rate < 1.0:
            parser.error("--mask-rate must be in (0, 1)")
        if args.timeout <= 0:
            parser.error("--timeout must be positive")
        if not args.seq_lens and not args.presets:
            parser.error("both sweeps are empty")
    return args


def configurations(args):
    """[(preset, S, B, [sweep names])], each (preset, S) once, in sweep order."""
    order, sweeps = [], {}
    for sweep, pairs in (("seq_len", [(args.seq_len_preset, s) for s in args.seq_lens]),
                         ("preset", [(p, args.preset_seq_len) for p in args.presets])):
        for pair in pairs:
            if pair not in sweeps:
                order.append(pair)
                sweeps[pair] = []
            if sweep not in sweeps[pair]:
                sweeps[pair].append(sweep)
    batch = (lambda s: args.tokens_per_batch // s) if args.tokens_per_batch else (lambda s: args.batch_size)
    return [(preset, s, batch(s), sweeps[(preset, s)]) for preset, s in order]


# ---------------------------------------------------------------------------------------
# Child: one configuration


def run_one(spec):
    """Trains one configuration and returns its raw measurements (runs in the child)."""
    import resource

    started = time.perf_counter()
    import keras
    import tensorflow as tf  # noqa: F401

    import kmlm
    from kmlm.pipelines import max_predictions_for

    baseline_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import_s = time.perf_counter() - started

    keras.utils.set_random_seed(spec["seed"])
    preset, seq_len, batch, vocab = spec["preset"], spec["seq_len"], spec["batch_size"], spec["vocab_size"]
    if preset not in kmlm.PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(kmlm.PRESETS)}")
    num_layers, hidden, num_heads = kmlm.PRESETS[preset]
    predictions = max_predictions_for(seq_len, spec["mask_rate"])
    shape = dict(num_layers=num_layers, hidden=hidden, num_heads=num_heads, intermediate=4 * hidden,
                 predictions=predictions)
    steps = spec["steps"]
    batches = synthetic_batches(min(4, WARMUP_STEPS + steps), batch, seq_len, predictions, vocab, spec["seed"])
    arm_args = argparse.Namespace(preset=preset, vocab_size=vocab, dropout=spec["dropout"], seq_len=seq_len)
    arm = make_kmlm_arm(arm_args, shape, batches, jit=True)

    times = []
    for i in range(WARMUP_STEPS + steps):
        t0 = time.perf_counter()
        arm.step(i)
        times.append(time.perf_counter() - t0)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "shape": shape,
        "params": int(arm.model.count_params()),
        "first_step_s": times[0],
        "step_times_s": times[WARMUP_STEPS:],
        "import_s": import_s,
        "baseline_rss_mib": baseline_rss_mib,
        "peak_rss_mib": peak_rss_mib,
        "machine": common.machine(),
    }


def child_main(args):
    spec = json.loads(args.one)
    result = run_one(spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------
# Parent: the sweep


def measure(args, preset, seq_len, batch):
    """Runs one configuration in a subprocess; returns (result dict, None) or (None, error)."""
    spec = dict(preset=preset, seq_len=seq_len, batch_size=batch, vocab_size=args.vocab_size,
                mask_rate=args.mask_rate, dropout=args.dropout, steps=args.steps, seed=args.seed)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env,
                              preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {args.timeout:g} s"
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):]), None
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    return None, f"exit status {done.returncode}: {tail[-500:]}"


def _die_with_parent():
    """Linux: the child gets SIGTERM when this process dies (e.g. killed by a test timeout)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except Exception:  # noqa: BLE001 - best effort only
        pass


def emit_records(args, preset, seq_len, batch, sweeps, result, machine):
    shape = result["shape"]
    tokens_per_step = batch * seq_len
    flops = training_flops_per_token(shape["num_layers"], shape["hidden"], shape["intermediate"], seq_len,
                                     shape["predictions"], args.vocab_size)["total"]
    step_s = statistics.median(result["step_times_s"])
    row = dict(
        step_time=step_s,
        tokens_per_second=tokens_per_step / step_s,
        first_step_s=result["first_step_s"],
        params=result["params"],
        training_flops_per_token=flops,
        achieved_gflops=flops * tokens_per_step / step_s / 1e9,
        peak_rss_mib=result["peak_rss_mib"],
        model_memory_mib=result["peak_rss_mib"] - result["baseline_rss_mib"],
    )
    full_shape = {"preset": preset, **shape, "vocab_size": args.vocab_size, "seq_len": seq_len,
                  "batch_size": batch, "tokens_per_step": tokens_per_step, "dropout": args.dropout,
                  "precision": "float32", "jit_compile": True}
    units = dict(step_time=("s", False), tokens_per_second=("tokens/s", True), first_step_s=("s", False),
                 params=("params", False), training_flops_per_token=("FLOP/token", False),
                 achieved_gflops=("GFLOP/s", True), peak_rss_mib=("MiB", False),
                 model_memory_mib=("MiB", False))
    extra = {"step_times_s": [round(t, 6) for t in result["step_times_s"]], "warmup_steps": WARMUP_STEPS}
    for name, value in row.items():
        unit, higher = units[name]
        entry = common.record(BENCHMARK, name, arm_name(preset, seq_len, batch), value, unit,
                              higher_is_better=higher, sweeps=sweeps, shape=full_shape, machine=machine,
                              **(extra if name == "step_time" else {}))
        common.emit(entry, jsonl_path=args.jsonl)
    return row


def arm_name(preset, seq_len, batch):
    return f"kmlm-jit/{preset}/S{seq_len}/B{batch}"


def markdown(rows):
    header = ("| sweep | preset | L/H | S | B | P | params | FLOPs/token | first step s | step s | tokens/s "
              "| GFLOP/s | peak RSS MiB | model MiB |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for sweep_name in ("seq_len", "preset"):
        for r in rows:
            if sweep_name not in r["sweeps"]:
                continue
            if "error" in r:
                lines.append(f"| {sweep_name} | {r['preset']} | | {r['seq_len']} | {r['batch']} | | | | | "
                             f"error: {r['error'][:60]} | | | | |")
                continue
            s = r["shape"]
            lines.append(
                f"| {sweep_name} | {r['preset']} | {s['num_layers']}/{s['hidden']} | {r['seq_len']} | {r['batch']} "
                f"| {s['predictions']} | {r['params'] / 1e6:.2f} M | {r['training_flops_per_token'] / 1e6:.1f} M "
                f"| {r['first_step_s']:.1f} | {r['step_time']:.3f} | {r['tokens_per_second']:.0f} "
                f"| {r['achieved_gflops']:.1f} | {r['peak_rss_mib']:.0f} | {r['model_memory_mib']:.0f} |"
            )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.one is not None:
        child_main(args)
        return 0
    configs = configurations(args)
    print(f"scaling: {len(configs)} configuration(s), {WARMUP_STEPS} warmup + {args.steps} timed steps each, "
          f"V={args.vocab_size}, " + (f"B*S={args.tokens_per_batch}" if args.tokens_per_batch
                                      else f"B={args.batch_size}") +
          f"; load average {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    machine = None
    rows = []
    for preset, seq_len, batch, sweeps in configs:
        started = time.perf_counter()
        print(f"  {arm_name(preset, seq_len, batch)} ...", file=sys.stderr, end=" ", flush=True)
        if batch < 1:
            result, error = None, f"--tokens-per-batch gives B=0 at S={seq_len}"
        else:
            result, error = measure(args, preset, seq_len, batch)
        elapsed = time.perf_counter() - started
        base = dict(preset=preset, seq_len=seq_len, batch=batch, sweeps=sweeps)
        if error:
            print(f"error ({error})", file=sys.stderr, flush=True)
            shape = {"preset": preset, "seq_len": seq_len, "batch_size": batch, "vocab_size": args.vocab_size}
            common.emit(common.record(BENCHMARK, "error", arm_name(preset, seq_len, batch), elapsed, "s",
                                      higher_is_better=False, error=error, sweeps=sweeps, shape=shape,
                                      machine=machine or common.machine()), jsonl_path=args.jsonl)
            rows.append({**base, "error": error})
            continue
        machine = machine or result["machine"]
        row = emit_records(args, preset, seq_len, batch, sweeps, result, result["machine"])
        rows.append({**base, **row, "shape": result["shape"]})
        print(f"{row['step_time']:.3f} s/step ({elapsed:.0f} s)", file=sys.stderr, flush=True)
    print("\n" + markdown(rows), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

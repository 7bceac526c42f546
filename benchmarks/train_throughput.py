"""Training throughput of kmlm against its peers, on identical shapes.

Arms (choose with --arms, comma-separated):

  kmlm-jit         kmlm.build_mlm_model + compile_for_pretraining(jit_compile=True)
  kmlm-nojit       the same with jit_compile=False
  kerashub-jit     keras_hub.models.BertMaskedLM, same shape, AdamW, jit_compile=True
  kerashub-nojit   the same with jit_compile=False
  kmlm-bf16        kmlm-jit under mixed_bfloat16 (not run by default)
  torch-eager      Hugging Face BertForMaskedLM on PyTorch (CPU, eager); added by --torch,
                   skipped with a message when torch or transformers is not installed

Every arm trains on the same synthetic batches: full rows (no padding) of random
non-special token ids, P mask slots per row at random distinct positions, all slots
weighted 1. Each arm is first warmed up (its first step includes tracing and XLA
compilation, reported separately and never timed), then the arms run in timed chunks of
--steps training steps, round-robin (A B C D A B C D ...) for --rounds rounds, so that a
change in machine load hits every arm alike. Reported per arm: the median training
tokens/s (B*S tokens per step) over the chunks, min/max and spread, the ratio to the
baseline arm (ratio of medians, and the median of the per-round ratios, which pairs chunks
that ran close in time), and the fraction of an fp32 matmul roofline.

The roofline: once per round, exactly the matmuls of one training step (`model_matmuls`:
forward GEMMs at the model's shapes and both backward GEMMs of each) run alone, as a
TensorFlow graph and as one XLA cluster; the faster gives the tokens/s no step can beat.
Their FLOPs equal the analytical count (`training_flops_per_token`, printed with the
formula). Every measurement is one JSON line on stdout (benchmarks/common.py); the table
goes to stderr.

Example:
    python benchmarks/train_throughput.py --rounds 3 --steps 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)

ARMS = ("kmlm-jit", "kmlm-nojit", "kerashub-jit", "kerashub-nojit", "torch-eager", "kmlm-bf16")
DEFAULT_ARMS = ARMS[:4]
FIRST_REGULAR_ID = 5  # kmlm vocabularies hold [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0..4
MASK_ID = 4
ROOFLINE_KEY = "matmul"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Interleaved training-throughput benchmark: kmlm vs keras-hub BertMaskedLM "
        "(and optionally Hugging Face BertForMaskedLM on PyTorch), with an fp32 matmul roofline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", default="mini", help="kmlm model preset (tiny, mini, small, ...)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size V")
    parser.add_argument("--seq-len", type=int, default=128, help="row length S")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch B")
    parser.add_argument("--mask-rate", type=float, default=0.15,
                        help="masking rate; P = kmlm.pipelines.max_predictions_for(S, rate)")
    parser.add_argument("--max-predictions", type=int, default=None,
                        help="mask slots per row P (overrides --mask-rate)")
    parser.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed chunk")
    parser.add_argument("--rounds", type=int, default=5, help="timed chunks per arm (round-robin)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps per arm before the rounds (the first one compiles)")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                        help=f"comma-separated arms to run, from: {', '.join(ARMS)}")
    parser.add_argument("--torch", action="store_true", help="also run the torch-eager arm")
    parser.add_argument("--baseline", default="kerashub-jit",
                        help="arm the ratios are taken against (the first arm run if it is absent)")
    parser.add_argument("--matmul-repeats", type=int, default=3,
                        help="times the step's matmuls are run per roofline measurement (median taken)")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads for TensorFlow and PyTorch (0: library default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and weights")
    parser.add_argument("--json", metavar="PATH", help="also write a full report (every chunk) to this JSON file")
    parser.add_argument("--jsonl", metavar="PATH", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)

    arms = [name.strip() for name in args.arms.split(",") if name.strip()]
    unknown = [name for name in arms if name not in ARMS]
    if unknown:
        parser.error(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    if args.torch and "torch-eager" not in arms:
        arms.append("torch-eager")
    if not arms:
        parser.error("--arms selects no arm")
    args.arms = list(dict.fromkeys(arms))
    common.require_positive(parser, args, ("vocab_size", "seq_len", "batch_size", "steps", "rounds", "matmul_repeats"))
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first step compiles and is never timed)")
    if args.vocab_size <= FIRST_REGULAR_ID:
        parser.error(f"--vocab-size must exceed {FIRST_REGULAR_ID} (the special tokens)")
    return args


# ---------------------------------------------------------------------------------------
# FLOP count


def training_flops_per_token(num_layers, hidden, intermediate, seq_len, predictions, vocab):
    """FLOPs of one training step per input token, counting matmuls only.

    Forward, per token and layer: fused QKV 2*H*3H, attention output 2*H*H, feed-forward
    2*H*F*2 (= 2 x the matmul parameters), plus attention scores QK^T and probs x V, 2*S*H
    each. The MLM head runs on P of the S positions: transform 2*H*H and the tied vocabulary
    projection 2*H*V, scaled by P/S. Training = forward + backward = 3 x forward (the
    backward pass computes gradients of both inputs and weights). Embedding lookups,
    LayerNorm, softmax, GELU and the optimizer are not matmuls and are left out.
    """
    per_layer_weights = 2 * (3 * hidden * hidden + hidden * hidden + 2 * hidden * intermediate)
    per_layer_attention = 2 * 2 * seq_len * hidden
    head = (2 * hidden * hidden + 2 * hidden * vocab) * predictions / seq_len
    forward = num_layers * (per_layer_weights + per_layer_attention) + head
    matmul_params = num_layers * (4 * hidden * hidden + 2 * hidden * intermediate) + (
        hidden * hidden + hidden * vocab
    ) * predictions / seq_len
    return {
        "encoder_weight_matmuls": 3 * num_layers * per_layer_weights,
        "attention_scores_and_values": 3 * num_layers * per_layer_attention,
        "mlm_head": 3 * head,
        "total": 3 * forward,
        "matmul_params_per_token": matmul_params,
        "formula": (
            "3 x forward; forward/token = L*(2*(3H^2 + H^2 + 2*H*F) + 4*S*H) + (P/S)*(2H^2 + 2*H*V)"
            " = 6 x params-in-matmuls (head weighted by P/S) + 12*L*S*H"
        ),
    }


def model_matmuls(num_layers, hidden, num_heads, intermediate, seq_len, predictions, vocab, batch):
    """Every matmul of one training step as (name, batch_count, m, k, n): [m, k] x [k, n].

    Forward GEMMs of each layer (fused QKV, attention scores and probs x V per head,
    attention output, feed-forward in and out) and of the MLM head at the B*P masked rows
    (transform, tied vocabulary projection); each forward C = A B is followed in the
    backward pass by dA = dC B^T ([m, n] x [n, k]) and dB = A^T dC ([k, m] x [m, n]), the
    same FLOPs again twice. Their FLOPs summed and divided by B*S equal
    `training_flops_per_token(...)["total"]`.
    """
    rows, head_dim, masked = batch * seq_len, hidden // num_heads, batch * predictions
    forward = []
    for layer in range(num_layers):
        forward += [
            (f"layer{layer}.qkv", 1, rows, hidden, 3 * hidden),
            (f"layer{layer}.scores", batch * num_heads, seq_len, head_dim, seq_len),
            (f"layer{layer}.context", batch * num_heads, seq_len, seq_len, head_dim),
            (f"layer{layer}.attention_output", 1, rows, hidden, hidden),
            (f"layer{layer}.ffn_in", 1, rows, hidden, intermediate),
            (f"layer{layer}.ffn_out", 1, rows, intermediate, hidden),
        ]
    forward += [("head.transform", 1, masked, hidden, hidden), ("head.vocabulary", 1, masked, hidden, vocab)]
    step = []
    for name, count, m, k, n in forward:
        step += [(name, count, m, k, n), (name + ".grad_input", count, m, n, k),
                 (name + ".grad_weight", count, k, m, n)]
    return step


def matmul_flops(matmuls):
    return sum(2 * count * m * k * n for _, count, m, k, n in matmuls)


# ---------------------------------------------------------------------------------------
# Synthetic data


def synthetic_batches(count, batch, seq_len, predictions, vocab, seed):
    """`count` batches of full rows: random non-special ids, sorted distinct mask positions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        original = rng.integers(FIRST_REGULAR_ID, vocab, size=(batch, seq_len), dtype=np.int32)
        scores = rng.random((batch, seq_len))
        positions = np.sort(np.argsort(scores, axis=1)[:, :predictions], axis=1).astype(np.int32)
        targets = np.take_along_axis(original, positions, axis=1)
        token_ids = original.copy()
        np.put_along_axis(token_ids, positions, MASK_ID, axis=1)
        batches.append({
            "token_ids": token_ids,
            "segment_ids": np.zeros_like(token_ids),
            "mask_positions": positions,
            "mask_ids": targets,
            "mask_weights": np.ones(positions.shape, np.float32),
        })
    return batches


# ---------------------------------------------------------------------------------------
# Arms: each exposes step(i), which runs one training step on batch i and blocks until done.


class KerasArm:
    """A compiled Keras model driven by `train_on_batch` (which returns host values, so each
    step is finished when it returns)."""

    def __init__(self, model, inputs):
        self.model = model
        self.inputs = inputs  # list of (x, y, sample_weight) tensors

    def step(self, i):
        x, y, w = self.inputs[i % len(self.inputs)]
        self.model.train_on_batch(x, y, sample_weight=w)


def make_kmlm_arm(args, shape, batches, jit, precision="float32"):
    import tensorflow as tf

    import kmlm

    kmlm.set_precision(precision)  # read when the layers are built

    config = kmlm.ModelConfig.from_preset(
        args.preset, vocabulary_size=args.vocab_size, dropout=args.dropout,
        attention_dropout=args.dropout, max_position=max(512, args.seq_len),
    )
    model = kmlm.build_mlm_model(config, shape["predictions"])
    kmlm.set_precision("float32")
    kmlm.compile_for_pretraining(model, total_steps=100_000, jit_compile=jit)
    inputs = []
    for b in batches:
        x = {
            "token_ids": tf.constant(b["token_ids"]),
            "segment_ids": tf.constant(b["segment_ids"]),
            "document_ids": tf.ones_like(tf.constant(b["token_ids"])),
            "mask_positions": tf.constant(b["mask_positions"]),
        }
        inputs.append((x, tf.constant(b["mask_ids"]), tf.constant(b["mask_weights"])))
    return KerasArm(model, inputs)


def make_kerashub_arm(args, shape, batches, jit):
    import keras
    import keras_hub
    import tensorflow as tf

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=args.vocab_size,
        num_layers=shape["num_layers"],
        num_heads=shape["num_heads"],
        hidden_dim=shape["hidden"],
        intermediate_dim=shape["intermediate"],
        dropout=args.dropout,
        max_sequence_length=max(512, args.seq_len),
    )
    model = keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)
    # The optimizer settings match kmlm.compile_for_pretraining's, so the arms do the same work.
    optimizer = keras.optimizers.AdamW(
        learning_rate=5e-4, weight_decay=0.01, beta_1=0.9, beta_2=0.98, epsilon=1e-6,
        global_clipnorm=1.0,
    )
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy")],
        jit_compile=jit,
    )
    inputs = []
    for b in batches:
        x = {
            "token_ids": tf.constant(b["token_ids"]),
            "segment_ids": tf.constant(b["segment_ids"]),
            "padding_mask": tf.ones(b["token_ids"].shape, tf.bool),
            "mask_positions": tf.constant(b["mask_positions"]),
        }
        inputs.append((x, tf.constant(b["mask_ids"]), tf.constant(b["mask_weights"])))
    return KerasArm(model, inputs)


class TorchArm:
    """Hugging Face BertForMaskedLM, eager PyTorch on the CPU, AdamW + global-norm clipping.

    Its head projects every position onto the vocabulary (labels -100 outside the mask
    slots), as BertForMaskedLM always does; that extra work is part of what is measured.
    """

    def __init__(self, args, shape, batches):
        import torch
        from transformers import BertConfig, BertForMaskedLM

        self.torch = torch
        torch.manual_seed(args.seed)
        config = BertConfig(
            vocab_size=args.vocab_size,
            hidden_size=shape["hidden"],
            num_hidden_layers=shape["num_layers"],
            num_attention_heads=shape["num_heads"],
            intermediate_size=shape["intermediate"],
            max_position_embeddings=max(512, args.seq_len),
            type_vocab_size=2,
            hidden_dropout_prob=args.dropout,
            attention_probs_dropout_prob=args.dropout,
        )
        self.model = BertForMaskedLM(config)
        self.model.train()
        self.attention = getattr(self.model.config, "_attn_implementation", "unknown")
        no_decay = [p for n, p in self.model.named_parameters() if "LayerNorm" in n or n.endswith("bias")]
        decay = [p for n, p in self.model.named_parameters() if not ("LayerNorm" in n or n.endswith("bias"))]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
            lr=5e-4, betas=(0.9, 0.98), eps=1e-6,
        )
        self.inputs = []
        for b in batches:
            token_ids = torch.from_numpy(b["token_ids"]).long()
            labels = torch.full_like(token_ids, -100)
            labels.scatter_(1, torch.from_numpy(b["mask_positions"]).long(),
                            torch.from_numpy(b["mask_ids"]).long())
            self.inputs.append({
                "input_ids": token_ids,
                "token_type_ids": torch.from_numpy(b["segment_ids"]).long(),
                "attention_mask": torch.ones_like(token_ids),
                "labels": labels,
            })

    def step(self, i):
        batch = self.inputs[i % len(self.inputs)]
        loss = self.model(**batch).loss
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss.item()


def torch_missing():
    """Why the torch arm cannot run, or None."""
    import importlib.util

    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed; skipping torch-eager "
                "(pip install torch transformers to run it)")
    return None


# ---------------------------------------------------------------------------------------
# Roofline probe


class ModelMatmulProbe:
    """Runs exactly the matmuls of one training step (`model_matmuls`), nothing else.

    Two ways, both timed: a TensorFlow graph (oneDNN kernels) and one XLA cluster. The
    faster of the two is this machine's matmul roofline at the model's own shapes: a
    training step cannot beat the time its matmuls take on their own.
    """

    MODES = ("graph", "xla")

    def __init__(self, matmuls, repeats, seed):
        import tensorflow as tf

        generator = tf.random.Generator.from_seed(seed)

        def operand(count, rows, cols):
            return generator.normal((rows, cols) if count == 1 else (count, rows, cols), dtype=tf.float32)

        self.operands = [(operand(c, m, k), operand(c, k, n)) for _, c, m, k, n in matmuls]
        self.flops = matmul_flops(matmuls)
        self.repeats = repeats

        def run(operands):
            return [tf.linalg.matmul(a, b) for a, b in operands]

        self.functions = {"graph": tf.function(run, jit_compile=False), "xla": tf.function(run, jit_compile=True)}

    def measure(self, mode):
        """Seconds for all the step's matmuls (median of `repeats`) and cores used meanwhile."""
        function = self.functions[mode]
        times, cores = [], []
        for _ in range(self.repeats):
            cpu_start, start = time.process_time(), time.perf_counter()
            outputs = function(self.operands)
            _ = [float(out[(0,) * len(out.shape)]) for out in outputs[-1:]]
            wall = time.perf_counter() - start
            times.append(wall)
            cores.append((time.process_time() - cpu_start) / wall)
        return median(times), median(cores)


# ---------------------------------------------------------------------------------------


def median(values):
    return statistics.median(values) if values else float("nan")


def fmt(value, digits=0):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def versions():
    import keras
    import keras_hub
    import tensorflow as tf

    found = {"python": platform.python_version(), "tensorflow": tf.__version__,
             "keras": keras.__version__, "keras_hub": keras_hub.__version__}
    for name in ("torch", "transformers"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = module.__version__
    return found


def say(*parts, **kwargs):
    """Human-readable progress and tables go to stderr; stdout carries only JSON lines."""
    print(*parts, file=sys.stderr, flush=True, **kwargs)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    import tensorflow as tf

    import kmlm
    from kmlm.pipelines import max_predictions_for

    # BertBackbone always builds a pooler that the MLM loss never reaches; Keras warns about
    # its missing gradients on every trace.
    warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)

    if args.preset not in kmlm.PRESETS:
        sys.exit(f"error: unknown preset {args.preset!r}; choose one of {', '.join(kmlm.PRESETS)}")
    num_layers, hidden, num_heads = kmlm.PRESETS[args.preset]
    predictions = args.max_predictions or max_predictions_for(args.seq_len, args.mask_rate)
    if not 1 <= predictions <= args.seq_len:
        sys.exit(f"error: --max-predictions must be between 1 and --seq-len ({args.seq_len})")
    shape = dict(num_layers=num_layers, hidden=hidden, num_heads=num_heads,
                 intermediate=4 * hidden, predictions=predictions)
    tokens_per_step = args.batch_size * args.seq_len
    flops = training_flops_per_token(num_layers, hidden, 4 * hidden, args.seq_len, predictions,
                                     args.vocab_size)
    matmuls = model_matmuls(num_layers, hidden, num_heads, 4 * hidden, args.seq_len, predictions,
                            args.vocab_size, args.batch_size)
    assert math.isclose(matmul_flops(matmuls), flops["total"] * tokens_per_step, rel_tol=1e-9)

    arms = list(args.arms)
    skipped = {}
    if "torch-eager" in arms:
        reason = torch_missing()
        if reason:
            say(f"note: {reason}")
            skipped["torch-eager"] = reason
            arms.remove("torch-eager")
    if not arms:
        sys.exit("error: no arm left to run")
    baseline = args.baseline if args.baseline in arms else arms[0]

    say(f"shape: preset {args.preset} (L{num_layers}/H{hidden}/{num_heads} heads/FFN {4 * hidden}), "
        f"V={args.vocab_size}, S={args.seq_len}, B={args.batch_size}, P={predictions}, fp32, "
        f"dropout {args.dropout}; {tokens_per_step} tokens/step")
    say(f"plan: warmup {args.warmup} steps/arm, then {args.rounds} rounds x {args.steps} steps, "
        f"round-robin over {', '.join(arms)}; baseline {baseline}")
    say(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
        f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")

    batches = synthetic_batches(4, args.batch_size, args.seq_len, predictions, args.vocab_size, args.seed)
    makers = {
        "kmlm-jit": lambda: make_kmlm_arm(args, shape, batches, jit=True),
        "kmlm-nojit": lambda: make_kmlm_arm(args, shape, batches, jit=False),
        "kmlm-bf16": lambda: make_kmlm_arm(args, shape, batches, jit=True, precision="mixed_bfloat16"),
        "kerashub-jit": lambda: make_kerashub_arm(args, shape, batches, jit=True),
        "kerashub-nojit": lambda: make_kerashub_arm(args, shape, batches, jit=False),
        "torch-eager": lambda: TorchArm(args, shape, batches),
    }
    started = time.perf_counter()
    runners, warmup = {}, {}
    for name in arms:
        build_start = time.perf_counter()
        runners[name] = makers[name]()
        build_s = time.perf_counter() - build_start
        if name == "torch-eager" and args.threads:
            runners[name].torch.set_num_threads(args.threads)
        step_times = []
        for i in range(args.warmup):
            step_start = time.perf_counter()
            runners[name].step(i)
            step_times.append(time.perf_counter() - step_start)
        warmup[name] = {"build_s": build_s,
                        "first_step_s": step_times[0], "warm_step_s": step_times[1:]}
        say(f"warmed {name}: first step {step_times[0]:.1f} s (includes tracing/compilation)"
            + (f", then {', '.join(f'{t:.2f}' for t in step_times[1:])} s" if step_times[1:] else ""))

    probe = ModelMatmulProbe(matmuls, args.matmul_repeats, args.seed)
    for mode in probe.MODES:
        probe.measure(mode)  # compile and warm the kernels
    chunks = {name: [] for name in arms}
    cpu_use = {name: [] for name in arms}
    probe_s = {mode: [] for mode in probe.MODES}
    probe_cores = {mode: [] for mode in probe.MODES}
    cursor = args.warmup
    for round_index in range(args.rounds):
        line = [f"round {round_index + 1}/{args.rounds}: matmuls"]
        for mode in probe.MODES:
            seconds, cores = probe.measure(mode)
            probe_s[mode].append(seconds)
            probe_cores[mode].append(cores)
            line.append(f"{mode} {seconds * 1000:.0f} ms")
        for name in arms:
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            for i in range(args.steps):
                runners[name].step(cursor + i)
            wall = time.perf_counter() - wall_start
            cpu_use[name].append((time.process_time() - cpu_start) / wall)
            chunks[name].append(args.steps * tokens_per_step / wall)
            line.append(f"{name} {chunks[name][-1]:,.0f}")
        cursor += args.steps
        say(" | ".join(line) + " tokens/s")
    timed_s = time.perf_counter() - started

    roofline_by_mode = {mode: tokens_per_step / median(probe_s[mode]) for mode in probe.MODES}
    roofline_mode = max(roofline_by_mode, key=roofline_by_mode.get)
    roofline_tps = roofline_by_mode[roofline_mode]
    roofline_gflops = roofline_tps * flops["total"] / 1e9
    base_median = median(chunks[baseline])
    results = {}
    for name in arms:
        values = chunks[name]
        mid = median(values)
        paired = [v / b for v, b in zip(values, chunks[baseline])]
        results[name] = {
            "tokens_per_s_chunks": values,
            "median_tokens_per_s": mid,
            "min_tokens_per_s": min(values),
            "max_tokens_per_s": max(values),
            "spread": (max(values) - min(values)) / mid,
            "ratio_of_medians": mid / base_median,
            "median_paired_ratio": median(paired),
            "roofline_fraction": mid / roofline_tps,
            "median_step_s": tokens_per_step / mid,
            "cpu_cores_used_median": median(cpu_use[name]),
            **warmup[name],
        }

    header = (f"{'arm':<15} {'median tok/s':>12} {'min':>8} {'max':>8} {'spread':>7} "
              f"{'step s':>7} {'x ' + baseline:>19} {'paired':>7} {'roofline':>9} {'cores':>6}")
    say()
    say(header)
    say("-" * len(header))
    for name in arms:
        r = results[name]
        say(f"{name:<15} {fmt(r['median_tokens_per_s']):>12} {fmt(r['min_tokens_per_s']):>8} "
            f"{fmt(r['max_tokens_per_s']):>8} {r['spread']:>6.0%} {r['median_step_s']:>7.2f} "
            f"{r['ratio_of_medians']:>19.2f} {r['median_paired_ratio']:>7.2f} "
            f"{r['roofline_fraction']:>9.0%} {r['cpu_cores_used_median']:>6.2f}")
    for name, reason in skipped.items():
        say(f"{name:<15} skipped: {reason}")
    say()
    say("columns: spread = (max-min)/median over the chunks; 'x baseline' = ratio of medians; "
        "paired = median of per-round ratios; roofline = median tok/s / roofline tok/s; "
        "cores = process CPU time / wall time during the chunks")
    say(f"roofline: the step's {len(matmuls)} matmuls alone ({matmul_flops(matmuls) / 1e9:.1f} GFLOP), "
        + ", ".join(f"{mode} {median(probe_s[mode]) * 1000:.0f} ms = {roofline_by_mode[mode]:,.0f} tokens/s"
                    for mode in probe.MODES)
        + f"; the faster ({roofline_mode}, {roofline_gflops:.1f} GFLOP/s) is the roofline")
    say(f"  training FLOPs/token = {flops['total'] / 1e6:.2f} M  [{flops['formula']}]")
    say(f"    encoder weight matmuls {flops['encoder_weight_matmuls'] / 1e6:.2f} M, "
        f"attention QK^T and PV {flops['attention_scores_and_values'] / 1e6:.2f} M, "
        f"MLM head at P/S={predictions}/{args.seq_len} {flops['mlm_head'] / 1e6:.2f} M "
        f"(6 x {flops['matmul_params_per_token'] / 1e6:.3f} M matmul params/token + attention)")
    if "torch-eager" in results:
        say(f"  torch-eager: attention implementation {runners['torch-eager'].attention}; "
            "BertForMaskedLM projects all S positions onto the vocabulary, so its roofline "
            "fraction counts only the work the other arms do")
    say(f"total time {timed_s:.0f} s (building, warmup and rounds)")

    shape_record = {**shape, "vocab_size": args.vocab_size, "seq_len": args.seq_len,
                    "batch_size": args.batch_size, "tokens_per_step": tokens_per_step,
                    "precision": "float32", "dropout": args.dropout}
    extra = {"shape": shape_record, "machine": common.machine()}
    for mode in probe.MODES:
        common.emit(common.record(
            "train_throughput", "roofline_tokens_per_second", f"matmuls-{mode}", roofline_by_mode[mode],
            "tokens/s", flops_per_token=flops["total"], matmul_seconds=median(probe_s[mode]),
            cores_used=median(probe_cores[mode]), **extra), jsonl_path=args.jsonl)
    for name in arms:
        r = results[name]
        common.emit(common.record(
            "train_throughput", "tokens_per_second", name, r["median_tokens_per_s"], "tokens/s",
            baseline=baseline, baseline_value=base_median, median_paired_ratio=r["median_paired_ratio"],
            min=r["min_tokens_per_s"], max=r["max_tokens_per_s"], first_step_s=r["first_step_s"],
            cores_used=r["cpu_cores_used_median"], **extra), jsonl_path=args.jsonl)
        common.emit(common.record(
            "train_throughput", "roofline_fraction", name, r["median_tokens_per_s"], "tokens/s",
            baseline=f"matmuls-{roofline_mode}", baseline_value=roofline_tps, **extra), jsonl_path=args.jsonl)

    if args.json:
        report = {
            "settings": {k: v for k, v in vars(args).items() if k not in ("json", "jsonl")},
            "shape": shape_record,
            "baseline": baseline,
            "arms": results,
            "skipped": skipped,
            "roofline": {"matmuls": [list(m) for m in matmuls], "seconds_per_round": probe_s,
                         "cores_used_per_round": probe_cores, "tokens_per_s": roofline_by_mode,
                         "mode": roofline_mode, "gflops": roofline_gflops, "flops_per_token": flops},
            "machine": {"cpus": os.cpu_count(), "load_average_end": os.getloadavg(),
                        "versions": versions()},
            "total_s": timed_s,
        }
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)
        say(f"wrote {args.json}")


if __name__ == "__main__":
    main()

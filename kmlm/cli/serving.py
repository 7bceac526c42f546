"""`kmlm export`: write a run as a TensorFlow Serving SavedModel version, with
`--format huggingface` as a Hugging Face transformers directory, or with `--format tflite`
(`--quantize int8`) as a TF Lite model with int8 weights.

TensorFlow-heavy modules are imported inside the command function, so `kmlm --help` stays fast.
"""

import os
import time

from kmlm.cli.options import add_command, add_subcommands, positive_int

TOP_K = 5  # predictions per [MASK] in the SavedModel's fill_mask
FORMATS = ("tf-serving", "huggingface", "tflite")
QUANTIZATIONS = ("int8", "none")
# Options of the SavedModel export that a Hugging Face directory has no use for.
TF_SERVING_ONLY = ("--version", "--seq-len", "--top-k", "--max-masks", "--model-name")
# ...and those that a TF Lite directory has no use for (it has no versions or warmup requests).
NOT_TFLITE = ("--version", "--max-masks", "--model-name")


def add_commands(commands, names=None):
    """Adds the subcommand export (or only those in `names`) to `commands`."""
    add_subcommands(commands, COMMANDS, names)


def add_export_command(commands):
    """Adds `kmlm export`."""
    ex = add_command(commands, "export", help="export a run for TensorFlow Serving, Hugging Face transformers or "
                                              "TF Lite (int8)",
                     description="Write a TensorFlow Serving SavedModel version BASE_DIR/<version>/ with the "
                                 "signatures serving_default (fixed-length ids), fill_mask and encode (raw "
                                 "strings), warmup requests, and an op audit. The version is written under a "
                                 "temporary name and renamed into place; existing versions are never "
                                 "overwritten. With --format huggingface, write a transformers directory "
                                 "instead (config.json, model.safetensors, vocab.txt, tokenizer_config.json): "
                                 "BertForMaskedLM for a post-LN run, RobertaPreLayerNormForMaskedLM for a pre-LN "
                                 "run, ...ForSequenceClassification for a fine-tuned classifier. With --format "
                                 "tflite (or --quantize int8), write a TF Lite directory (model.tflite with int8 "
                                 "weights, vocab.txt, kmlm_tflite.json) for the fill-mask model or a classify/pair "
                                 "classifier; TF Serving cannot serve it: run it with kmlm.serving.tflite.load_tflite.")
    ex.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `kmlm pretrain`, or by `kmlm finetune` "
                    "(signatures serving_default and predict; see the README)")
    ex.add_argument("--out", required=True, metavar="BASE_DIR", help="model base directory (one subdirectory per "
                    "version); with --format huggingface, the directory to write (new or empty)")
    ex.add_argument("--format", choices=FORMATS, default=None,
                    help="tf-serving: a SavedModel version; huggingface: a transformers model directory; tflite: a "
                         "TF Lite model directory (default: tf-serving, or tflite with --quantize int8)")
    ex.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                    help="tflite only: int8 (dynamic-range int8 weights, the default) or none (float32)")
    ex.add_argument("--version", type=positive_int, default=None,
                    help="version number (default: one more than the highest present)")
    ex.add_argument("--seq-len", type=positive_int, default=None,
                    help="fixed sequence length S of the signatures (default: the run's --seq-len)")
    ex.add_argument("--top-k", type=positive_int, default=None, help=f"predictions per [MASK] (default {TOP_K})")
    ex.add_argument("--max-masks", type=positive_int, default=None,
                    help="[MASK] slots per text (default: the run's prediction slots for S)")
    ex.add_argument("--model-name", default=None, help="model name in the warmup requests (default: BASE_DIR's name)")
    ex.set_defaults(run=_export)


def _export(args):
    """Runs `kmlm export`."""
    if args.format is None:
        args.format = "tflite" if args.quantize == "int8" else "tf-serving"
    if args.quantize is not None and args.format != "tflite":
        raise ValueError(f"--quantize applies to --format tflite only: TF Serving and Hugging Face exports stay "
                         f"float32; use --format tflite --quantize {args.quantize} (or leave --quantize out)")
    if args.format == "huggingface":
        _export_huggingface(args)
        return
    if args.format == "tflite":
        _export_tflite(args)
        return
    from kmlm.serving.audit import text_ops_used
    from kmlm.serving.masked_lm import export_run

    print(f"exporting {args.run_dir} to {args.out} ...", flush=True)
    start = time.time()
    if os.path.isfile(os.path.join(args.run_dir, "task.json")):  # a `kmlm finetune` output
        from kmlm.serving.tasks import export_task

        result = export_task(args.run_dir, args.out, version=args.version, seq_len=args.seq_len,
                             model_name=args.model_name)
        print(f"wrote version {result.version} to {result.path} in {time.time() - start:.1f}s: signatures "
              f"{', '.join(sorted(result.ops))} (S={result.seq_len}); op audit passed, TF Text ops: "
              f"{', '.join(text_ops_used(result.ops)) or 'none'}")
        return
    result = export_run(args.run_dir, args.out, version=args.version, seq_len=args.seq_len, top_k=args.top_k or TOP_K,
                        max_masks=args.max_masks, model_name=args.model_name)
    print(
        f"wrote version {result.version} to {result.path} in {time.time() - start:.1f}s: signatures "
        f"{', '.join(sorted(result.ops))} (S={result.seq_len}, max_masks={result.max_masks}, top_k={result.top_k}); "
        f"op audit passed, TF Text ops: {', '.join(text_ops_used(result.ops)) or 'none'}"
    )


def _export_huggingface(args):
    """Runs `kmlm export --format huggingface`."""
    from kmlm.interop.huggingface_export import export_huggingface

    for flag in TF_SERVING_ONLY:
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None:
            raise ValueError(f"{flag} applies to --format tf-serving only; leave it out with --format huggingface")
    print(f"exporting {args.run_dir} to {args.out} (Hugging Face transformers) ...", flush=True)
    start = time.time()
    export_huggingface(args.run_dir, args.out)
    print(f"done in {time.time() - start:.1f}s; load it with transformers' AutoModelForMaskedLM (or "
          "AutoModelForSequenceClassification) and AutoTokenizer .from_pretrained")


def _export_tflite(args):
    """Runs `kmlm export --format tflite`."""
    from kmlm.serving.tflite import export_tflite

    for flag in NOT_TFLITE:
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None:
            raise ValueError(f"{flag} applies to --format tf-serving only; leave it out with --format tflite")
    quantize = args.quantize or "int8"
    print(f"exporting {args.run_dir} to {args.out} (TF Lite, {'int8 weights' if quantize == 'int8' else 'float32'})"
          " ...", flush=True)
    start = time.time()
    result = export_tflite(args.run_dir, args.out, quantize=quantize, seq_len=args.seq_len, top_k=args.top_k or TOP_K)
    print(f"wrote {os.path.join(result.path, 'model.tflite')} ({result.size_bytes / 1e6:.1f} MB, {result.kind}, "
          f"S={result.seq_len}) in {time.time() - start:.1f}s; TF Serving cannot serve it: run it with "
          "kmlm.serving.tflite.load_tflite (ai-edge-litert or TensorFlow's interpreter)")


# Subcommand name -> the function that adds it.
COMMANDS = {"export": add_export_command}

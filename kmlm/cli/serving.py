"""`kmlm export`: write a run as a TensorFlow Serving SavedModel version.

TensorFlow-heavy modules are imported inside the command function, so `kmlm --help` stays fast.
"""

import os
import time

from kmlm.cli.options import add_command, add_subcommands, positive_int


def add_commands(commands, names=None):
    """Adds the subcommand export (or only those in `names`) to `commands`."""
    add_subcommands(commands, COMMANDS, names)


def add_export_command(commands):
    """Adds `kmlm export`."""
    ex = add_command(commands, "export", help="export a run for TensorFlow Serving",
                     description="Write a TensorFlow Serving SavedModel version BASE_DIR/<version>/ with the "
                                 "signatures serving_default (fixed-length ids), fill_mask and encode (raw "
                                 "strings), warmup requests, and an op audit. The version is written under a "
                                 "temporary name and renamed into place; existing versions are never "
                                 "overwritten.")
    ex.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `kmlm pretrain`, or by `kmlm finetune` "
                    "(signatures serving_default and predict; see the README)")
    ex.add_argument("--out", required=True, metavar="BASE_DIR", help="model base directory (one subdirectory per version)")
    ex.add_argument("--version", type=positive_int, default=None,
                    help="version number (default: one more than the highest present)")
    ex.add_argument("--seq-len", type=positive_int, default=None,
                    help="fixed sequence length S of the signatures (default: the run's --seq-len)")
    ex.add_argument("--top-k", type=positive_int, default=5, help="predictions per [MASK]")
    ex.add_argument("--max-masks", type=positive_int, default=None,
                    help="[MASK] slots per text (default: the run's prediction slots for S)")
    ex.add_argument("--model-name", default=None, help="model name in the warmup requests (default: BASE_DIR's name)")
    ex.set_defaults(run=_export)


def _export(args):
    """Runs `kmlm export`."""
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
    result = export_run(args.run_dir, args.out, version=args.version, seq_len=args.seq_len, top_k=args.top_k,
                        max_masks=args.max_masks, model_name=args.model_name)
    print(
        f"wrote version {result.version} to {result.path} in {time.time() - start:.1f}s: signatures "
        f"{', '.join(sorted(result.ops))} (S={result.seq_len}, max_masks={result.max_masks}, top_k={result.top_k}); "
        f"op audit passed, TF Text ops: {', '.join(text_ops_used(result.ops)) or 'none'}"
    )


# Subcommand name -> the function that adds it.
COMMANDS = {"export": add_export_command}

"""Scores finished `kmlm pretrain` runs with `budget_vs_kerashub.py`'s one evaluation, and
optionally trains its keras-hub arm alone, so recipes can be compared one run at a time.

`budget_vs_kerashub.py` runs kmlm and keras-hub back to back at one S and B. For ablations
(one `kmlm pretrain` per setting, each with its own row length, batch or recipe) this script
scores every run the same way whatever it trained with: the held-out split of the run's
corpus, ONE DOCUMENT PER ROW at --seq-len (default 128) and --batch-size (default 32), token
masking at 15% (80/10/10), pooled over five fixed seeds — the batches and the function
(`evaluation_batches`, `pooled_accuracy`) of budget_vs_kerashub.py. A run trained on rows
shorter than --seq-len is still scored at --seq-len: positions it never trained count against it.

`--kerashub-minutes M` also trains keras-hub's BertMaskedLM as budget_vs_kerashub.py does
(constant AdamW 5e-4, mask 0.15, one document per row, its budget clock) on the FIRST run's
corpus split, vocabulary and model shape (dropout as that run's), at `--kerashub-seq-len` and
`--kerashub-batch-size` (default: --seq-len, --batch-size), and scores it on the same batches.

Example (the 5-minute ablations of benchmarks/README.md):
    kmlm pretrain --corpus runs/corpora/changelogs.txt --preset mini --time-budget 5 --seq-len 128 \\
        --batch-size 16 --quiet --out runs/abl/b16
    python benchmarks/heldout_eval.py runs/abl/b16 runs/abl/default --kerashub-minutes 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import budget_vs_kerashub  # noqa: E402
import common  # noqa: E402

BENCHMARK = "heldout_eval"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Held-out masked accuracy of finished kmlm runs (one document per row, token masking 15%, "
        "five seeds), optionally next to keras-hub BertMaskedLM trained for a budget.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished kmlm pretrain run directories")
    parser.add_argument("--seq-len", type=int, default=128, help="row length S of the evaluation batches")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per evaluation batch")
    parser.add_argument("--kerashub-minutes", type=float, default=None, metavar="MINUTES",
                        help="also train keras-hub BertMaskedLM for this many minutes and score it")
    parser.add_argument("--kerashub-steps", type=int, default=None, metavar="STEPS",
                        help="stop keras-hub's training at this many optimizer steps if they come before the "
                        "budget (for comparisons at equal steps on a machine that is not quiet)")
    parser.add_argument("--kerashub-seq-len", type=int, default=None, help="keras-hub's row length (default: --seq-len)")
    parser.add_argument("--kerashub-batch-size", type=int, default=None,
                        help="keras-hub's batch size (default: --batch-size)")
    parser.add_argument("--jsonl", metavar="PATH", help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    common.require_positive(parser, args, ("seq_len", "batch_size"))
    if args.kerashub_minutes is not None and not args.kerashub_minutes > 0:
        parser.error("--kerashub-minutes must be a positive number of minutes")
    if args.kerashub_steps is not None and (args.kerashub_minutes is None or args.kerashub_steps < 1):
        parser.error("--kerashub-steps needs --kerashub-minutes and must be at least 1")
    for run in args.runs:
        if not os.path.isfile(os.path.join(run, "config.json")):
            parser.error(f"{run} is not a finished kmlm run directory (no config.json)")
    return args


def run_facts(run_dir):
    """Steps and training seconds from a run's progress.json (None where it has none)."""
    path = os.path.join(run_dir, "progress.json")
    if not os.path.isfile(path):
        return {"steps": None, "train_seconds": None}
    with open(path) as file:
        progress = json.load(file)
    return {"steps": progress.get("steps"), "train_seconds": progress.get("train_seconds")}


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from kmlm import pipelines
    from kmlm.run_directory import load_run

    warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
    first = load_run(args.runs[0])
    data = dataclasses.replace(first.config.data, seq_len=args.seq_len, batch_size=args.batch_size)
    batches = budget_vs_kerashub.evaluation_batches(data, first.vocabulary)
    rows = []
    for run_dir in args.runs:
        run = first if run_dir == args.runs[0] else load_run(run_dir)
        if list(run.vocabulary) != list(first.vocabulary) or run.config.data.corpus != first.config.data.corpus:
            sys.exit(f"error: {run_dir} has another vocabulary or corpus than {args.runs[0]}; "
                     "score runs of one corpus and vocabulary together")
        score = budget_vs_kerashub.pooled_accuracy(budget_vs_kerashub.kmlm_caller(run.model), batches)
        rows.append(dict(arm=run_dir, seq_len=run.config.data.seq_len, batch_size=run.config.data.batch_size,
                         **run_facts(run_dir), **score))
        del run
        keras.utils.clear_session()
    if args.kerashub_minutes is not None:
        seq_len = args.kerashub_seq_len or args.seq_len
        batch_size = args.kerashub_batch_size or args.batch_size
        documents = pipelines.load_documents(data.corpus, one_per_line=data.one_per_line)
        train_texts = [text.decode("utf-8") for text in
                       pipelines.split_documents(documents, "train", data.eval_fraction).as_numpy_iterator()]
        options = argparse.Namespace(budget=args.kerashub_minutes, seq_len=seq_len, batch_size=batch_size,
                                     max_steps=args.kerashub_steps)
        model, record = budget_vs_kerashub.train_kerashub(
            options, first.config.model, list(first.vocabulary), data.lowercase, train_texts,
            pipelines.max_predictions_for(seq_len, budget_vs_kerashub.MASK_RATE))
        score = budget_vs_kerashub.pooled_accuracy(budget_vs_kerashub.kerashub_caller(model), batches)
        rows.append(dict(arm=f"kerashub ({args.kerashub_minutes:g} min)", seq_len=seq_len, batch_size=batch_size,
                         steps=record["steps"], train_seconds=round(record["train_seconds"], 1), **score))

    machine = common.machine()
    machine["load_average_end"] = list(os.getloadavg())
    evaluation = dict(seq_len=args.seq_len, batch_size=args.batch_size, packing=False,
                      masking="token 0.15 (80/10/10)", seeds=budget_vs_kerashub.EVAL_SEEDS,
                      corpus=data.corpus)
    print(f"{'arm':<40} {'S':>4} {'B':>3} {'steps':>6} {'train s':>8} {'accuracy':>9} {'loss':>7}", file=sys.stderr)
    for row in rows:
        print(f"{row['arm']:<40} {row['seq_len']:>4} {row['batch_size']:>3} {row['steps'] or '-':>6} "
              f"{row['train_seconds'] or '-':>8} {row['masked_accuracy']:>9.4f} {row['loss']:>7.3f}", file=sys.stderr)
        for measurement, unit in (("masked_accuracy", "fraction"), ("loss", "nats")):
            entry = common.record(BENCHMARK, measurement, row["arm"], row[measurement], unit,
                                  higher_is_better=measurement == "masked_accuracy",
                                  shape=dict(seq_len=row["seq_len"], batch_size=row["batch_size"]),
                                  steps=row["steps"], train_seconds=row["train_seconds"],
                                  masked_tokens=row["masked_tokens"], evaluation=evaluation, machine=machine)
            common.emit(entry, jsonl_path=args.jsonl)


if __name__ == "__main__":
    main()

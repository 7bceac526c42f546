"""Pretraining recipes compared by held-out masked accuracy: the ablations behind the defaults.

Each recipe is a set of `kmlm pretrain` flags. The script runs the real command (a fresh
process, the way a user runs it) once per recipe, one after another, then evaluates every
finished run THE SAME WAY whatever it trained with (`kmlm.pretraining.evaluation`): the
held-out split of its corpus, token masking at 15% (80/10/10), pooled over five fixed mask
seeds. So numbers compare across recipes even when a recipe trains with another mask rate.

Reported per recipe: held-out masked accuracy and loss, the unigram entropy of the held-out
targets (the loss of a model that learned only token frequencies), the steps trained, and
the wall time of the command split into training and the rest (read from the run's own
progress file). Every measurement is one JSON line on stdout (see benchmarks/common.py).

Recipes are given as NAME=FLAGS; the common flags (corpus, preset, budget) go after `--`:

    python benchmarks/pretrain_recipes.py \\
        --recipe "old=--learning-rate 5e-4 --dropout 0.1 --norm post" \\
        --recipe "new=" -- --preset mini --time-budget 5

Other texts this machine has: `--corpus "/usr/share/doc/*/changelog.Debian.gz"` (Debian
package changelogs: short English release notes) and `--corpus
/usr/share/debian-reference/debian-reference.zh-cn.txt.gz` (the Debian
Reference in Simplified Chinese, from the debian-reference-zh-cn package).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

BENCHMARK = "pretrain_recipes"
EVAL_BATCHES = 100
EVAL_SEEDS = 5


def standard_evaluation(run_dir):
    """Held-out metrics of a finished run under the one evaluation every recipe shares,
    pooled over EVAL_SEEDS mask draws (the held-out split of a small corpus is a few batches)."""
    from kmlm.pretraining.evaluation import EVAL_SEED, eval_dataset, evaluate_masked_lm, unigram_entropy
    from kmlm.run_directory import load_run

    run = load_run(run_dir)
    totals = {"correct": 0.0, "loss": 0.0, "masked_tokens": 0}
    for k in range(EVAL_SEEDS):
        metrics = evaluate_masked_lm(run.model, eval_dataset(run.config.data, run.vocabulary, seed=EVAL_SEED + k),
                                     max_batches=EVAL_BATCHES, verbose=0)
        totals["correct"] += metrics["masked_accuracy"] * metrics["masked_tokens"]
        totals["loss"] += metrics["loss"] * metrics["masked_tokens"]
        totals["masked_tokens"] += metrics["masked_tokens"]
    entropy = unigram_entropy(eval_dataset(run.config.data, run.vocabulary), len(run.vocabulary),
                              max_batches=EVAL_BATCHES)
    return {"masked_accuracy": totals["correct"] / totals["masked_tokens"],
            "loss": totals["loss"] / totals["masked_tokens"], "masked_tokens": totals["masked_tokens"],
            "unigram_entropy": entropy}


def run_recipe(name, flags, common_flags, out):
    command = [sys.executable, "-m", "kmlm", "pretrain", *common_flags, *flags, "--out", out]
    print(f"[{name}] {shlex.join(command[2:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        print(result.stdout[-3000:], file=sys.stderr)
        raise SystemExit(f"recipe {name!r} failed with exit code {result.returncode}")
    progress = {}
    progress_path = os.path.join(out, "progress.json")
    if os.path.isfile(progress_path):
        with open(progress_path) as file:
            progress = json.load(file)
    return wall, progress


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    common_flags = []
    if "--" in argv:
        cut = argv.index("--")
        argv, common_flags = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", action="append", required=True, metavar="NAME=FLAGS",
                        help="a recipe: its name, '=', then its kmlm pretrain flags (repeatable)")
    parser.add_argument("--work-dir", default=None, help="where the run directories go (default: a temp dir)")
    parser.add_argument("--jsonl", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    recipes = []
    for text in args.recipe:
        if "=" not in text:
            parser.error(f"--recipe {text!r} is not NAME=FLAGS")
        name, flags = text.split("=", 1)
        recipes.append((name.strip(), shlex.split(flags)))
    work = args.work_dir or tempfile.mkdtemp(prefix="kmlm-recipes-")
    rows = []
    for name, flags in recipes:
        out = os.path.join(work, name)
        wall, progress = run_recipe(name, flags, common_flags, out)
        metrics = standard_evaluation(out)
        row = dict(recipe=name, flags=shlex.join(flags), common=shlex.join(common_flags), wall_s=round(wall, 1),
                   train_s=progress.get("train_seconds"), steps=progress.get("steps"), **metrics)
        rows.append(row)
        common.emit(common.record(BENCHMARK, "heldout_masked_accuracy", name, metrics["masked_accuracy"], "accuracy",
                                  **{k: v for k, v in row.items() if k not in ("recipe", "masked_accuracy")},
                                  machine=common.machine()), jsonl_path=args.jsonl)
    print(f"\n{'recipe':<16}{'acc':>8}{'loss':>8}{'H_uni':>8}{'steps':>7}{'train_s':>9}{'wall_s':>8}  flags",
          file=sys.stderr)
    for row in rows:
        print(f"{row['recipe']:<16}{row['masked_accuracy']:>8.4f}{row['loss']:>8.3f}{row['unigram_entropy']:>8.3f}"
              f"{row['steps'] or 0:>7}{row['train_s'] or 0:>9.1f}{row['wall_s']:>8.1f}  {row['flags']}",
              file=sys.stderr)


if __name__ == "__main__":
    main()

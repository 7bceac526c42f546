"""Distillation against training from scratch, at the same wall-clock budget.

Runs the commands a user runs, in this order:

1. the teacher, unless --teacher names a finished one: `kmlm pretrain --preset mini --steps N`
   (by steps, so its quality does not depend on the machine's load);
2. the student: `kmlm distill TEACHER --preset tiny --time-budget B`;
3. the same student architecture from scratch: `kmlm pretrain --preset tiny --time-budget B
   --vocab TEACHER/vocab.txt` (the teacher's vocabulary and, by default, its corpus);
4. `kmlm evaluate --json` on all three: the held-out split of the same corpus, token masking at
   15% with the fixed evaluation seed, so the numbers compare;
5. the downstream task: each of the three fine-tuned (`kmlm.tasks.finetune`, the settings of
   examples/finetune_tasks.py) on the keyword-topic classification of tests/task_data.py,
   trained on half of each topic's keywords and tested on the other half, so that only what
   pretraining learned about those words transfers.

Steps 2 and 3 are timed: run the script under the benchmark lock on a shared machine
(`flock /tmp/kmlm-bench.lock python benchmarks/distill_vs_scratch.py ...`). Every figure is
printed as one JSON line (benchmarks/common.py) and the table goes to stderr.

    python benchmarks/distill_vs_scratch.py --out runs/distill --budget 3
    python benchmarks/distill_vs_scratch.py --teacher runs/mini --out runs/distill --budget 3 --alpha 0.5
"""

import argparse
import contextlib
import io
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import emit, machine, record  # noqa: E402
from tests.task_data import topic_examples, write_jsonl  # noqa: E402

BENCHMARK = "distill_vs_scratch"


def kmlm(argv):
    """Runs a `kmlm` command line in-process; exits on failure."""
    from kmlm.cli.main import main

    print("$ kmlm " + " ".join(argv), file=sys.stderr, flush=True)
    code = main(argv)
    if code:
        sys.exit(f"`kmlm {' '.join(argv)}` failed with status {code}")


def evaluate(run):
    """The `kmlm evaluate RUN --json` metrics of a run."""
    from kmlm.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["evaluate", run, "--json"])
    if code:
        sys.exit(f"`kmlm evaluate {run}` failed with status {code}")
    return json.loads(out.getvalue())


def trained_steps(run):
    """The optimizer steps a run trained (its evaluation.json)."""
    with open(os.path.join(run, "evaluation.json")) as file:
        return json.load(file)["steps"]


def finished(run):
    return os.path.isfile(os.path.join(run, "model.keras"))


def train_arms(args, teacher):
    """Distils the student and trains the scratch model (each skipped when already finished)."""
    student, scratch = os.path.join(args.out, "student"), os.path.join(args.out, "scratch")
    budget = ["--preset", args.student_preset, "--time-budget", f"{args.budget:g}", "--seed", str(args.seed)]
    if not finished(student):
        kmlm(["distill", teacher, *budget, "--temperature", f"{args.temperature:g}", "--alpha", f"{args.alpha:g}",
              "--out", student, *(["--corpus", args.corpus] if args.corpus else [])])
    if not finished(scratch):
        from kmlm.run_directory import RunConfig

        corpus = args.corpus or RunConfig.read(teacher).data.corpus
        kmlm(["pretrain", *budget, "--vocab", os.path.join(teacher, "vocab.txt"), "--out", scratch,
              *(["--corpus", corpus] if corpus else [])])
    return student, scratch


def downstream(args, runs):
    """Test accuracy of each run fine-tuned on the unseen-keywords topic task."""
    from kmlm.tasks.finetune import FinetuneSettings, finetune

    files = {}
    for split, count, seed, keywords in (("train", 200, 1, "first"), ("dev", 200, 2, "last"),
                                         ("test", 400, 3, "last")):
        path = os.path.join(args.out, f"topics_{split}.jsonl")
        files[split] = write_jsonl(path, topic_examples(count, seed, keywords=keywords))
    scores = {}
    for arm, run in runs.items():
        print(f"fine-tuning {arm} ({run}) on the unseen-keywords topic task ...", file=sys.stderr, flush=True)
        result = finetune(run, os.path.join(args.out, f"finetuned-{arm}"), FinetuneSettings(
            task="classify", train=files["train"], eval=files["dev"], test=files["test"], seq_len=64,
            batch_size=16, epochs=args.finetune_epochs, learning_rate=5e-4, patience=3, seed=args.seed,
        ), overwrite=True, verbose=0)
        scores[arm] = result["test"]["accuracy"]
    return scores


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/distill-vs-scratch", help="working directory (runs are reused)")
    parser.add_argument("--teacher", default=None, help="a finished teacher run (default: pretrain one in OUT)")
    parser.add_argument("--teacher-preset", default="mini", help="preset of the teacher trained here")
    parser.add_argument("--teacher-steps", type=int, default=700, help="steps of the teacher trained here")
    parser.add_argument("--corpus", default=None, help="corpus (default: the teacher's, builtin:python-docs)")
    parser.add_argument("--student-preset", default="tiny", help="preset of the student and the scratch model")
    parser.add_argument("--budget", type=float, default=3.0, help="minutes of training of each of the two arms")
    parser.add_argument("--temperature", type=float, default=2.0, help="kmlm distill --temperature")
    parser.add_argument("--alpha", type=float, default=0.5, help="kmlm distill --alpha")
    parser.add_argument("--seed", type=int, default=0, help="seed of both arms and of fine-tuning")
    parser.add_argument("--finetune-epochs", type=int, default=8, help="fine-tuning epochs (0: skip the task)")
    parser.add_argument("--json", default=None, help="also append the JSON lines to this file")
    return parser.parse_args()


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    teacher = args.teacher or os.path.join(args.out, "teacher")
    if not finished(teacher):
        if args.teacher:
            sys.exit(f"--teacher {args.teacher!r} is not a finished run")
        kmlm(["pretrain", "--preset", args.teacher_preset, "--steps", str(args.teacher_steps), "--out", teacher,
              *(["--corpus", args.corpus] if args.corpus else [])])
    student, scratch = train_arms(args, teacher)
    runs = {"teacher": teacher, "student": student, "scratch": scratch}
    metrics = {arm: evaluate(run) for arm, run in runs.items()}
    steps = {arm: trained_steps(run) for arm, run in runs.items()}
    tasks = downstream(args, runs) if args.finetune_epochs > 0 else {}
    shape = {"teacher": args.teacher_preset if not args.teacher else teacher, "student": args.student_preset,
             "budget_minutes": args.budget, "temperature": args.temperature, "alpha": args.alpha,
             "student_steps": steps["student"], "scratch_steps": steps["scratch"]}
    for arm in runs:
        baseline = {} if arm == "scratch" else dict(baseline="scratch",
                                                    baseline_value=metrics["scratch"]["masked_accuracy"])
        emit(record(BENCHMARK, "held_out_masked_accuracy", arm, metrics[arm]["masked_accuracy"], "accuracy",
                    shape=shape, machine=machine(), masked_tokens=metrics[arm]["masked_tokens"], **baseline),
             jsonl_path=args.json)
        if arm in tasks:
            baseline = {} if arm == "scratch" else dict(baseline="scratch", baseline_value=tasks["scratch"])
            emit(record(BENCHMARK, "unseen_keywords_test_accuracy", arm, tasks[arm], "accuracy", shape=shape,
                        **baseline), jsonl_path=args.json)
    print("\n| model | steps in the budget | held-out masked accuracy | perplexity | unseen-keywords test accuracy |",
          file=sys.stderr)
    print("|---|---|---|---|---|", file=sys.stderr)
    for arm in runs:
        task = f"{tasks[arm]:.3f}" if arm in tasks else "-"
        print(f"| {arm} | {steps[arm]} | {metrics[arm]['masked_accuracy']:.4f} | {metrics[arm]['perplexity']:.1f} | "
              f"{task} |", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Distillation against training from scratch, at the same wall-clock budget and architecture.

Runs the commands a user runs, in this order:

1. the teacher, unless --teacher names a finished one: `kmlm pretrain --preset mini
   --time-budget T` (the README's teacher: 15 minutes);
2. the timed arms, one after the other, each for the same --budget minutes:
   - `student`: `kmlm distill TEACHER` with its defaults: the teacher with half its layers
     (mini: L2/H256), started from the teacher's embeddings, MLM head and blocks 0 and 2,
     trained on the soft targets (alpha 0.5, T 2);
   - `student-mlm` (with --mlm-arm): the same start, trained on the true tokens alone
     (`--alpha 0`), which shows what the teacher's soft targets add to its weights;
   - `scratch`: the same architecture from random weights, `kmlm pretrain --preset mini
     --num-layers 2 --vocab TEACHER/vocab.txt` (the teacher's vocabulary and corpus);
   (with --student-preset P, both the student and scratch use preset P instead: a narrower
   student, which starts from random weights);
3. `kmlm evaluate --json` on every run: the held-out split of the same corpus, token masking
   at 15% with the fixed evaluation seed, so the numbers compare;
4. the downstream task: each run fine-tuned (`kmlm.tasks.finetune`, the settings of
   examples/finetune_tasks.py) on the keyword-topic classification of tests/task_data.py,
   trained on half of each topic's keywords and tested on the other half, so that only what
   pretraining learned about those words transfers.

With --lock PATH every timed arm (and the teacher) holds an exclusive flock on PATH while it
trains, so that timed runs of other benchmarks on a shared machine do not overlap it; the
1-minute load average at the start and end of each arm is recorded. Every figure is printed as
one JSON line (benchmarks/common.py) and the table goes to stderr. Finished runs in --out are
reused, so a killed benchmark resumes.

    python benchmarks/distill_vs_scratch.py --out runs/distill --budget 3 --mlm-arm --lock /tmp/kmlm-bench.lock
    python benchmarks/distill_vs_scratch.py --teacher runs/mini --out runs/distill --budget 3
"""

import argparse
import contextlib
import fcntl
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


@contextlib.contextmanager
def exclusive(lock_path):
    """Holds an exclusive flock on `lock_path` (as `flock PATH command` does); no-op for None."""
    if lock_path is None:
        yield
        return
    with open(lock_path, "a") as lock:
        print(f"waiting for {lock_path} ...", file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def timed(args, argv):
    """Runs a timed arm under the lock; the 1-minute load average at its start and end."""
    with exclusive(args.lock):
        start = os.getloadavg()[0]
        kmlm(argv)
        return [round(start, 2), round(os.getloadavg()[0], 2)]


def evaluate(run):
    """The `kmlm evaluate RUN --json` metrics of a run."""
    from kmlm.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["evaluate", run, "--json"])
    if code:
        sys.exit(f"`kmlm evaluate {run}` failed with status {code}")
    return json.loads(out.getvalue())


def trained(run):
    """(optimizer steps, seconds of training) of a run (its evaluation.json)."""
    with open(os.path.join(run, "evaluation.json")) as file:
        recorded = json.load(file)
    return recorded["steps"], recorded["train_seconds"]


def finished(run):
    return os.path.isfile(os.path.join(run, "model.keras"))


def arm_commands(args, teacher):
    """{arm: the kmlm command line that trains it}, in the order they run."""
    from kmlm.pretraining.distill import student_layers
    from kmlm.run_directory import RunConfig

    config = RunConfig.read(teacher)
    corpus = args.corpus or config.data.corpus
    budget = ["--time-budget", f"{args.budget:g}", "--seed", str(args.seed)]
    if args.student_preset:  # a student of another width (random start) and the same preset from scratch
        shape = ["--preset", args.student_preset]
    else:  # the default student's shape: the teacher's, half its layers
        model = config.model
        shape = ["--preset", config.training.get("preset") or args.teacher_preset,
                 "--num-layers", str(student_layers(model.num_layers)), "--hidden-dim", str(model.hidden_dim),
                 "--num-heads", str(model.num_heads), "--intermediate-dim", str(model.intermediate_dim)]
    distill = ["distill", teacher, *budget, "--temperature", f"{args.temperature:g}",
               *(shape if args.student_preset else []), *(["--corpus", args.corpus] if args.corpus else [])]
    commands = {"student": [*distill, "--alpha", f"{args.alpha:g}", "--out", os.path.join(args.out, "student")]}
    if args.mlm_arm:
        commands["student-mlm"] = [*distill, "--alpha", "0", "--out", os.path.join(args.out, "student-mlm")]
    commands["scratch"] = ["pretrain", *shape, *budget, "--vocab", os.path.join(teacher, "vocab.txt"),
                           "--out", os.path.join(args.out, "scratch"), *(["--corpus", corpus] if corpus else [])]
    return commands


def train_arms(args, teacher):
    """Trains every arm not already finished; {arm: run directory}, {arm: load averages}."""
    commands = arm_commands(args, teacher)
    runs = {arm: argv[argv.index("--out") + 1] for arm, argv in commands.items()}
    loads = {}
    order = list(commands)[::-1] if args.reverse else list(commands)
    for arm in order:
        if not finished(runs[arm]):
            loads[arm] = timed(args, commands[arm])
    return runs, loads


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
    parser.add_argument("--teacher-budget", type=float, default=15.0, help="minutes of the teacher trained here")
    parser.add_argument("--corpus", default=None, help="corpus (default: the teacher's, builtin:python-docs)")
    parser.add_argument("--student-preset", default=None,
                        help="preset of the student and of scratch (default: the teacher's width, half its layers)")
    parser.add_argument("--mlm-arm", action="store_true",
                        help="also the student started from the teacher but trained with --alpha 0")
    parser.add_argument("--budget", type=float, default=3.0, help="minutes of training of each timed arm")
    parser.add_argument("--temperature", type=float, default=2.0, help="kmlm distill --temperature")
    parser.add_argument("--alpha", type=float, default=0.5, help="kmlm distill --alpha of the student")
    parser.add_argument("--seed", type=int, default=0, help="seed of every arm and of fine-tuning")
    parser.add_argument("--finetune-epochs", type=int, default=8, help="fine-tuning epochs (0: skip the task)")
    parser.add_argument("--reverse", action="store_true",
                        help="train the timed arms in the reverse order (scratch first), to alternate repeats")
    parser.add_argument("--lock", default=None, help="flock this file around every timed arm (shared machines)")
    parser.add_argument("--json", default=None, help="also append the JSON lines to this file")
    return parser.parse_args()


def report(args, runs, metrics, steps, seconds, tasks, loads):
    """The JSON lines and the table."""
    shape = {"teacher": runs["teacher"], "student_preset": args.student_preset, "budget_minutes": args.budget,
             "temperature": args.temperature, "alpha": args.alpha, "seed": args.seed,
             **{f"{arm}_steps": count for arm, count in steps.items()},
             **{f"{arm}_train_seconds": spent for arm, spent in seconds.items()},
             **{f"{arm}_load_average": load for arm, load in loads.items()}}
    for arm in runs:
        baseline = {} if arm == "scratch" else dict(baseline="scratch",
                                                    baseline_value=metrics["scratch"]["masked_accuracy"])
        emit(record(BENCHMARK, "held_out_masked_accuracy", arm, metrics[arm]["masked_accuracy"], "accuracy",
                    shape=shape, machine=machine(), masked_tokens=metrics[arm]["masked_tokens"],
                    perplexity=metrics[arm]["perplexity"], **baseline), jsonl_path=args.json)
        if arm in tasks:
            baseline = {} if arm == "scratch" else dict(baseline="scratch", baseline_value=tasks["scratch"])
            emit(record(BENCHMARK, "unseen_keywords_test_accuracy", arm, tasks[arm], "accuracy", shape=shape,
                        **baseline), jsonl_path=args.json)
    print("\n| model | steps (seconds) | held-out masked accuracy | perplexity | unseen-keywords test accuracy "
          "| load average (start, end) |", file=sys.stderr)
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for arm in runs:
        task = f"{tasks[arm]:.3f}" if arm in tasks else "-"
        load = ", ".join(map(str, loads[arm])) if arm in loads else "-"
        print(f"| {arm} | {steps[arm]} ({seconds[arm]:.0f} s) | {metrics[arm]['masked_accuracy']:.4f} | {metrics[arm]['perplexity']:.1f} | "
              f"{task} | {load} |", file=sys.stderr)


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    teacher = args.teacher or os.path.join(args.out, "teacher")
    loads = {}
    if not finished(teacher):
        if args.teacher:
            sys.exit(f"--teacher {args.teacher!r} is not a finished run")
        loads["teacher"] = timed(args, ["pretrain", "--preset", args.teacher_preset, "--time-budget",
                                        f"{args.teacher_budget:g}", "--out", teacher,
                                        *(["--corpus", args.corpus] if args.corpus else [])])
    arms, arm_loads = train_arms(args, teacher)
    runs = {"teacher": teacher, **arms}
    loads.update(arm_loads)
    metrics = {arm: evaluate(run) for arm, run in runs.items()}
    steps, seconds = {}, {}
    for arm, run in runs.items():
        steps[arm], seconds[arm] = trained(run)
    tasks = downstream(args, runs) if args.finetune_epochs > 0 else {}
    report(args, runs, metrics, steps, seconds, tasks, loads)


if __name__ == "__main__":
    main()

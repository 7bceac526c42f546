"""Fine-tune one pretrained encoder on four small tasks (classify, pair, tag, similarity) and
compare with the same architecture trained from random initialisation.

The tasks are the toy tasks of the test suite (tests/task_data.py): keyword topics, the same
with the test keywords never seen in fine-tuning (only pretraining text links them to the
training keywords), topic agreement of two texts, person/place names among filler words,
and topic overlap scores.
Without --run, a tiny encoder is first pretrained on unlabelled text of the same kind.

    python examples/finetune_tasks.py --out runs/tasks [--run RUN_DIR] [--train-examples 200]

Prints one JSON line per (task, initialisation) and a Markdown table of the test metrics.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.task_data import similarity_examples, tag_examples, topic_examples, write_jsonl  # noqa: E402

METRIC = {"classify": "accuracy", "unseen-keywords": "accuracy", "pair": "accuracy", "tag": "f1",
          "similarity": "spearman"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="working directory")
    parser.add_argument("--run", default=None, help="pretrained run directory (default: pretrain one)")
    parser.add_argument("--train-examples", type=int, default=200, help="labelled training examples per task")
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs")
    parser.add_argument("--pretrain-steps", type=int, default=600, help="steps of the encoder pretrained here")
    parser.add_argument("--tasks", nargs="+", default=list(METRIC), choices=list(METRIC), help="tasks to run")
    args = parser.parse_args()

    from kmlm.cli.main import main as kmlm
    from kmlm.tasks.finetune import FinetuneSettings, finetune

    os.makedirs(args.out, exist_ok=True)
    makers = {
        "classify": lambda n, seed: topic_examples(n, seed),
        # trained on half of each topic's keywords, evaluated on the other half
        "unseen-keywords": lambda n, seed: topic_examples(n, seed, keywords="first" if seed == 1 else "last"),
        "pair": lambda n, seed: topic_examples(n, seed, pair=True),
        "tag": tag_examples,
        "similarity": similarity_examples,
    }
    run = args.run
    if run is None:
        run = os.path.join(args.out, "pretrained")
        documents = [row["text"] for row in topic_examples(3000, 100)]
        documents += [" ".join(row["tokens"]) for row in tag_examples(3000, 101)]
        corpus = os.path.join(args.out, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n\n".join(documents) + "\n")
        if not os.path.isfile(os.path.join(run, "model.keras")):
            code = kmlm(["pretrain", "--corpus", corpus, "--out", run, "--preset", "tiny", "--seq-len", "64",
                         "--batch-size", "32", "--vocab-size", "1000", "--steps", str(args.pretrain_steps),
                         "--learning-rate", "1e-3", "--quiet"])
            if code:
                sys.exit(code)
    rows = []
    for task in args.tasks:
        files = {}
        for split, count, seed in (("train", args.train_examples, 1), ("dev", 200, 2), ("test", 400, 3)):
            files[split] = write_jsonl(os.path.join(args.out, f"{task}_{split}.jsonl"), makers[task](count, seed))
        for random_init in (False, True):
            name = f"{task}_{'random' if random_init else 'pretrained'}"
            result = finetune(run, os.path.join(args.out, name), FinetuneSettings(
                task="classify" if task == "unseen-keywords" else task, train=files["train"], eval=files["dev"], test=files["test"], seq_len=64, batch_size=16,
                epochs=args.epochs, learning_rate=5e-4, patience=3, random_init=random_init,
            ), overwrite=True, verbose=0)
            row = {"task": task, "init": "random" if random_init else "pretrained", "metric": METRIC[task],
                   "test": result["test"], "epochs": result["epochs"], "seconds": result["seconds"]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n| task | metric | pretrained | random init |\n|---|---|---|---|")
    for task in args.tasks:
        values = {r["init"]: r["test"][METRIC[task]] for r in rows if r["task"] == task}
        print(f"| {task} | test {METRIC[task]} | {values['pretrained']:.3f} | {values['random']:.3f} |")


if __name__ == "__main__":
    main()

"""Effect of `kmlm pretrain --init-embeddings` on early masked-LM accuracy.

Two pretraining runs share the corpus, vocabulary, seed, masks and step budget; one starts
from random token embeddings, the other from word2vec vectors trained (here, first) on the
training split of the same corpus. The held-out masked accuracy after every log point is
printed side by side.

    python benchmarks/init_embeddings.py                           # tiny preset, 300 steps
    python benchmarks/init_embeddings.py --preset mini --steps 600 --json out.json
"""

import argparse
import csv
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import kmlm  # noqa: E402,F401  (sets the Keras backend)

from kmlm.pipelines import learn_vocabulary, load_documents, save_vocabulary, split_documents  # noqa: E402
from kmlm.pretraining.job import PretrainSettings, pretrain  # noqa: E402
from kmlm.run_directory import METRICS_FILE  # noqa: E402
from kmlm.wordvec.word2vec import Word2VecSettings, save_word2vec_run, train_word2vec  # noqa: E402


def accuracy_curve(run_dir, steps_per_epoch):
    """(steps, held-out masked accuracy) after every epoch of a run, from metrics.csv."""
    with open(os.path.join(run_dir, METRICS_FILE)) as f:
        rows = list(csv.DictReader(f))
    return [(int(r["epoch"]) + 1) * steps_per_epoch for r in rows], [float(r["val_masked_accuracy"]) for r in rows]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="builtin:python-docs")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--log-points", type=int, default=6)
    parser.add_argument("--w2v-dim", type=int, default=100, help="word2vec size (a linear map fits it to the model)")
    parser.add_argument("--w2v-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    work = args.out or tempfile.mkdtemp(prefix="kmlm-init-embeddings-")
    os.makedirs(work, exist_ok=True)
    train = split_documents(load_documents(args.corpus), "train")
    vocab_path = os.path.join(work, "vocab.txt")
    save_vocabulary(learn_vocabulary(train, args.vocab_size), vocab_path)
    w2v_settings = Word2VecSettings(dim=args.w2v_dim, epochs=args.w2v_epochs, seed=args.seed)
    w2v = train_word2vec(train, w2v_settings)
    save_word2vec_run(os.path.join(work, "w2v"), w2v, w2v_settings, corpus=args.corpus)
    print(f"word2vec: {len(w2v.vectors)} words, dim {args.w2v_dim}", flush=True)

    curves = {}
    for arm, vectors in (("random", None), ("word2vec", os.path.join(work, "w2v", "vectors.txt"))):
        settings = PretrainSettings(
            corpus=args.corpus, preset=args.preset, steps=args.steps, seq_len=args.seq_len,
            batch_size=args.batch_size, vocab=vocab_path, seed=args.seed, log_points=args.log_points,
            init_embeddings=vectors,
        )
        run_dir = os.path.join(work, arm)
        final = pretrain(run_dir, settings, verbose=0)
        steps_per_epoch, _ = settings.schedule()
        steps, accuracy = accuracy_curve(run_dir, steps_per_epoch)
        curves[arm] = {"steps": steps, "val_masked_accuracy": accuracy, "final": final}
        print(f"{arm}: held-out masked accuracy {final['masked_accuracy']:.4f}", flush=True)

    print(f"\n{'step':>6} {'random':>8} {'word2vec':>9}")
    for step, a, b in zip(curves["random"]["steps"], curves["random"]["val_masked_accuracy"],
                          curves["word2vec"]["val_masked_accuracy"]):
        print(f"{step:>6} {a:>8.4f} {b:>9.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "curves": curves}, f, indent=2)


if __name__ == "__main__":
    main()

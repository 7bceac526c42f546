"""GloVe's co-occurrence counting and training time, and the quality of its vectors, on the
corpus and with the scoring of `word2vec_throughput.py`, so the figures sit next to
word2vec's.

The corpus is read and split exactly as `word2vec_throughput.py` reads it (its
`corpus_words`), and the vectors are scored by its `quality` (kmlm's evaluator:
WordSim-353 and SimLex-999 Spearman, Google analogy accuracy over the questions whose four
words are in the vocabulary, mean cosine among the 200 most frequent words). Each round
trains `train_glove` once with kmlm's GloVe defaults (`GloveSettings`: window 10, 25
epochs, `glove.c`'s AdaGrad at 0.05, `--workers` threads) on one seed (round r: seed r - 1)
and splits its seconds into three stages, timed around the functions `train_glove` calls:

- vocabulary: `count_words` and `build_vocabulary` (one pass over the corpus);
- counting: `cooccurrence_counts` (a second pass, windows and the sum over pairs); its
  words/s is the corpus words over its seconds;
- training: the rest (the compiled kernel's `epochs` passes over the shuffled non-zero
  co-occurrences, and loading the kernel from Numba's cache), also given per epoch and as
  co-occurrences/s (median epoch, from `GloveResult.entries_per_second`).

The report gives the median and min..max over the seeds.

    flock /tmp/kmlm-bench.lock python benchmarks/glove_timing.py \\
        --corpus /usr/share/doc/python3.11/html/_sources --rounds 3 --workers 2 --json glove.json

gensim is needed only for its copies of the evaluation files: `pip install gensim`.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from word2vec_throughput import SCORES, corpus_words, quality  # noqa: E402  (sets the Keras backend first)

import tensorflow as tf  # noqa: E402

from kmlm.wordvec import glove  # noqa: E402

STAGES = {"vocabulary": ("count_words", "build_vocabulary"), "counting": ("cooccurrence_counts",)}


@contextlib.contextmanager
def timed_stages(module, stages):
    """Replaces the functions named in `stages` ({stage: names}) in `module` by wrappers that
    add their seconds to the stage; yields the {stage: seconds} dict and restores them."""
    seconds = dict.fromkeys(stages, 0.0)
    originals = {}

    def timed(stage, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[stage] += time.perf_counter() - start
        return wrapper

    for stage, names in stages.items():
        for name in names:
            originals[name] = getattr(module, name)
            setattr(module, name, timed(stage, originals[name]))
    try:
        yield seconds
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


def run_glove(texts, settings):
    """Trains GloVe on `texts`; returns the result and the seconds of each stage."""
    documents = tf.data.Dataset.from_tensor_slices(texts)
    with timed_stages(glove, STAGES) as seconds:
        start = time.perf_counter()
        result = glove.train_glove(documents, settings)
        total = time.perf_counter() - start
    return result, {**seconds, "training": total - sum(seconds.values()), "total": total}


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def add_corpus_and_settings_arguments(parser):
    """The corpus and GloVe settings flags of the GloVe benchmarks, defaulting to `GloveSettings`."""
    defaults = glove.GloveSettings()
    parser.add_argument("--corpus", default="builtin:python-docs")
    parser.add_argument("--max-documents", type=int, default=0, help="use only the first N documents (0: all)")
    parser.add_argument("--dim", type=int, default=defaults.dim)
    parser.add_argument("--window", type=int, default=defaults.window)
    parser.add_argument("--min-count", type=int, default=defaults.min_count)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--x-max", type=float, default=defaults.x_max, help="cut-off of the weighting function")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="training threads (0: one per core)")


def main(argv=None):
    defaults = glove.GloveSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_and_settings_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3, help="seeds")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    texts, words = corpus_words(args.corpus, args.max_documents)
    corpus_size = sum(map(len, words))
    print(f"corpus {args.corpus}: {len(texts):,} documents, {corpus_size:,} words; GloVe dim {args.dim}, window "
          f"{args.window}, min-count {args.min_count}, {args.epochs} epochs, {args.workers or os.cpu_count()} "
          f"workers, AdaGrad {defaults.learning_rate}, x_max {args.x_max}, alpha {defaults.alpha}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    runs = []
    for round_number in range(args.rounds):
        settings = glove.GloveSettings(dim=args.dim, window=args.window, min_count=args.min_count,
                                       epochs=args.epochs, seed=round_number, workers=args.workers,
                                       x_max=args.x_max)
        load_before = os.getloadavg()[0]
        result, seconds = run_glove(texts, settings)
        record = {"seed": round_number, "seconds": seconds, "counting_words_per_second": corpus_size / seconds["counting"],
                  "training_seconds_per_epoch": seconds["training"] / args.epochs, "cooccurrences": result.pairs,
                  "cooccurrences_per_second": statistics.median(result.entries_per_second),
                  "vocabulary": len(result.vectors), "final_loss": result.history["loss"][-1],
                  "load_average": [load_before, os.getloadavg()[0]], **quality(result.vectors)}
        runs.append(record)
        print(f"round {round_number + 1}: {len(result.vectors):,} words, {result.pairs:,} co-occurrences; vocabulary "
              f"{seconds['vocabulary']:.1f}s, counting {seconds['counting']:.1f}s "
              f"({record['counting_words_per_second']:,.0f} words/s), training {seconds['training']:.1f}s "
              f"({record['training_seconds_per_epoch']:.2f}s/epoch, {record['cooccurrences_per_second']:,.0f} "
              f"co-occurrences/s), total {seconds['total']:.1f}s; loss "
              f"{record['final_loss']:.4f}; wordsim353 {record['wordsim353']:.3f}, simlex999 {record['simlex999']:.3f}, "
              f"analogy {record['analogy']:.3f}, mean cosine top-200 {record['mean_cosine_top200']:.3f}; load "
              f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)
        if args.json:  # after every round: a long run stopped early keeps the rounds it finished
            with open(args.json, "w") as f:
                json.dump({"settings": vars(args), "report": report(runs), "runs": runs}, f, indent=2)
    print("\nmedian (min..max) over the seeds:")
    for name, s in report(runs).items():
        print(f"  {name:28s} {s['median']:>12,.3f}  ({s['min']:,.3f}..{s['max']:,.3f})")
    print(f"scored on: {runs[0]['scored']}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def report(runs):
    """Median and min..max over the rounds of the throughput, stage seconds and scores."""
    return {"counting_words_per_second": spread([r["counting_words_per_second"] for r in runs]),
            "training_seconds_per_epoch": spread([r["training_seconds_per_epoch"] for r in runs]),
            "cooccurrences_per_second": spread([r["cooccurrences_per_second"] for r in runs]),
            **{f"{stage}_seconds": spread([r["seconds"][stage] for r in runs])
                 for stage in ("vocabulary", "counting", "training", "total")},
            **{name: spread([r[name] for r in runs]) for name in SCORES}}


if __name__ == "__main__":
    main()

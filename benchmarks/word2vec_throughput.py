"""Word2vec training throughput and quality of kmlm next to gensim: same corpus, same words,
same settings, same number of threads.

Both arms see the same words: the corpus is split by kmlm's in-graph word splitter once, and
gensim gets those word lists. Each round trains skip-gram and CBOW with both libraries on one
seed (round r: seed r - 1), the arms' order alternating from round to round, so load on a
shared machine hits both alike. Per run it records the training words/s (in-vocabulary
corpus words times epochs over the seconds of training; kmlm's one-time id encoding and
gensim's vocabulary scan are outside it, their end-to-end seconds are reported too), the
load average, and the quality of the vectors, scored by kmlm's evaluator for both:
WordSim-353 and SimLex-999 Spearman, Google analogy accuracy (3CosAdd, questions whose four
words are in the vocabulary) and the mean cosine among the 200 most frequent words. The
report gives medians, the ratio of the median words/s, and the min..max of the quality
scores over the seeds (the noise).

    flock /tmp/kmlm-bench.lock python benchmarks/word2vec_throughput.py \\
        --corpus /usr/share/doc/python3.11/html/_sources --rounds 3 --workers 2 --json w2v.json

gensim is a benchmark/test dependency: `pip install gensim`.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import kmlm  # noqa: E402,F401  (sets the Keras backend)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kmlm.pipelines import load_documents  # noqa: E402
from kmlm.wordvec.vectors import WordVectors  # noqa: E402
from kmlm.wordvec.word2vec import Word2VecSettings, train_word2vec  # noqa: E402
from kmlm.wordvec.words import split_words  # noqa: E402

MODELS = ("skipgram", "cbow")
SCORES = ("wordsim353", "simlex999", "analogy", "mean_cosine_top200")


def corpus_words(source, max_documents):
    documents = load_documents(source)
    if max_documents:
        documents = documents.take(max_documents)
    texts, words = [], []
    for batch in documents.batch(1024).as_numpy_iterator():
        texts.extend(t.decode("utf-8") for t in batch)
        words.extend([w.decode("utf-8") for w in row] for row in split_words(tf.constant(batch)).to_list())
    return texts, words


def run_kmlm(texts, settings):
    start = time.perf_counter()
    result = train_word2vec(tf.data.Dataset.from_tensor_slices(texts), settings)
    seconds = time.perf_counter() - start
    # words/s over all epochs: epochs over the summed seconds per word of each epoch
    rate = len(result.words_per_second) / sum(1.0 / r for r in result.words_per_second)
    return rate, seconds, result.vectors


def run_gensim(words, settings):
    from gensim.models import Word2Vec

    start = time.perf_counter()
    model = Word2Vec(
        vector_size=settings.dim, window=settings.window, min_count=settings.min_count,
        sg=int(settings.model == "skipgram"), negative=settings.negatives, hs=0, sample=settings.subsample,
        alpha=settings.learning_rate, workers=settings.workers, seed=settings.seed,
    )
    model.build_vocab(words)
    in_vocabulary = sum(model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key)
    train_start = time.perf_counter()
    model.train(words, total_examples=len(words), epochs=settings.epochs)
    end = time.perf_counter()
    counts = [model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key]
    vectors = WordVectors(list(model.wv.index_to_key), np.asarray(model.wv.vectors), counts=counts)
    return in_vocabulary * settings.epochs / (end - train_start), end - start, vectors


def quality(vectors):
    from gensim.test.utils import datapath

    unit = vectors.vectors[:200] / np.linalg.norm(vectors.vectors[:200], axis=1, keepdims=True)
    cosines = unit @ unit.T
    wordsim = vectors.evaluate_word_pairs(datapath("wordsim353.tsv"))
    simlex = vectors.evaluate_word_pairs(datapath("simlex999.txt"))
    analogy = vectors.evaluate_analogies(datapath("questions-words.txt"))
    return {
        "wordsim353": wordsim["spearman"], "simlex999": simlex["spearman"], "analogy": analogy["accuracy"],
        "mean_cosine_top200": float(cosines[np.triu_indices(len(unit), 1)].mean()),
        "scored": {"wordsim353_pairs": wordsim["pairs"], "simlex999_pairs": simlex["pairs"],
                   "analogy_questions": analogy["questions"]},
    }


def summary(runs):
    """Medians of words/s and seconds, median and min..max of each quality score."""
    out = {"median_words_per_second": statistics.median(r["words_per_second"] for r in runs),
           "median_seconds_end_to_end": statistics.median(r["seconds"] for r in runs)}
    for name in SCORES:
        values = [r[name] for r in runs]
        out[name] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="builtin:python-docs")
    parser.add_argument("--max-documents", type=int, default=0, help="use only the first N documents (0: all)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--subsample", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="seeds, each training every model with both")
    parser.add_argument("--workers", type=int, default=2, help="threads of each library")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    texts, words = corpus_words(args.corpus, args.max_documents)
    print(f"corpus {args.corpus}: {len(texts):,} documents, {sum(map(len, words)):,} words; dim {args.dim}, "
          f"window {args.window}, {args.negatives} negatives, min-count {args.min_count}, subsample "
          f"{args.subsample}, {args.epochs} epochs; {args.workers} threads each; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    runs = {(model, name): [] for model in args.models for name in ("kmlm", "gensim")}
    for round_number in range(args.rounds):
        for model in args.models:
            settings = Word2VecSettings(model=model, dim=args.dim, window=args.window, negatives=args.negatives,
                                        min_count=args.min_count, subsample=args.subsample, epochs=args.epochs,
                                        seed=round_number, workers=args.workers)
            arms = [("kmlm", lambda: run_kmlm(texts, settings)), ("gensim", lambda: run_gensim(words, settings))]
            for name, run in arms if round_number % 2 == 0 else arms[::-1]:
                load_before = os.getloadavg()[0]
                rate, seconds, vectors = run()
                record = {"seed": round_number, "words_per_second": rate, "seconds": seconds,
                          "vocabulary": len(vectors), "load_average": [load_before, os.getloadavg()[0]],
                          **quality(vectors)}
                runs[model, name].append(record)
                print(f"round {round_number + 1} {model} {name}: {rate:,.0f} words/s, {seconds:.1f}s end to end, "
                      f"{len(vectors):,} words; wordsim353 {record['wordsim353']:.3f}, simlex999 "
                      f"{record['simlex999']:.3f}, analogy {record['analogy']:.3f}, mean cosine top-200 "
                      f"{record['mean_cosine_top200']:.3f}; load {load_before:.2f} -> {os.getloadavg()[0]:.2f}",
                      flush=True)
    report = {}
    print("\nmodel    library  words/s (median)  ratio  WordSim-353 (min..max)  SimLex-999 (min..max)  "
          "analogy (min..max)   mean cos top-200")
    for model in args.models:
        both = {name: summary(runs[model, name]) for name in ("kmlm", "gensim")}
        ratio = both["kmlm"]["median_words_per_second"] / both["gensim"]["median_words_per_second"]
        report[model] = {**both, "ratio": ratio}
        for name, s in both.items():
            cells = [f"{s[k]['median']:.3f} ({s[k]['min']:.3f}..{s[k]['max']:.3f})" for k in SCORES[:3]]
            print(f"{model:8s} {name:7s}  {s['median_words_per_second']:>16,.0f}  "
                  f"{ratio if name == 'kmlm' else 1.0:5.2f}  {cells[0]:22s}  {cells[1]:21s}  {cells[2]:19s}  "
                  f"{s['mean_cosine_top200']['median']:.3f}")
    for (model, name), records in runs.items():
        print(f"{model} {name} scored on: {records[0]['scored']}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "report": report,
                       "runs": {f"{m} {n}": r for (m, n), r in runs.items()}}, f, indent=2)


if __name__ == "__main__":
    main()

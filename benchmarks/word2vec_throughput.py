"""Word2vec training throughput of kmlm next to gensim, same corpus, words and settings.

Both arms see the same words: the corpus is split by kmlm's in-graph word splitter once, and
gensim gets those word lists. Arms alternate (kmlm, gensim, kmlm, gensim, ...) so that load
on a shared machine hits both alike; the report gives medians and the ratio of medians.

    python benchmarks/word2vec_throughput.py                       # builtin:python-docs
    python benchmarks/word2vec_throughput.py --corpus text/ --rounds 5 --json out.json

gensim is a benchmark-only dependency: `pip install gensim`.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import kmlm  # noqa: E402,F401  (sets the Keras backend)
import tensorflow as tf  # noqa: E402

from kmlm.pipelines import load_documents  # noqa: E402
from kmlm.wordvec.word2vec import Word2VecSettings, train_word2vec  # noqa: E402
from kmlm.wordvec.words import split_words  # noqa: E402


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
    """Median words/s over the epochs after the first (which also traces the graph)."""
    result = train_word2vec(tf.data.Dataset.from_tensor_slices(texts), settings)
    rates = result.words_per_second[1:] or result.words_per_second
    return statistics.median(rates), result.vectors


def run_gensim(words, settings, workers):
    from gensim.models import Word2Vec

    model = Word2Vec(
        vector_size=settings.dim, window=settings.window, min_count=settings.min_count, sg=int(settings.model == "skipgram"),
        negative=settings.negatives, hs=int(settings.hierarchical_softmax), sample=settings.subsample,
        alpha=settings.learning_rate, workers=workers, seed=settings.seed,
    )
    model.build_vocab(words)
    in_vocabulary = sum(model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key)
    start = time.perf_counter()
    model.train(words, total_examples=len(words), epochs=settings.epochs)
    return in_vocabulary * settings.epochs / (time.perf_counter() - start), model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="builtin:python-docs")
    parser.add_argument("--max-documents", type=int, default=0, help="use only the first N documents (0: all)")
    parser.add_argument("--model", choices=("skipgram", "cbow"), default="skipgram")
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--subsample", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement (kmlm skips the first)")
    parser.add_argument("--batch-size", type=int, default=1024, help="kmlm examples per step")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="gensim worker threads")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    settings = Word2VecSettings(
        model=args.model, dim=args.dim, window=args.window, negatives=args.negatives, min_count=args.min_count,
        subsample=args.subsample, epochs=args.epochs, batch_size=args.batch_size,
    )
    texts, words = corpus_words(args.corpus, args.max_documents)
    print(f"corpus {args.corpus}: {len(texts):,} documents, {sum(map(len, words)):,} words; {args.model}, dim "
          f"{args.dim}, window {args.window}, {args.negatives} negatives, min-count {args.min_count}, subsample "
          f"{args.subsample}; gensim workers {args.workers}; {os.cpu_count()} CPUs", flush=True)
    rates = {"kmlm": [], "gensim": []}
    for round_number in range(1, args.rounds + 1):
        kmlm_rate, vectors = run_kmlm(texts, settings)
        gensim_rate, gensim_model = run_gensim(words, settings, args.workers)
        rates["kmlm"].append(kmlm_rate)
        rates["gensim"].append(gensim_rate)
        print(f"round {round_number}: kmlm {kmlm_rate:,.0f} words/s, gensim {gensim_rate:,.0f} words/s", flush=True)
    report = {name: {"median_words_per_second": statistics.median(r), "min": min(r), "max": max(r)}
              for name, r in rates.items()}
    ratio = report["kmlm"]["median_words_per_second"] / report["gensim"]["median_words_per_second"]
    print(f"median words/s: kmlm {report['kmlm']['median_words_per_second']:,.0f}, gensim "
          f"{report['gensim']['median_words_per_second']:,.0f}; kmlm / gensim = {ratio:.2f}")
    probe = next((w for w in ("file", "list", "string", "return") if w in vectors and w in gensim_model.wv), None)
    if probe:
        print(f"neighbours of {probe!r}: kmlm {[w for w, _ in vectors.most_similar(probe, top_n=5)]}; gensim "
              f"{[w for w, _ in gensim_model.wv.most_similar(probe, topn=5)]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "report": report, "ratio": ratio, "rounds": rates}, f, indent=2)


if __name__ == "__main__":
    main()

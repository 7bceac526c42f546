"""fastText training throughput and quality of kmlm next to gensim `FastText`, same corpus,
words and settings, plus the unseen-word check.

Both arms see the same words: the corpus is split by kmlm's in-graph word splitter once, and
gensim gets those word lists. A held-out set of inflected forms (words ending in -ing, -ed or
-s whose base form is also in the vocabulary) is removed from the corpus for both arms; after
training, each held-out form's vector comes from its n-grams alone, and the report gives the
median rank of its base form among its nearest vocabulary neighbours. Arms alternate (kmlm,
gensim, kmlm, gensim, ...) so that load on a shared machine hits both alike; the report gives
medians, the ratio of medians and of each round, and the quality of every round (each round
trains both with the next seed) on gensim's WordSim-353, SimLex-999 and Google analogy files
(restricted to the 30,000 most frequent words), with the median and min..max over rounds.

    python benchmarks/fasttext_throughput.py                       # builtin:python-docs
    python benchmarks/fasttext_throughput.py --corpus text/ --rounds 5 --json out.json
    python benchmarks/fasttext_throughput.py --max-documents 300 --rounds 1 --epochs 1   # smoke run

gensim is a benchmark-only dependency: `pip install gensim`.
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import kmlm  # noqa: E402,F401  (sets the Keras backend)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kmlm.wordvec.fasttext import FastTextSettings, train_fasttext  # noqa: E402
from kmlm.wordvec.vectors import WordVectors  # noqa: E402
from kmlm.wordvec.words import split_words  # noqa: E402
from kmlm.pipelines import load_documents  # noqa: E402

SUFFIXES = ("ing", "ed", "s")


def corpus_words(source, max_documents):
    documents = load_documents(source)
    if max_documents:
        documents = documents.take(max_documents)
    words = []
    for batch in documents.batch(1024).as_numpy_iterator():
        words.extend([w.decode("utf-8") for w in row] for row in split_words(tf.constant(batch)).to_list())
    return words


def held_out_forms(words, min_count, count):
    """Up to `count` inflected forms (form -> base) whose base is frequent enough to stay."""
    counts = {}
    for row in words:
        for word in row:
            counts[word] = counts.get(word, 0) + 1
    forms = {}
    for word, n in sorted(counts.items(), key=lambda item: -item[1]):
        for suffix in SUFFIXES:
            base = word[: -len(suffix)]
            if word.endswith(suffix) and len(base) >= 3 and counts.get(base, 0) >= 2 * min_count and n >= min_count:
                forms[word] = base
                break
        if len(forms) == count:
            break
    return forms


def base_form_ranks(vector_of, neighbours_of, forms):
    """Rank of each held-out form's base among the form's nearest vocabulary words."""
    ranks = []
    for form, base in forms.items():
        vector_of(form)  # from n-grams alone: the form was removed from the corpus
        ranked = neighbours_of(form)
        ranks.append(ranked.index(base) + 1 if base in ranked else len(ranked) + 1)
    return ranks


def run_kmlm(words, settings):
    """Words/s over all the epochs (words of every epoch / their summed time), as gensim's is measured."""
    texts = [" ".join(row) for row in words]
    result = train_fasttext(tf.data.Dataset.from_tensor_slices(texts), settings)
    return len(result.words_per_second) / sum(1 / r for r in result.words_per_second), result.vectors


def run_gensim(words, settings, workers):
    from gensim.models import FastText

    model = FastText(
        vector_size=settings.dim, window=settings.window, min_count=settings.min_count,
        sg=int(settings.model == "skipgram"), negative=settings.negatives, hs=0, sample=settings.subsample,
        alpha=settings.learning_rate, workers=workers, seed=settings.seed, min_n=settings.min_n,
        max_n=settings.max_n, bucket=settings.buckets,
    )
    model.build_vocab(words)
    in_vocabulary = sum(model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key)
    start = time.perf_counter()
    model.train(words, total_examples=len(words), epochs=settings.epochs)
    return in_vocabulary * settings.epochs / (time.perf_counter() - start), model


def quality(vectors):
    """WordSim-353 and SimLex-999 Spearman and analogy accuracy of `WordVectors`."""
    from gensim.test.utils import datapath

    pairs = {name: vectors.evaluate_word_pairs(datapath(file))["spearman"]
             for name, file in (("wordsim353", "wordsim353.tsv"), ("simlex999", "simlex999.txt"))}
    analogies = vectors.evaluate_analogies(datapath("questions-words.txt"), restrict=30_000)
    return {**pairs, "analogies": analogies["accuracy"]}


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
    parser.add_argument("--min-n", type=int, default=3)
    parser.add_argument("--max-n", type=int, default=6)
    parser.add_argument("--buckets", type=int, default=200_000)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--held-out", type=int, default=100, help="inflected forms removed to test unseen words")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="training threads of both libraries")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    settings = FastTextSettings(
        model=args.model, dim=args.dim, window=args.window, negatives=args.negatives, min_count=args.min_count,
        subsample=args.subsample, epochs=args.epochs, min_n=args.min_n, max_n=args.max_n, buckets=args.buckets,
        learning_rate=args.learning_rate, workers=args.workers,
    )
    words = corpus_words(args.corpus, args.max_documents)
    forms = held_out_forms(words, args.min_count, args.held_out)
    words = [[w for w in row if w not in forms] for row in words]
    words = [row for row in words if row]
    print(f"corpus {args.corpus}: {len(words):,} documents, {sum(map(len, words)):,} words after holding out "
          f"{len(forms)} inflected forms; {args.model}, dim {args.dim}, window {args.window}, {args.negatives} "
          f"negatives, min-count {args.min_count}, subsample {args.subsample}, n-grams {args.min_n}..{args.max_n} "
          f"in {args.buckets:,} buckets; {args.workers} workers each; {os.cpu_count()} CPUs", flush=True)
    rates = {"kmlm": [], "gensim": []}
    scores = {"kmlm": [], "gensim": []}
    for round_number in range(1, args.rounds + 1):
        seeded = dataclasses.replace(settings, seed=settings.seed + round_number - 1)
        kmlm_rate, vectors = run_kmlm(words, seeded)
        gensim_rate, gensim_model = run_gensim(words, seeded, args.workers)
        rates["kmlm"].append(kmlm_rate)
        rates["gensim"].append(gensim_rate)
        print(f"round {round_number} (seed {seeded.seed}): kmlm {kmlm_rate:,.0f} words/s, gensim {gensim_rate:,.0f} "
              f"words/s, ratio {kmlm_rate / gensim_rate:.2f}", flush=True)
        gensim_vectors = WordVectors(gensim_model.wv.index_to_key, gensim_model.wv.vectors)
        for name, score in (("kmlm", round_scores(vectors, vectors.vector, forms)),
                            ("gensim", round_scores(gensim_vectors, gensim_model.wv.__getitem__, forms))):
            scores[name].append(score)
            print(f"  {name}: " + ", ".join(f"{key} {value:.3f}" for key, value in score.items()), flush=True)
    report = {name: {"median_words_per_second": statistics.median(r), "min": min(r), "max": max(r)}
              for name, r in rates.items()}
    ratio = report["kmlm"]["median_words_per_second"] / report["gensim"]["median_words_per_second"]
    round_ratios = [a / b for a, b in zip(rates["kmlm"], rates["gensim"])]
    print(f"median words/s: kmlm {report['kmlm']['median_words_per_second']:,.0f}, gensim "
          f"{report['gensim']['median_words_per_second']:,.0f}; kmlm / gensim = {ratio:.2f} (rounds: "
          f"{', '.join(f'{r:.2f}' for r in round_ratios)}; median {statistics.median(round_ratios):.2f})")
    quality_report = {name: {key: {"median": statistics.median(s[key] for s in rounds),
                                   "min": min(s[key] for s in rounds), "max": max(s[key] for s in rounds)}
                             for key in rounds[0]}
                      for name, rounds in scores.items()}
    for name, summary in quality_report.items():
        print(f"{name}, median (min..max) over rounds: " + ", ".join(
            f"{key} {v['median']:.3f} ({v['min']:.3f}..{v['max']:.3f})" for key, v in summary.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "report": report, "ratio": ratio, "round_ratios": round_ratios,
                       "rounds": rates, "quality": quality_report, "quality_rounds": scores, "held_out": forms},
                      f, indent=2)


def round_scores(vectors, vector_of, forms):
    """WordSim-353, SimLex-999 and analogies of `vectors` (`WordVectors` of the vocabulary), and
    where the held-out forms' base forms rank (`vector_of`: a word's vector, seen or not)."""
    score = quality(vectors)
    unit = vectors.vectors / np.maximum(np.linalg.norm(vectors.vectors, axis=1, keepdims=True), 1e-12)

    def neighbours_of(form):
        query = vector_of(form)
        return [vectors.words[i] for i in np.argsort(-(unit @ (query / max(np.linalg.norm(query), 1e-12))))[:100]]

    ranks = base_form_ranks(vector_of, neighbours_of, forms)
    score["median_base_form_rank"] = float(np.median(ranks)) if ranks else float("nan")
    score["base_form_in_top_10"] = float(np.mean([r <= 10 for r in ranks])) if ranks else float("nan")
    return score

if __name__ == "__main__":
    main()

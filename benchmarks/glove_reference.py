"""kmlm's GloVe next to independent GloVe trainers on the same co-occurrences, each scored
the same way, and kmlm's GloVe under other settings.

The corpus is read and split as `word2vec_throughput.py` reads it (`corpus_words`) and counted
once by kmlm (`build_vocabulary`, `cooccurrence_counts`). Arms (`--arms`):

- kmlm: `fit_glove`, kmlm's compiled AdaGrad (`kmlm.wordvec.glove_kernel`).
- numpy: `reference_glove` below, written from the GloVe paper (Pennington et al. 2014), not
  from kmlm's kernel: minibatch AdaGrad, each batch's gradient summed per row before the step
  (slow: about 11 minutes for 25 epochs on the full Python docs on the shared 2-core machine;
  `--max-documents` or `--epochs` shorten it).
- glove.c: with `--glove-c DIR`, the vectors of Stanford's reference tools run on the same
  words (`--export FILE` writes them, one document a line), read from DIR's `vocab.txt`,
  `cooccurrence.bin` (first checked entry by entry against kmlm's counts) and `vectors.bin`.

Every arm's vectors are scored three ways by `word2vec_throughput.quality` (WordSim-353,
SimLex-999, Google analogies, mean cosine among the 200 most frequent words): W + W~ (what
`kmlm glove` and `glove.c` save), W alone, and W + W~ less its mean vector. `--variant` adds a
kmlm run per `name=value,...` of `GloveSettings` fields.

    flock /tmp/kmlm-bench.lock python benchmarks/glove_reference.py \\
        --corpus /usr/share/doc/python3.11/html/_sources --arms kmlm numpy --workers 2
    flock /tmp/kmlm-bench.lock python benchmarks/glove_reference.py \\
        --corpus /usr/share/doc/python3.11/html/_sources --arms --variant window=5 --variant x_max=10

glove.c (github.com/stanfordnlp/GloVe, `make`), with kmlm's settings:

    python benchmarks/glove_reference.py --corpus ... --arms --export corpus.txt
    vocab_count -min-count 5 < corpus.txt > vocab.txt
    cooccur -window-size 10 -symmetric 1 -vocab-file vocab.txt < corpus.txt > cooccurrence.bin
    shuffle < cooccurrence.bin > shuffled.bin
    glove -input-file shuffled.bin -vocab-file vocab.txt -save-file vectors -vector-size 100 \\
        -iter 25 -x-max 100 -alpha 0.75 -eta 0.05 -binary 2 -model 2 -threads 2
    python benchmarks/glove_reference.py --corpus ... --arms --glove-c .

gensim is needed only for its copies of the evaluation files: `pip install gensim`.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from word2vec_throughput import corpus_words, quality  # noqa: E402  (sets the Keras backend first)
from glove_timing import add_corpus_and_settings_arguments  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kmlm.wordvec.glove import GloveSettings, cooccurrence_counts, fit_glove  # noqa: E402
from kmlm.wordvec.vectors import WordVectors  # noqa: E402
from kmlm.wordvec.words import build_vocabulary, count_words  # noqa: E402

ARMS = ("kmlm", "numpy")
GLOVE_C_RECORD = np.dtype([("word", "<i4"), ("context", "<i4"), ("count", "<f8")])  # glove.c's CREC


def reference_glove(vocabulary_size, rows, cols, values, settings: GloveSettings, batch=1024):
    """Minimises J = sum_ij f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 / 2 over the given
    entries, f(x) = min(1, (x / x_max)^alpha), with minibatch AdaGrad: per shuffled batch, each
    parameter's gradient is summed over the batch's entries, added squared to its accumulator G
    (starting at 1), and the parameter steps by -lr g / sqrt(G).

    Returns (word, context, mean loss per epoch), the loss of each batch taken before its step.
    """
    rng = np.random.default_rng(settings.seed)
    dim, lr = settings.dim, settings.learning_rate
    params = [rng.uniform(-0.5 / dim, 0.5 / dim, shape)
              for shape in [(vocabulary_size, dim)] * 2 + [(vocabulary_size,)] * 2]
    squares = [np.ones_like(p) for p in params]
    targets = np.log(values)
    weights = np.minimum(1.0, (values / settings.x_max) ** settings.alpha)
    losses = []
    for _ in range(settings.epochs):
        total = 0.0
        order = rng.permutation(len(values))
        for start in range(0, len(order), batch):
            entry = order[start:start + batch]
            i, j = rows[entry], cols[entry]
            error = np.einsum("nd,nd->n", params[0][i], params[1][j]) + params[2][i] + params[3][j] - targets[entry]
            weighted = weights[entry] * error
            total += 0.5 * float(weighted @ error)
            gradients = [weighted[:, None] * params[1][j], weighted[:, None] * params[0][i], weighted, weighted]
            for param, square, ids, gradient in zip(params, squares, [i, j, i, j], gradients):
                _adagrad_step(param, square, ids, gradient, lr)
        losses.append(total / len(values))
    return params[0], params[1], losses


def _adagrad_step(param, square, ids, gradient, lr):
    """Sums `gradient`'s rows per id, then one AdaGrad step of those rows of `param`."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    touched, summed = sorted_ids[starts], np.add.reduceat(gradient[order], starts, axis=0)
    square[touched] += summed**2
    param[touched] -= lr * summed / np.sqrt(square[touched])


def scored(vocabulary, counts, word, context):
    """`quality` of W + W~, W alone and W + W~ centred."""
    both = word + context
    forms = {"W+W~": both, "W": word, "W+W~ centred": both - both.mean(axis=0)}
    return {name: quality(WordVectors(vocabulary, matrix, counts=counts)) for name, matrix in forms.items()}


def read_glove_c(directory, vocabulary, rows, cols, values, dim):
    """Reads glove.c's outputs in `directory`, checks its co-occurrences equal kmlm's, and
    returns (its vocabulary, counts, W, W~, the comparison)."""
    with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as f:
        lines = [line.split() for line in f]
    words, counts = [w for w, _ in lines], [int(n) for _, n in lines]
    if set(words) != set(vocabulary):
        raise ValueError(f"glove.c's vocabulary ({len(words)} words) is not kmlm's ({len(vocabulary)}); "
                         "run vocab_count with the same --min-count on --export's file")
    records = np.fromfile(os.path.join(directory, "cooccurrence.bin"), dtype=GLOVE_C_RECORD)
    index = {w: n for n, w in enumerate(vocabulary)}
    to_kmlm = np.array([index[w] for w in words])
    size = len(vocabulary)
    keys = to_kmlm[records["word"] - 1].astype(np.int64) * size + to_kmlm[records["context"] - 1]
    order = np.argsort(keys)
    kmlm_keys = rows.astype(np.int64) * size + cols
    same_keys = bool(np.array_equal(keys[order], kmlm_keys))
    comparison = {"entries": [len(records), len(values)], "same_entries": same_keys,
                  "max_relative_difference": float(np.max(np.abs(records["count"][order] - values) / values))
                  if same_keys else None}
    table = np.fromfile(os.path.join(directory, "vectors.bin"), dtype=np.float64).reshape(2 * size, dim + 1)
    return words, counts, table[:size, :dim], table[size:, :dim], comparison


def print_scores(label, scores, seconds, losses):
    for form, q in scores.items():
        print(f"{label:28s} {form:13s} WordSim-353 {q['wordsim353']:.3f}  SimLex-999 {q['simlex999']:.3f}  "
              f"analogy {q['analogy']:.3f}  mean cos top-200 {q['mean_cosine_top200']:.3f}", flush=True)
    print(f"{'':28s} {seconds:.1f}s, final loss {losses[-1]:.4f}" if losses else "", flush=True)


def parse_variant(text):
    """"window=5,x_max=10" -> {"window": 5, "x_max": 10.0}, typed like `GloveSettings`' fields."""
    types = {f.name: type(f.default) for f in dataclasses.fields(GloveSettings)}
    changes = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in types:
            raise argparse.ArgumentTypeError(f"unknown setting {name!r}; valid: {', '.join(types)}")
        changes[name] = types[name](value)
    return changes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_and_settings_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", nargs="*", choices=ARMS, default=list(ARMS))
    parser.add_argument("--batch", type=int, default=1024, help="the numpy arm's entries per AdaGrad step")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[],
                        help="also train kmlm with these GloveSettings changes, e.g. window=5,x_max=10")
    parser.add_argument("--export", help="write the corpus's words here, one document a line (glove.c's input)")
    parser.add_argument("--glove-c", help="a directory with glove.c's vocab.txt, cooccurrence.bin and vectors.bin")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    texts, words = corpus_words(args.corpus, args.max_documents)
    if args.export:
        with open(args.export, "w", encoding="utf-8") as f:
            f.writelines(" ".join(row) + "\n" for row in words)
    settings = GloveSettings(dim=args.dim, window=args.window, min_count=args.min_count, epochs=args.epochs,
                             x_max=args.x_max, seed=args.seed, workers=args.workers)
    print(f"corpus {args.corpus}: {len(texts):,} documents, {sum(map(len, words)):,} words; {settings}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    documents = tf.data.Dataset.from_tensor_slices(texts)
    counted = {}

    def counts_for(run_settings):
        key = (run_settings.min_count, run_settings.window)
        if key not in counted:
            vocabulary, frequencies = build_vocabulary(count_words(documents), run_settings.min_count)
            counted[key] = vocabulary, frequencies, *cooccurrence_counts(documents, vocabulary, run_settings.window)
        return counted[key]

    results = {}

    def record(label, scores, seconds, losses, **extra):
        print_scores(label, scores, seconds, losses)
        results[label] = {"scores": scores, "seconds": seconds, "loss": losses, **extra}
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"settings": vars(args), "results": results}, f, indent=2, default=str)

    vocabulary, frequencies, rows, cols, values = counts_for(settings)
    print(f"{len(vocabulary):,} words, {len(values):,} non-zero co-occurrences", flush=True)
    if args.glove_c:
        glove_words, glove_counts, word, context, comparison = read_glove_c(
            args.glove_c, vocabulary, rows, cols, values, args.dim)
        print(f"glove.c's co-occurrences against kmlm's: {comparison}", flush=True)
        record("glove.c", scored(glove_words, glove_counts, word, context), 0.0, [], counts=comparison)
    for arm in args.arms:
        start = time.perf_counter()
        if arm == "kmlm":
            tables, _, losses = fit_glove(len(vocabulary), rows, cols, values, settings)
            word, context = tables.word, tables.context
        else:
            word, context, losses = reference_glove(len(vocabulary), rows, cols, values, settings, args.batch)
        record(arm, scored(vocabulary, frequencies, word, context), time.perf_counter() - start, losses)
    for changes in args.variant:
        run_settings = dataclasses.replace(settings, **changes)
        run_vocabulary, run_frequencies, run_rows, run_cols, run_values = counts_for(run_settings)
        start = time.perf_counter()
        tables, _, losses = fit_glove(len(run_vocabulary), run_rows, run_cols, run_values, run_settings)
        label = "kmlm " + ",".join(f"{k}={v}" for k, v in changes.items())
        record(label, scored(run_vocabulary, run_frequencies, tables.word, tables.context),
               time.perf_counter() - start, losses, vocabulary=len(run_vocabulary), cooccurrences=len(run_values))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

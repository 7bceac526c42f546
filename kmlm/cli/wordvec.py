"""`kmlm word2vec`, `kmlm glove` and `kmlm vectors`: train word vectors, and query, evaluate
and plot them (or those of a pretrained run's embedding table).

TensorFlow-heavy modules are imported inside the command functions, so `kmlm --help` stays fast.
"""

import json
import os
import time

from kmlm.cli.options import (
    add_command,
    add_corpus_option,
    add_one_per_line_option,
    add_quiet_option,
    add_subcommands,
    positive_int,
)


def add_commands(commands, names=None):
    """Adds the subcommands word2vec, glove, vectors and fasttext (or only those in `names`) to `commands`."""
    add_subcommands(commands, COMMANDS, names)


def add_word2vec_command(commands):
    """Adds `kmlm word2vec`."""
    w2v = add_command(commands, "word2vec", help="train word2vec vectors (skip-gram, CBOW)",
                      description="Train word2vec: negative sampling in compiled CPU code (--workers threads "
                                  "at once), hierarchical softmax with model.fit (--batch-size examples a step); "
                                  "writes DIR/vectors.txt (word2vec text format), DIR/vocab.txt (word counts) "
                                  "and DIR/word2vec.json. Words: lowercased, split on non-letters, every CJK "
                                  "character a word.")
    w2v.add_argument("--model", choices=("skipgram", "cbow"), default="skipgram", help="architecture")
    w2v.add_argument("--negatives", type=int, default=5, help="negative samples per example (0 with --hs)")
    w2v.add_argument("--hs", action="store_true", help="hierarchical softmax instead of negative sampling")
    w2v.add_argument("--subsample", type=float, default=1e-3, help="frequent-word subsampling threshold t (0: off)")
    _add_workers_option(w2v, "training threads with negative sampling")
    _add_training_options(w2v, window=5, epochs=5, batch_size=1024, learning_rate=0.025)
    add_segmenter_option(w2v)
    w2v.set_defaults(run=_word2vec)


def add_glove_command(commands):
    """Adds `kmlm glove`."""
    glove = add_command(commands, "glove", help="train GloVe vectors",
                        description="Count distance-weighted co-occurrences and fit GloVe's weighted "
                                    "least squares with GloVe's AdaGrad in compiled CPU code (--workers threads "
                                    "at once, the co-occurrences shuffled every epoch); writes DIR/vectors.txt "
                                    "(w + w~), DIR/vocab.txt and DIR/glove.json.")
    glove.add_argument("--x-max", type=float, default=100.0, help="cut-off of the weighting function")
    glove.add_argument("--alpha", type=float, default=0.75, help="exponent of the weighting function")
    glove.add_argument("--format", choices=("word2vec", "glove"), default="word2vec",
                       help="vectors.txt with a \"N D\" header (word2vec) or without (glove)")
    _add_workers_option(glove, "training threads")
    _add_training_options(glove, window=10, epochs=25, batch_size=None, learning_rate=0.05)
    add_segmenter_option(glove)
    glove.set_defaults(run=_glove)


def _add_workers_option(parser, what):
    """--workers of the commands that train in compiled CPU code."""
    parser.add_argument("--workers", type=int, default=0,
                        help=f"{what} (default 0: one per CPU core; 1: the same vectors on every run with the "
                             "same --seed)")


def _add_training_options(parser, *, window, epochs, batch_size, learning_rate):
    """The options word2vec and GloVe share, with each method's own defaults."""
    add_corpus_option(parser)
    add_one_per_line_option(parser)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--dim", type=positive_int, default=100, help="vector size")
    parser.add_argument("--window", type=positive_int, default=window, help="largest word distance")
    parser.add_argument("--min-count", type=positive_int, default=5, help="drop words seen fewer times")
    parser.add_argument("--epochs", type=positive_int, default=epochs, help="passes over the data")
    if batch_size is not None:  # None: a trainer without steps (GloVe, fastText)
        parser.add_argument("--batch-size", type=positive_int, default=batch_size, help="examples per step")
    parser.add_argument("--learning-rate", type=float, default=learning_rate, help="initial learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and sampling")
    add_quiet_option(parser)


def add_segmenter_option(parser):
    """`--segmenter`: Chinese words (jieba) instead of single characters."""
    parser.add_argument("--segmenter", choices=("none", "jieba"), default="none",
                        help="Chinese word segmenter: with jieba, a Chinese word of several characters is one "
                             "word (default none: every CJK character is a word)")


def add_fasttext_command(commands):
    """Adds `kmlm fasttext`."""
    ft = add_command(commands, "fasttext", help="train fastText vectors (words + character n-grams)",
                     description="Train fastText word vectors (skip-gram or CBOW, negative sampling) in "
                                 "compiled CPU code (--workers threads at once): a word's input vector is the mean "
                                 "of its own row and the rows of its character n-grams (min-n..max-n characters of "
                                 "<word>, hashed into --buckets rows as fastText does), so words never seen in "
                                 "training get vectors too. Writes "
                                 "DIR/vectors.vec (text format), DIR/model.bin (Facebook fastText binary, loads in "
                                 "fastText and gensim's load_facebook_model), DIR/vocab.txt and DIR/fasttext.json. "
                                 "Query unseen words with `kmlm vectors DIR --similar WORD`.")
    ft.add_argument("--model", choices=("skipgram", "cbow"), default="skipgram", help="architecture")
    ft.add_argument("--negatives", type=positive_int, default=5, help="negative samples per example")
    ft.add_argument("--subsample", type=float, default=1e-3, help="frequent-word subsampling threshold t (0: off)")
    ft.add_argument("--min-n", type=int, default=3, help="shortest character n-gram, counting the < > markers")
    ft.add_argument("--max-n", type=int, default=6, help="longest character n-gram (0: no n-grams)")
    ft.add_argument("--buckets", type=positive_int, default=200_000,
                    help="rows of the hashed n-gram table (default 200,000: fastText's 2,000,000 makes an 800 MB "
                         "table and .bin at dim 100, mostly empty on corpora of a few million words; give "
                         "2000000 to match fastText)")
    _add_workers_option(ft, "training threads")
    _add_training_options(ft, window=5, epochs=5, batch_size=None, learning_rate=0.05)
    add_segmenter_option(ft)
    ft.set_defaults(run=_fasttext)


def add_vectors_command(commands):
    """Adds `kmlm vectors`."""
    vec = add_command(commands, "vectors", help="query, evaluate and plot word vectors",
                      description="Load word vectors (word2vec or GloVe text file, a fastText .bin or "
                                  "`kmlm fasttext` directory: any word, seen or not, from its character n-grams, "
                                  "or a `kmlm pretrain` run directory: its input embedding table, a word = the "
                                  "mean of its pieces) and answer the requested queries.")
    vec.add_argument("vectors", metavar="VECTORS", help="vectors file, fastText .bin, or a run directory")
    vec.add_argument("--similar", nargs="+", default=[], metavar="WORD", help="print the nearest neighbours of words")
    vec.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="solve A : B :: C : ?")
    vec.add_argument("--method", choices=("add", "mul"), default="add", help="analogy method: 3CosAdd or 3CosMul")
    vec.add_argument("--top-n", type=positive_int, default=10, help="answers per query")
    vec.add_argument("--pairs", metavar="FILE", help="word-pair similarity file to score (Spearman)")
    vec.add_argument("--analogies", metavar="FILE", help="analogy file to score (Google format)")
    vec.add_argument("--restrict", type=positive_int, default=None,
                     help="answer analogies among the N most frequent words")
    vec.add_argument("--projector", metavar="DIR", help="write TensorBoard Embedding Projector files")
    vec.add_argument("--plot", metavar="PNG", help="write a labelled 2-D scatter plot")
    vec.add_argument("--plot-words", nargs="+", metavar="WORD", help="words to plot (default: the most frequent)")
    vec.add_argument("--projection", choices=("pca", "tsne"), default="pca", help="projection of the plot")
    vec.add_argument("--limit", type=positive_int, default=None, help="use only the first N words")
    vec.add_argument("--json", action="store_true", help="print the results as JSON")
    vec.set_defaults(run=_vectors)


def _word2vec(args):
    """Runs `kmlm word2vec`."""
    from kmlm.pipelines import load_documents
    from kmlm.wordvec.word2vec import Word2VecSettings, save_word2vec_run, train_word2vec

    settings = Word2VecSettings(
        model=args.model, dim=args.dim, window=args.window, negatives=args.negatives, hierarchical_softmax=args.hs,
        min_count=args.min_count, subsample=args.subsample, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed, segmenter=_segmenter(args), workers=args.workers,
    )
    settings.validate()
    documents = load_documents(args.corpus, one_per_line=args.one_per_line)
    start = time.time()
    result = train_word2vec(documents, settings, verbose=0 if args.quiet else 1)
    save_word2vec_run(args.out, result, settings, corpus=args.corpus)
    rates = sorted(result.words_per_second)
    print(f"{len(result.vectors)} word vectors of dim {args.dim} in {args.out}/vectors.txt; "
          f"{rates[len(rates) // 2]:,.0f} words/s (median epoch); {time.time() - start:.1f}s")


def _glove(args):
    """Runs `kmlm glove`."""
    from kmlm.pipelines import load_documents
    from kmlm.wordvec.glove import GloveSettings, save_glove_run, train_glove

    settings = GloveSettings(
        dim=args.dim, window=args.window, min_count=args.min_count, x_max=args.x_max, alpha=args.alpha,
        epochs=args.epochs, learning_rate=args.learning_rate, seed=args.seed, segmenter=_segmenter(args),
        workers=args.workers,
    )
    settings.validate()
    documents = load_documents(args.corpus, one_per_line=args.one_per_line)
    start = time.time()
    result = train_glove(documents, settings, verbose=0 if args.quiet else 1)
    save_glove_run(args.out, result, settings, corpus=args.corpus, format=args.format)
    rates = sorted(result.entries_per_second)
    print(f"{len(result.vectors)} word vectors of dim {args.dim} from {result.pairs:,} co-occurrences in "
          f"{args.out}/vectors.txt; final loss {result.history['loss'][-1]:.4f}; "
          f"{rates[len(rates) // 2]:,.0f} co-occurrences/s (median epoch); {time.time() - start:.1f}s")


def _fasttext(args):
    """Runs `kmlm fasttext`."""
    from kmlm.pipelines import load_documents
    from kmlm.wordvec.fasttext import FastTextSettings, save_fasttext_run, train_fasttext

    settings = FastTextSettings(
        model=args.model, dim=args.dim, window=args.window, negatives=args.negatives, min_count=args.min_count,
        subsample=args.subsample, epochs=args.epochs, learning_rate=args.learning_rate, seed=args.seed,
        min_n=args.min_n, max_n=args.max_n, buckets=args.buckets, segmenter=_segmenter(args), workers=args.workers,
    )
    settings.validate()
    documents = load_documents(args.corpus, one_per_line=args.one_per_line)
    start = time.time()
    result = train_fasttext(documents, settings, verbose=0 if args.quiet else 1)
    save_fasttext_run(args.out, result, settings, corpus=args.corpus)
    rates = sorted(result.words_per_second)
    print(f"{len(result.vectors)} word vectors of dim {args.dim} and {result.vectors.buckets:,} n-gram buckets in "
          f"{args.out}/vectors.vec and {args.out}/model.bin; {rates[len(rates) // 2]:,.0f} words/s (median epoch); "
          f"{time.time() - start:.1f}s")


def _segmenter(args):
    return None if args.segmenter == "none" else args.segmenter


def _vectors(args):
    """Runs `kmlm vectors`."""
    vectors = _load_vectors(args.vectors, args.limit)
    results = _answer_queries(vectors, args)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        _print_answers(results, args)


def _load_vectors(source, limit):
    """Word vectors from a vectors file, or from the embedding table of a run directory."""
    from kmlm.wordvec.fasttext import MODEL_FILE
    from kmlm.wordvec.fasttext_bin import load_fasttext_bin
    from kmlm.wordvec.vectors import WordVectors

    fasttext_model = os.path.join(source, MODEL_FILE) if os.path.isdir(source) else source
    if fasttext_model.endswith(".bin") and os.path.isfile(fasttext_model):
        vectors = load_fasttext_bin(fasttext_model).vectors
        return vectors.restricted(limit) if limit else vectors
    if not os.path.isdir(source):
        return WordVectors.load(source, limit=limit)
    from kmlm.run_directory import load_run

    run = load_run(source)
    vectors = WordVectors.from_masked_lm(run, None, lowercase=run.config.data.lowercase)
    if limit:
        vectors = WordVectors(vectors.words[:limit], vectors.vectors[:limit])
    return vectors


def _require_words(vectors, words, source):
    """Raises ValueError naming the first of `words` that `vectors` lacks."""
    for word in words:
        if not vectors.has_vector(word):
            raise ValueError(f"word {word!r} is not in the vocabulary of {source}")


def _answer_queries(vectors, args):
    """The answers to every query of the command line, as a JSON-ready dict."""
    results = {"words": len(vectors), "dim": vectors.dim}
    for word in args.similar:
        _require_words(vectors, [word], args.vectors)
        results.setdefault("similar", {})[word] = vectors.most_similar(word, top_n=args.top_n)
    if args.analogy:
        _require_words(vectors, args.analogy, args.vectors)
        results["analogy"] = vectors.analogy(*args.analogy, method=args.method, top_n=args.top_n)
    if args.pairs:
        results["pairs"] = vectors.evaluate_word_pairs(args.pairs)
    if args.analogies:
        results["analogies"] = vectors.evaluate_analogies(args.analogies, method=args.method, restrict=args.restrict)
    if args.projector:
        from kmlm.wordvec.projector import export_projector

        results["projector"] = {"dir": args.projector, "words": export_projector(vectors, args.projector)}
    if args.plot:
        from kmlm.wordvec.projector import plot_projection

        plotted = plot_projection(vectors, args.plot, words=args.plot_words, method=args.projection)
        results["plot"] = {"path": args.plot, "words": len(plotted)}
    return results


def _print_answers(results, args):
    """Prints the answers of `_answer_queries` for a reader."""
    print(f"{results['words']} words, dim {results['dim']}")
    for word, neighbours in results.get("similar", {}).items():
        print(f"{word}: " + ", ".join(f"{w} ({s:.3f})" for w, s in neighbours))
    if "analogy" in results:
        a, b, c = args.analogy
        print(f"{a} : {b} :: {c} : " + ", ".join(f"{w} ({s:.3f})" for w, s in results["analogy"]))
    if "pairs" in results:
        p = results["pairs"]
        print(f"word pairs: Spearman {p['spearman']:.4f} on {p['pairs']} pairs ({p['oov']} out of vocabulary)")
    if "analogies" in results:
        a = results["analogies"]
        print(f"analogies ({args.method}): accuracy {a['accuracy']:.4f} ({a['correct']}/{a['questions']}, "
              f"{a['oov']} out of vocabulary)")
        for name, section in a["sections"].items():
            if name:
                print(f"  {name}: {section['accuracy']:.4f} ({section['correct']}/{section['questions']})")
    if "projector" in results:
        print(f"projector files for {results['projector']['words']} words in {args.projector} "
              f"(tensorboard --logdir {args.projector})")
    if "plot" in results:
        print(f"plotted {results['plot']['words']} words to {args.plot}")


# Subcommand name -> the function that adds it, in the group's order.
COMMANDS = {"word2vec": add_word2vec_command, "glove": add_glove_command, "vectors": add_vectors_command,
            "fasttext": add_fasttext_command}

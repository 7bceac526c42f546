"""The `kmlm` command line: vocab, pretrain, evaluate, fill-mask, export."""

import argparse
import importlib
import json
import os
import sys
import time


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line (argparse alone prints the usage too)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


CORPUS_HELP = (
    "text corpus: a file, directory or glob of UTF-8 .txt/.gz files (documents separated by "
    "blank lines), tfds:NAME[/CONFIG][:SPLIT][:FEATURE], or builtin:python-docs "
    "(default: builtin:python-docs, offline)"
)


# Modules that add their own subcommands: each has `add_commands(commands, formatter_class)`
# and imports TensorFlow only inside the command functions, so `kmlm --help` stays fast.
COMMAND_MODULES = (
    "kmlm.cli.tasks",
    "kmlm.cli.bert",
)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def build_parser():
    parser = _Parser(
        prog="kmlm",
        description="BERT-style masked language modeling for TensorFlow/Keras.",
        formatter_class=_Formatter,
        epilog="Run `kmlm COMMAND --help` for the options of a command.",
    )
    from kmlm import __version__

    parser.add_argument("--version", action="version", version=f"kmlm {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show TensorFlow's start-up logs and full tracebacks (also KMLM_DEBUG=1); "
                             "may be given after the command too")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    vocab = commands.add_parser("vocab", help="learn a WordPiece vocabulary", formatter_class=_Formatter,
                                description="Learn a WordPiece vocabulary ([PAD] [UNK] [CLS] [SEP] [MASK] first) from a corpus.")
    vocab.add_argument("--corpus", default=None, help=CORPUS_HELP)
    vocab.add_argument("--size", type=_positive_int, default=8192, help="vocabulary size, special tokens included")
    vocab.add_argument("--out", required=True, help="vocabulary file to write (one token per line)")
    vocab.add_argument("--method", choices=("fast", "keras-nlp"), default="fast",
                       help="fast: Rust WordPiece trainer (tokenizers); keras-nlp: keras-hub's learner (slow)")
    vocab.add_argument("--one-per-line", action="store_true", help="every non-blank line is a document")
    vocab.add_argument("--cased", action="store_true", help="keep case and accents (default: lowercase)")
    vocab.set_defaults(run=_vocab)

    pre = commands.add_parser("pretrain", help="pretrain a masked language model", formatter_class=_Formatter,
                              description="Pretrain a BERT-style encoder with on-the-fly masking; writes a run directory "
                                          "(config.json, vocab.txt, checkpoints, model.keras, metrics.csv, logs/, curves.png). "
                                          "Re-running the same command after a kill resumes the run.")
    pre.add_argument("--corpus", default=None, help=CORPUS_HELP)
    pre.add_argument("--one-per-line", action="store_true", help="every non-blank line is a document")
    pre.add_argument("--preset", default="mini", help="model size: tiny, mini, small, medium, base, large")
    for flag, meaning in (("--num-layers", "encoder blocks"), ("--hidden-dim", "hidden size"),
                          ("--num-heads", "attention heads"), ("--intermediate-dim", "feed-forward width")):
        pre.add_argument(flag, type=_positive_int, default=None, help=f"override the preset's {meaning}")
    pre.add_argument("--steps", type=_positive_int, default=1000, help="training steps (rounded up to whole epochs)")
    pre.add_argument("--seq-len", type=_positive_int, default=128, help="tokens per row S")
    pre.add_argument("--batch-size", type=_positive_int, default=32, help="rows per batch B")
    pre.add_argument("--masking", choices=("token", "whole_word", "span"), default="token", help="masking strategy")
    pre.add_argument("--mask-rate", type=float, default=0.15, help="fraction of tokens to predict, in (0, 1)")
    pre.add_argument("--vocab", default=None, help="existing vocabulary file (default: learn one from the corpus)")
    pre.add_argument("--vocab-size", type=_positive_int, default=8192, help="size of the vocabulary to learn")
    pre.add_argument("--vocab-method", choices=("fast", "keras-nlp"), default="fast", help="vocabulary learner")
    pre.add_argument("--cased", action="store_true", help="keep case and accents (default: lowercase)")
    pre.add_argument("--no-packing", action="store_true", help="one document per padded row instead of packing")
    pre.add_argument("--learning-rate", type=float, default=5e-4, help="peak learning rate")
    pre.add_argument("--warmup-steps", type=int, default=None, help="linear warmup steps (default: 10%% of --steps)")
    pre.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    pre.add_argument("--precision", choices=("float32", "mixed_float16", "mixed_bfloat16"), default="float32",
                     help="compute precision (softmax, LayerNorm and loss stay float32)")
    pre.add_argument("--no-jit", action="store_true", help="do not XLA-compile the train step")
    pre.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and masking")
    pre.add_argument("--eval-batches", type=int, default=4, help="held-out batches evaluated after every epoch")
    pre.add_argument("--log-points", type=_positive_int, default=20,
                     help="epochs the run is split into (metrics.csv rows, checkpoints)")
    pre.add_argument("--strategy", dest="distribution", choices=("default", "mirrored", "multi-worker", "tpu"),
                     default="default",
                     help="tf.distribute strategy: default (one device), mirrored (all local GPUs), multi-worker "
                          "(MultiWorkerMirroredStrategy over the hosts in TF_CONFIG; needs --vocab), tpu")
    pre.add_argument("--distribution", dest="distribution", choices=("default", "mirrored", "multi-worker", "tpu"),
                     default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # the flag's name before --strategy
    pre.add_argument("--data-service", metavar="ADDRESS", default=None,
                     help="run the input pipeline on a tf.data service dispatcher (grpc://host:port) and its "
                          "workers, for when the host CPU cannot feed the accelerators")
    pre.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    pre.add_argument("--init-embeddings", metavar="VECTORS", default=None,
                     help="initialise the token embeddings from a word2vec/GloVe text file "
                          "(whole-word tokens; a linear map when sizes differ)")
    pre.add_argument("--objective", choices=("mlm", "mlm+nsp", "mlm+sop"), default="mlm",
                     help="pretraining objective: masked LM alone, or jointly with next-sentence (nsp) or "
                          "sentence-order (sop) prediction on sentence pairs (one device)")
    pre.add_argument("--out", required=True, help="run directory to write")
    pre.add_argument("--quiet", action="store_true", help="no progress output")
    pre.set_defaults(run=_pretrain)

    ev = commands.add_parser("evaluate", help="masked accuracy, loss and perplexity of a run", formatter_class=_Formatter,
                             description="Evaluate a run on the held-out split of its corpus (or on all of --corpus) "
                                         "with fixed-seed masking, so numbers compare across runs.")
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `kmlm pretrain`")
    ev.add_argument("--corpus", default=None, help="evaluate on all of this corpus instead of the held-out split")
    ev.add_argument("--max-batches", type=_positive_int, default=None, help="stop after this many batches")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.set_defaults(run=_evaluate)

    fm = commands.add_parser("fill-mask", help="predict the tokens behind [MASK]", formatter_class=_Formatter,
                             description="Print the top-k predictions for every [MASK] in each TEXT.")
    fm.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `kmlm pretrain`")
    fm.add_argument("texts", metavar="TEXT", nargs="+", help="text with one or more [MASK]")
    fm.add_argument("--top-k", type=_positive_int, default=5, help="predictions per [MASK]")
    fm.add_argument("--json", action="store_true", help="print the predictions as JSON")
    fm.set_defaults(run=_fill_mask)

    ex = commands.add_parser("export", help="export a run for TensorFlow Serving", formatter_class=_Formatter,
                             description="Write a TensorFlow Serving SavedModel version BASE_DIR/<version>/ with the "
                                         "signatures serving_default (fixed-length ids), fill_mask and encode (raw "
                                         "strings), warmup requests, and an op audit. The version is written under a "
                                         "temporary name and renamed into place; existing versions are never "
                                         "overwritten.")
    ex.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `kmlm pretrain`, or by `kmlm finetune` "
                    "(signatures serving_default and predict; see the README)")
    ex.add_argument("--out", required=True, metavar="BASE_DIR", help="model base directory (one subdirectory per version)")
    ex.add_argument("--version", type=_positive_int, default=None,
                    help="version number (default: one more than the highest present)")
    ex.add_argument("--seq-len", type=_positive_int, default=None,
                    help="fixed sequence length S of the signatures (default: the run's --seq-len)")
    ex.add_argument("--top-k", type=_positive_int, default=5, help="predictions per [MASK]")
    ex.add_argument("--max-masks", type=_positive_int, default=None,
                    help="[MASK] slots per text (default: the run's prediction slots for S)")
    ex.add_argument("--model-name", default=None, help="model name in the warmup requests (default: BASE_DIR's name)")
    ex.set_defaults(run=_export)
    _add_word_vector_commands(commands)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(commands, _Formatter)
    return parser


def _vocab(args):
    from kmlm.pipelines import CorpusStats, learn_vocabulary, load_documents, save_vocabulary

    stats = CorpusStats()
    documents = load_documents(args.corpus, one_per_line=args.one_per_line, stats=stats)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"directory of --out {args.out!r} does not exist")
    start = time.time()
    vocabulary = learn_vocabulary(documents, args.size, lowercase=not args.cased, method=args.method)
    save_vocabulary(vocabulary, args.out)
    print(f"wrote {len(vocabulary)} tokens to {args.out} in {time.time() - start:.1f}s ({args.method})")
    if stats.invalid_utf8:
        print(f"replaced {stats.invalid_utf8} invalid UTF-8 sequences in the corpus")


def _pretrain(args):
    from kmlm.pretraining.job import PretrainSettings, pretrain, remove_run
    from kmlm.run_directory import MODEL_FILE

    settings = PretrainSettings(
        corpus=args.corpus,
        one_per_line=args.one_per_line,
        preset=args.preset,
        steps=args.steps,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        masking=args.masking,
        mask_rate=args.mask_rate,
        vocab=args.vocab,
        vocab_size=args.vocab_size,
        vocab_method=args.vocab_method,
        lowercase=not args.cased,
        packing=not args.no_packing,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        precision=args.precision,
        jit_compile=not args.no_jit,
        seed=args.seed,
        eval_batches=args.eval_batches,
        log_points=args.log_points,
        distribution=args.distribution,
        data_service=args.data_service,
        init_embeddings=args.init_embeddings,
        objective=args.objective,
        model_overrides={
            key: getattr(args, key)
            for key in ("num_layers", "hidden_dim", "num_heads", "intermediate_dim")
            if getattr(args, key) is not None
        },
    )
    settings.validate()
    if args.overwrite and os.path.isfile(os.path.join(args.out, MODEL_FILE)):
        remove_run(args.out)
    start = time.time()
    metrics = pretrain(args.out, settings, verbose=0 if args.quiet else "auto")
    if not metrics:  # a non-chief worker of --strategy multi-worker
        print(f"worker finished its {settings.steps} steps; the chief worker wrote the run directory {args.out}")
        return
    if "next_sentence_accuracy" in metrics:
        print(f"held-out {args.objective.split('+')[1].upper()} accuracy {metrics['next_sentence_accuracy']:.4f} "
              f"({metrics['pairs']} pairs)")
    print(
        f"held-out masked accuracy {metrics['masked_accuracy']:.4f}, loss {metrics['loss']:.4f}, "
        f"perplexity {metrics['perplexity']:.2f} ({metrics['masked_tokens']} masked tokens); "
        f"{(time.time() - start) / 60:.1f} min; run directory {args.out}"
    )


def _evaluate(args):
    from kmlm.pretraining.evaluation import eval_dataset, evaluate_masked_lm
    from kmlm.run_directory import load_run

    run = load_run(args.run_dir)
    run.require_masked_lm_head("evaluate")
    dataset = eval_dataset(run.data, run.vocabulary, corpus=args.corpus)
    metrics = evaluate_masked_lm(run.model, dataset, max_batches=args.max_batches, verbose=0 if args.json else 1)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(
            f"masked_accuracy {metrics['masked_accuracy']:.4f}  loss {metrics['loss']:.4f}  "
            f"perplexity {metrics['perplexity']:.2f}  ({metrics['masked_tokens']} masked tokens, "
            f"{metrics['batches']} batches)"
        )


def _fill_mask(args):
    from kmlm.inference.fill_mask import FillMask
    from kmlm.run_directory import load_run

    run = load_run(args.run_dir)
    run.require_masked_lm_head("fill-mask")
    predictor = FillMask(run.model, run.vocabulary, lowercase=run.data.get("lowercase", True),
                         max_length=run.model_config.max_position)
    outputs = []
    for text in args.texts:
        results = predictor(text, top_k=args.top_k)
        outputs.append({"text": text, "filled": predictor.filled_text(text, results), "masks": results})
    if args.json:
        print(json.dumps(outputs if len(outputs) > 1 else outputs[0], indent=2, ensure_ascii=False))
        return
    for output in outputs:
        print(output["text"])
        print(f"  -> {output['filled']}")
        for number, mask in enumerate(output["masks"], 1):
            guesses = ", ".join(f"{p['token']} ({p['score']:.3f})" for p in mask["predictions"])
            print(f"  [MASK] {number}: {guesses}")


def _export(args):
    from kmlm.serving.masked_lm import export_run
    from kmlm.serving.audit import text_ops_used

    print(f"exporting {args.run_dir} to {args.out} ...", flush=True)
    start = time.time()
    if os.path.isfile(os.path.join(args.run_dir, "task.json")):  # a `kmlm finetune` output
        from kmlm.serving.tasks import export_task

        result = export_task(args.run_dir, args.out, version=args.version, seq_len=args.seq_len,
                             model_name=args.model_name)
        print(f"wrote version {result.version} to {result.path} in {time.time() - start:.1f}s: signatures "
              f"{', '.join(sorted(result.ops))} (S={result.seq_len}); op audit passed, TF Text ops: "
              f"{', '.join(text_ops_used(result.ops)) or 'none'}")
        return
    result = export_run(args.run_dir, args.out, version=args.version, seq_len=args.seq_len, top_k=args.top_k,
                        max_masks=args.max_masks, model_name=args.model_name)
    print(
        f"wrote version {result.version} to {result.path} in {time.time() - start:.1f}s: signatures "
        f"{', '.join(sorted(result.ops))} (S={result.seq_len}, max_masks={result.max_masks}, top_k={result.top_k}); "
        f"op audit passed, TF Text ops: {', '.join(text_ops_used(result.ops)) or 'none'}"
    )


def _add_word_vector_commands(commands):
    w2v = commands.add_parser("word2vec", help="train word2vec vectors (skip-gram, CBOW)", formatter_class=_Formatter,
                              description="Train word2vec (negative sampling or hierarchical softmax) with model.fit; "
                                          "writes DIR/vectors.txt (word2vec text format), DIR/vocab.txt (word counts) "
                                          "and DIR/word2vec.json. Words: lowercased, split on non-letters, every CJK "
                                          "character a word.")
    w2v.add_argument("--model", choices=("skipgram", "cbow"), default="skipgram", help="architecture")
    w2v.add_argument("--negatives", type=int, default=5, help="negative samples per example (0 with --hs)")
    w2v.add_argument("--hs", action="store_true", help="hierarchical softmax instead of negative sampling")
    w2v.add_argument("--subsample", type=float, default=1e-3, help="frequent-word subsampling threshold t (0: off)")
    glove = commands.add_parser("glove", help="train GloVe vectors", formatter_class=_Formatter,
                                description="Count distance-weighted co-occurrences and fit GloVe's weighted "
                                            "least squares with model.fit; writes DIR/vectors.txt, DIR/vocab.txt and "
                                            "DIR/glove.json.")
    glove.add_argument("--x-max", type=float, default=100.0, help="cut-off of the weighting function")
    glove.add_argument("--alpha", type=float, default=0.75, help="exponent of the weighting function")
    glove.add_argument("--format", choices=("word2vec", "glove"), default="word2vec",
                       help="vectors.txt with a \"N D\" header (word2vec) or without (glove)")
    for sub, window, epochs, batch, rate in ((w2v, 5, 5, 1024, 0.025), (glove, 10, 25, 256, 0.1)):
        sub.add_argument("--corpus", default=None, help=CORPUS_HELP)
        sub.add_argument("--one-per-line", action="store_true", help="every non-blank line is a document")
        sub.add_argument("--out", required=True, help="output directory")
        sub.add_argument("--dim", type=_positive_int, default=100, help="vector size")
        sub.add_argument("--window", type=_positive_int, default=window, help="largest word distance")
        sub.add_argument("--min-count", type=_positive_int, default=5, help="drop words seen fewer times")
        sub.add_argument("--epochs", type=_positive_int, default=epochs, help="passes over the data")
        sub.add_argument("--batch-size", type=_positive_int, default=batch, help="examples per step")
        sub.add_argument("--learning-rate", type=float, default=rate, help="initial learning rate")
        sub.add_argument("--seed", type=int, default=0, help="seed of initialisation and sampling")
        sub.add_argument("--quiet", action="store_true", help="no progress output")
    w2v.set_defaults(run=_word2vec)
    glove.set_defaults(run=_glove)

    vec = commands.add_parser("vectors", help="query, evaluate and plot word vectors", formatter_class=_Formatter,
                              description="Load word vectors (word2vec or GloVe text file, or a `kmlm pretrain` run "
                                          "directory: its input embedding table, a word = the mean of its pieces) and "
                                          "answer the requested queries.")
    vec.add_argument("vectors", metavar="VECTORS", help="vectors file, or a run directory")
    vec.add_argument("--similar", nargs="+", default=[], metavar="WORD", help="print the nearest neighbours of words")
    vec.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="solve A : B :: C : ?")
    vec.add_argument("--method", choices=("add", "mul"), default="add", help="analogy method: 3CosAdd or 3CosMul")
    vec.add_argument("--top-n", type=_positive_int, default=10, help="answers per query")
    vec.add_argument("--pairs", metavar="FILE", help="word-pair similarity file to score (Spearman)")
    vec.add_argument("--analogies", metavar="FILE", help="analogy file to score (Google format)")
    vec.add_argument("--restrict", type=_positive_int, default=None, help="answer analogies among the N most frequent words")
    vec.add_argument("--projector", metavar="DIR", help="write TensorBoard Embedding Projector files")
    vec.add_argument("--plot", metavar="PNG", help="write a labelled 2-D scatter plot")
    vec.add_argument("--plot-words", nargs="+", metavar="WORD", help="words to plot (default: the most frequent)")
    vec.add_argument("--projection", choices=("pca", "tsne"), default="pca", help="projection of the plot")
    vec.add_argument("--limit", type=_positive_int, default=None, help="use only the first N words")
    vec.add_argument("--json", action="store_true", help="print the results as JSON")
    vec.set_defaults(run=_vectors)


def _word2vec(args):
    from kmlm.pipelines import load_documents
    from kmlm.wordvec.word2vec import Word2VecSettings, save_word2vec_run, train_word2vec

    settings = Word2VecSettings(
        model=args.model, dim=args.dim, window=args.window, negatives=args.negatives, hierarchical_softmax=args.hs,
        min_count=args.min_count, subsample=args.subsample, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed,
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
    from kmlm.wordvec.glove import GloveSettings, save_glove_run, train_glove
    from kmlm.pipelines import load_documents

    settings = GloveSettings(
        dim=args.dim, window=args.window, min_count=args.min_count, x_max=args.x_max, alpha=args.alpha,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
    )
    settings.validate()
    documents = load_documents(args.corpus, one_per_line=args.one_per_line)
    start = time.time()
    result = train_glove(documents, settings, verbose=0 if args.quiet else 1)
    save_glove_run(args.out, result, settings, corpus=args.corpus, format=args.format)
    print(f"{len(result.vectors)} word vectors of dim {args.dim} from {result.pairs:,} co-occurrences in "
          f"{args.out}/vectors.txt; final loss {result.history['loss'][-1]:.4f}; {time.time() - start:.1f}s")


def _vectors(args):
    from kmlm.wordvec.vectors import WordVectors

    if os.path.isdir(args.vectors):
        from kmlm.run_directory import load_run

        run = load_run(args.vectors)
        vectors = WordVectors.from_masked_lm(run, None, lowercase=run.data.get("lowercase", True))
        if args.limit:
            vectors = WordVectors(vectors.words[: args.limit], vectors.vectors[: args.limit])
    else:
        vectors = WordVectors.load(args.vectors, limit=args.limit)
    results = {"words": len(vectors), "dim": vectors.dim}
    for word in args.similar:
        if word not in vectors:
            raise ValueError(f"word {word!r} is not in the vocabulary of {args.vectors}")
        results.setdefault("similar", {})[word] = vectors.most_similar(word, top_n=args.top_n)
    if args.analogy:
        for word in args.analogy:
            if word not in vectors:
                raise ValueError(f"word {word!r} is not in the vocabulary of {args.vectors}")
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
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return
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


def _import_tensorflow_quietly(show_logs=False):
    """Imports TensorFlow with stderr silenced: its C++ start-up logs (CUDA probing on CPU
    machines, oneDNN notices) are noise to a CLI user. Set KMLM_DEBUG=1 to see them."""
    if show_logs or os.environ.get("KMLM_DEBUG") or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow

        tensorflow.config.list_physical_devices()  # probes CUDA (and logs about it) now
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Errors of bad input, reported as their message alone; anything else also names its type.
_INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def _one_line(error):
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else type(error).__name__
    if not isinstance(error, _INPUT_ERRORS):
        message = f"{type(error).__name__}: {message}"
        if len(message) > 300:
            message = message[:297] + "..."
        message += " (run with --debug for the traceback)"
    return message


def main(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is a global flag but reads naturally anywhere before a `--`.
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[:end]:
        argv = ["--debug"] + [arg for arg in argv[:end] if arg != "--debug"] + argv[end:]
    args = parser.parse_args(argv)
    debug = args.debug or bool(os.environ.get("KMLM_DEBUG"))
    _import_tensorflow_quietly(show_logs=debug)
    try:
        args.run(args)
    except Exception as error:  # one line on stderr; the traceback only with --debug
        if debug:
            raise
        print(f"kmlm {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kmlm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

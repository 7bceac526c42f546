"""`kmlm finetune`, `kmlm predict` and `kmlm embed`: the downstream tasks of a run's encoder.

TensorFlow-heavy modules are imported inside the command functions, so `kmlm --help` stays fast.
"""

import json
import sys

from kmlm.cli.options import add_command, add_quiet_option, add_subcommands, positive_float, positive_int

TASK_HELP = ("classify: one text -> label; pair: two texts -> label; tag: words -> BIO tags; "
             "similarity: sentence vectors whose cosine follows a score (or --contrastive); "
             "qa: the answer span of a question in a context")
SOURCE_HELP = (".jsonl/.csv/.tsv file (fields text, text_pair, label / tokens, tags / question, context, answers), "
               "a SQuAD .json file (qa), or tfds:NAME[/CONFIG][:SPLIT], e.g. tfds:glue/sst2:validation, tfds:squad")


def add_commands(commands, names=None):
    """Adds the subcommands finetune, predict and embed (or only those in `names`) to `commands`."""
    add_subcommands(commands, COMMANDS, names)


# The defaults of `kmlm finetune` live in `kmlm.tasks.finetune.FinetuneSettings` (and the rules
# beside it); that module loads TensorFlow, so the help states them in words and
# tests/tasks/test_finetune_defaults.py checks the words against the dataclass. Every option
# defaults to None here, which leaves the value to the dataclass.
FINETUNE_DEFAULTS_HELP = {
    "seq_len": "128", "batch_size": "32", "learning_rate": "1e-3 x 128 / hidden size: 1e-3 for tiny, "
    "5e-4 for mini, 1.7e-4 for base", "epochs": "enough passes for 400 optimizer steps, at least 3",
    "warmup_fraction": "0.1", "weight_decay": "0.01", "dropout": "0.1",
    "patience": "the epochs spanning 200 steps, at least 2", "pooling": "mean", "seed": "0",
    "doc_stride": "128", "max_query_length": "64", "max_answer_length": "30",
    "null_threshold": "0 with unanswerable training questions, tuned for the best F1 on --eval; none (always "
    "answer) without",
}


def _default(field):
    return f" (default: {FINETUNE_DEFAULTS_HELP[field]})"


def add_finetune_command(commands):
    """Adds `kmlm finetune`."""
    ft = add_command(
        commands, "finetune", help="fine-tune a run's encoder on a labelled task",
        description="Fine-tune the encoder of a run directory (from `kmlm pretrain` or `kmlm convert`) with "
                    "model.fit: AdamW with linear warmup and decay, early stopping on the --eval metric (accuracy; "
                    "entity F1 for tag; Spearman for similarity) once the warmup is over. The default learning "
                    "rate follows the encoder's hidden size and the default length gives small training sets "
                    "enough steps. Writes OUT/model.keras, task.json (labels, settings, the schedule used, "
                    "metrics), vocab.txt and metrics.csv (and progress.json under --time-budget).")
    ft.add_argument("run_dir", metavar="RUN_DIR", help="a pretrained run directory")
    ft.add_argument("--task", required=True, choices=("classify", "pair", "tag", "similarity", "qa"), help=TASK_HELP)
    ft.add_argument("--train", required=True, metavar="SRC", help="training examples: " + SOURCE_HELP)
    ft.add_argument("--eval", metavar="SRC", help="evaluation examples (early stopping, best epoch)")
    ft.add_argument("--test", metavar="SRC", help="test examples, scored once at the end")
    ft.add_argument("--out", required=True, help="output directory")
    ft.add_argument("--seq-len", type=positive_int,
                    help="longest row in tokens ([CLS]/[SEP] included)" + _default("seq_len"))
    ft.add_argument("--batch-size", type=positive_int, help="examples per step" + _default("batch_size"))
    length = ft.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, help="passes over the training examples" + _default("epochs"))
    length.add_argument("--time-budget", type=positive_float, metavar="MINUTES",
                        help="train for this many minutes instead of a number of passes: the learning rate warms "
                             "up over --warmup of the time and falls to 0 when it is spent; evaluation after each "
                             "epoch (one pass, at least 50 and at most 500 steps) is outside the budget")
    ft.add_argument("--learning-rate", type=float, help="peak learning rate" + _default("learning_rate"))
    ft.add_argument("--warmup", dest="warmup_fraction", type=float, metavar="SHARE",
                    help="share of the steps (or of the --time-budget) spent warming up" + _default("warmup_fraction"))
    ft.add_argument("--weight-decay", type=float, help="AdamW weight decay" + _default("weight_decay"))
    ft.add_argument("--dropout", type=float, help="dropout of the task head" + _default("dropout"))
    ft.add_argument("--patience", type=positive_int,
                    help="epochs without improvement before stopping, counted from the end of the warmup"
                         + _default("patience"))
    ft.add_argument("--pooling", choices=("mean", "cls"), help="sentence vector (similarity)" + _default("pooling"))
    ft.add_argument("--contrastive", action="store_true",
                    help="similarity: in-batch negatives on (text, text_pair) pairs instead of score regression")
    ft.add_argument("--doc-stride", type=positive_int,
                    help="qa: context pieces between the starts of a long context's windows" + _default("doc_stride"))
    ft.add_argument("--max-query-length", type=positive_int,
                    help="qa: question pieces kept" + _default("max_query_length"))
    ft.add_argument("--max-answer-length", type=positive_int,
                    help="qa: longest answer in tokens" + _default("max_answer_length"))
    ft.add_argument("--null-threshold", type=float,
                    help="qa: answer nothing when the no-answer score exceeds the best span's by more than this"
                         + _default("null_threshold"))
    ft.add_argument("--random-init", action="store_true",
                    help="start from a randomly initialised encoder of the same shape (to measure what "
                         "pretraining gives)")
    ft.add_argument("--max-examples", type=positive_int, help="use only the first N training examples")
    ft.add_argument("--seed", type=int, help="seed of initialisation, dropout and shuffling" + _default("seed"))
    ft.add_argument("--jit", dest="jit_compile", action="store_true",
                    help="XLA-compile the train step (pays off on long runs; every new batch shape compiles anew)")
    ft.add_argument("--overwrite", action="store_true", help="replace an earlier fine-tuned model in --out")
    add_quiet_option(ft)
    ft.set_defaults(run=_finetune)


def add_predict_command(commands):
    """Adds `kmlm predict`."""
    pr = add_command(
        commands, "predict", help="run a fine-tuned model on texts",
        description="Print the label (classify, pair), the per-word tags (tag: words split on whitespace) or the "
                    "cosine similarity (similarity) for each TEXT; for qa the answer to --question in --context, "
                    "its character span (end exclusive) and score.")
    pr.add_argument("model_dir", metavar="DIR", help="a directory written by `kmlm finetune`")
    pr.add_argument("texts", metavar="TEXT", nargs="*", help="input texts")
    pr.add_argument("--question", metavar="Q", action="append", default=None, help="qa: a question (repeatable)")
    pr.add_argument("--context", metavar="C", action="append", default=None,
                    help="qa: the context of each --question (one, or one per question)")
    pr.add_argument("--pair", metavar="TEXT", nargs="+", default=None,
                    help="second texts, one per TEXT (pair, similarity)")
    pr.add_argument("--json", action="store_true", help="print JSON")
    pr.add_argument("--explain", action="store_true",
                    help="classify, pair: also print each token's integrated-gradients attribution to the logit of "
                         "the label (its share of logit(text) - logit(baseline); the shares add up to it)")
    pr.add_argument("--explain-out", metavar="FILE", default=None,
                    help="with --explain: write the tokens highlighted red (for the label) / blue (against) to this "
                         ".html or .png")
    pr.add_argument("--baseline", choices=("mask", "pad"), default=None,
                    help="with --explain: the token that replaces every token of the text at the start of the path "
                         "(default: mask)")
    pr.add_argument("--ig-steps", type=positive_int, default=None,
                    help="with --explain: points of the path integral (default: 50; more: smaller completeness error)")
    pr.add_argument("--target", metavar="LABEL", default=None,
                    help="with --explain: explain this label instead of the predicted one")
    pr.set_defaults(run=_predict)


def add_embed_command(commands):
    """Adds `kmlm embed`."""
    em = add_command(
        commands, "embed", help="sentence vectors and nearest-sentence search",
        description="Embed every non-blank line of --input with a run's encoder (mean over real tokens, or "
                    "[CLS]) or a fine-tuned similarity model; write the vectors as .npy and/or print the "
                    "lines nearest to each --query by cosine similarity.")
    em.add_argument("model_dir", metavar="RUN_DIR", help="a pretrained run directory or a fine-tuned similarity model")
    em.add_argument("--input", required=True, metavar="FILE", help="UTF-8 text file, one sentence per line")
    em.add_argument("--out", default=None, metavar="NPY", help="write the [N, H] float32 vectors here")
    em.add_argument("--query", nargs="+", default=[], metavar="TEXT", help="print the nearest lines to these texts")
    em.add_argument("--top-n", type=positive_int, default=5, help="neighbours per query")
    em.add_argument("--pooling", choices=("mean", "cls"), default="mean", help="sentence vector of a pretrained run")
    em.add_argument("--seq-len", type=positive_int, default=128, help="longest row in tokens")
    em.add_argument("--batch-size", type=positive_int, default=64, help="sentences per batch")
    em.add_argument("--json", action="store_true", help="print the neighbours as JSON")
    em.set_defaults(run=_embed)


# The options of `kmlm finetune` that are `FinetuneSettings` fields (under the field's name).
SETTINGS_OPTIONS = ("task", "train", "eval", "test", "seq_len", "batch_size", "epochs", "time_budget",
                    "learning_rate", "warmup_fraction", "weight_decay", "dropout", "patience", "pooling",
                    "contrastive", "random_init", "max_examples", "seed", "jit_compile", "doc_stride",
                    "max_query_length", "max_answer_length", "null_threshold")


def finetune_settings(args):
    """The `FinetuneSettings` of parsed `kmlm finetune` arguments: the options given, and the
    dataclass's defaults for the rest."""
    from kmlm.tasks.finetune import FinetuneSettings

    given = {name: getattr(args, name) for name in SETTINGS_OPTIONS}
    return FinetuneSettings(**{name: value for name, value in given.items() if value is not None})


def _finetune(args):
    """Runs `kmlm finetune`."""
    from kmlm.tasks.finetune import finetune

    result = finetune(args.run_dir, args.out, finetune_settings(args), overwrite=args.overwrite,
                      verbose=0 if args.quiet else 1)
    for split in ("eval", "test"):
        if split in result:
            shown = ", ".join(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"
                              for name, value in result[split].items())
            print(f"{split}: {shown}")
    print(f"wrote {args.out} ({result['epochs']} epochs, {result['steps']} steps, {result['seconds']}s)")


def _predict(args):
    """Runs `kmlm predict`."""
    from kmlm.tasks.finetune import Tasker, cosine_rows

    _check_explain_options(args)
    tasker = Tasker.load(args.model_dir)
    info = tasker.info
    explainer = _explainer(tasker, args) if args.explain else None
    if info.task == "qa":
        _predict_answers(tasker, args)
        return
    if args.question or args.context:
        raise ValueError(f"--question and --context are for qa models; {args.model_dir!r} is a {info.task} model")
    if not args.texts:
        raise ValueError("no TEXT given; pass the texts to predict on")
    if args.pair is not None and len(args.pair) != len(args.texts):
        raise ValueError(f"--pair has {len(args.pair)} texts for {len(args.texts)} TEXT arguments; give one each")
    if info.task in ("pair", "similarity") and args.pair is None:
        raise ValueError(f"a {info.task} model needs a second text per TEXT; pass --pair TEXT ...")
    results = []
    if info.task in ("classify", "pair"):
        probabilities = tasker.class_probabilities(args.texts, args.pair if info.task == "pair" else None)
        for text, row in zip(args.texts, probabilities):
            best = int(row.argmax())
            results.append({"text": text, "label": info.labels[best], "score": float(row[best]),
                            "scores": {label: float(p) for label, p in zip(info.labels, row)}})
    elif info.task == "tag":
        sentences = [text.split() for text in args.texts]
        for text, words, tags in zip(args.texts, sentences, tasker.word_tags(sentences)):
            results.append({"text": text, "words": words, "tags": tags})
    else:
        cosines = cosine_rows(tasker.embed(args.texts), tasker.embed(args.pair))
        results = [{"text": a, "text_pair": b, "similarity": float(c)} for a, b, c in zip(args.texts, args.pair, cosines)]
    if explainer is not None:
        _explain(explainer, results, args)
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
        return
    for result in results:
        if "label" in result:
            print(f"{result['label']}\t{result['score']:.4f}\t{result['text']}")
            if "attribution" in result:
                print("  " + "  ".join(f"{token} {score:+.3f}" for token, score in
                                       zip(result["attribution"]["tokens"], result["attribution"]["attributions"])))
        elif "tags" in result:
            print(" ".join(f"{w}/{t}" for w, t in zip(result["words"], result["tags"])))
        else:
            print(f"{result['similarity']:.4f}\t{result['text']}\t{result['text_pair']}")


EXPLAIN_FORMATS = (".html", ".png")


def _check_explain_options(args):
    """The --explain options, checked before the model loads."""
    given = [flag for flag, value in (("--explain-out", args.explain_out), ("--baseline", args.baseline),
                                      ("--ig-steps", args.ig_steps), ("--target", args.target)) if value is not None]
    if given and not args.explain:
        raise ValueError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --explain; add --explain")
    if args.explain_out is not None and not args.explain_out.lower().endswith(EXPLAIN_FORMATS):
        raise ValueError(f"--explain-out {args.explain_out!r} must end in .html or .png")
    if args.explain_out is not None:
        from kmlm.figures import require_output_folder

        require_output_folder(args.explain_out)


def _explainer(tasker, args):
    """The `Explainer` of --explain (one line when the model is not a classifier)."""
    from kmlm.tasks.explain import Explainer

    explainer = Explainer(tasker, baseline=args.baseline or "mask", steps=args.ig_steps or 50)
    if args.target is not None:
        explainer.label_index(args.target)  # checked before any prediction runs
    return explainer


def _explain(explainer, results, args):
    """Adds each result's attribution (for its label, or --target) and writes --explain-out."""
    from kmlm.files import write_text_atomically
    from kmlm.tasks.explain import highlight_html, plot_highlight

    pairs = args.pair if explainer.tasker.info.task == "pair" else [None] * len(results)
    attributions = [explainer(result["text"], pair, target=args.target) for result, pair in zip(results, pairs)]
    for result, attribution in zip(results, attributions):
        result["attribution"] = attribution.to_dict()
    if args.explain_out is None:
        return
    if args.explain_out.lower().endswith(".png"):
        plot_highlight(attributions, args.explain_out)
    else:
        write_text_atomically(args.explain_out, highlight_html(attributions))
    print(f"wrote the attributions to {args.explain_out}", file=sys.stderr)


def _predict_answers(tasker, args):
    """`kmlm predict` of a qa model: one answer per --question."""
    if args.texts:
        raise ValueError("a qa model reads --question Q --context C, not TEXT arguments")
    if not args.question or not args.context:
        raise ValueError("a qa model needs --question Q and --context C")
    contexts = args.context * len(args.question) if len(args.context) == 1 else args.context
    if len(contexts) != len(args.question):
        raise ValueError(f"{len(args.context)} --context for {len(args.question)} --question; give one context, "
                         "or one per question")
    results = []
    for question, context, found in zip(args.question, contexts, tasker.answers(args.question, contexts)):
        results.append({"question": question, "answer": found["answer"], "start": found["start"], "end": found["end"],
                        "score": found["score"]})
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
        return
    for result in results:
        span = f"[{result['start']}, {result['end']})" if result["start"] >= 0 else "(no answer)"
        print(f"{result['answer']}\t{span}\t{result['score']:.4f}\t{result['question']}")


def _embed(args):
    """Runs `kmlm embed`."""
    import numpy as np

    from kmlm.tasks.embed import load_sentence_embedder, nearest

    if not args.out and not args.query:
        raise ValueError("nothing to do: pass --out vectors.npy and/or --query TEXT")
    try:
        with open(args.input, encoding="utf-8", errors="replace") as f:
            sentences = [line.strip() for line in f if line.strip()]
    except IsADirectoryError:
        raise IsADirectoryError(f"--input {args.input!r} is a directory; pass a text file") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"--input {args.input!r} does not exist") from None
    if not sentences:
        raise ValueError(f"--input {args.input!r} has no non-blank lines")
    embedder = load_sentence_embedder(args.model_dir, pooling=args.pooling, seq_len=args.seq_len)
    vectors = embedder.embed(sentences, batch_size=args.batch_size)
    if args.out:
        np.save(args.out, vectors.astype(np.float32))
        print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} vectors to {args.out}")
    if args.query:
        answers = nearest(embedder.embed(args.query, batch_size=args.batch_size), vectors, args.top_n)
        results = [{"query": q, "neighbours": [{"line": sentences[i], "index": int(i), "cosine": float(c)}
                                               for i, c in found]} for q, found in zip(args.query, answers)]
        if args.json:
            print(json.dumps(results, ensure_ascii=False, indent=2))
            return
        for result in results:
            print(f"{result['query']}")
            for neighbour in result["neighbours"]:
                print(f"  {neighbour['cosine']:.4f}  {neighbour['line']}")


# Subcommand name -> the function that adds it, in the group's order.
COMMANDS = {"finetune": add_finetune_command, "predict": add_predict_command, "embed": add_embed_command}

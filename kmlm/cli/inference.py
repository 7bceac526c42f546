"""`kmlm fill-mask`, `kmlm score` and `kmlm generate`: use a run's masked LM head;
`kmlm attention`: the attention maps of a run or a fine-tuned model.

TensorFlow-heavy modules are imported inside the command functions, so `kmlm --help` stays fast.
"""

import json
import os
import sys

from kmlm.cli.options import RUN_DIR_HELP, add_command, add_subcommands, positive_int


def add_commands(commands, names=None):
    """Adds the subcommands fill-mask, score, generate and attention (or only those in `names`) to `commands`."""
    add_subcommands(commands, COMMANDS, names)


def add_fill_mask_command(commands):
    """Adds `kmlm fill-mask`."""
    fm = add_command(commands, "fill-mask", help="predict the tokens behind [MASK]",
                     description="Print the top-k predictions for every [MASK] in each TEXT.")
    fm.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    fm.add_argument("texts", metavar="TEXT", nargs="+", help="text with one or more [MASK]")
    fm.add_argument("--top-k", type=positive_int, default=5, help="predictions per [MASK]")
    fm.add_argument("--json", action="store_true", help="print the predictions as JSON")
    fm.set_defaults(run=_fill_mask)


def add_score_command(commands):
    """Adds `kmlm score`."""
    score = add_command(
        commands, "score", help="pseudo-perplexity of sentences",
        description="Score each line of FILE by its pseudo-log-likelihood: every token is masked in turn and "
                    "the model's log-probability of the true token is summed (masked copies run in batches). "
                    "Prints the pseudo-perplexity exp(-PLL / tokens) of each sentence and of the whole file.")
    score.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with an MLM head")
    score.add_argument("--input", required=True, metavar="FILE", help="UTF-8 text, one sentence per line ('-': stdin)")
    score.add_argument("--batch-size", type=positive_int, default=64, help="masked copies per model call")
    score.add_argument("--json", action="store_true", help="print per-token log-probabilities as JSON")
    score.set_defaults(run=_score)


def add_generate_command(commands):
    """Adds `kmlm generate`."""
    gen = add_command(
        commands, "generate", help="generate text by iterative mask filling",
        description="Append --length [MASK] tokens to the seed text (a [MASK] inside it is filled too) and fill "
                    "them. mask-predict: predict all, then re-mask the least confident tokens on a linear "
                    "schedule for --iterations rounds. gibbs: fill left to right, then resample one position "
                    "at a time for --iterations sweeps, the first --burn-in of them from the whole "
                    "distribution. Special tokens are never produced; --seed makes the output repeatable.")
    gen.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with an MLM head")
    gen.add_argument("seed_text", metavar="SEED_TEXT", help="text to continue (may be empty or contain [MASK])")
    gen.add_argument("--length", type=positive_int, default=16, help="tokens to generate")
    gen.add_argument("--method", choices=("mask-predict", "gibbs"), default="mask-predict", help="filling method")
    gen.add_argument("--iterations", type=positive_int, default=None,
                     help="mask-predict rounds (default 10) or gibbs sweeps (default 4)")
    gen.add_argument("--burn-in", type=int, default=None, help="gibbs sweeps before top-k applies (default: half)")
    gen.add_argument("--top-k", type=int, default=10, help="draw among the k most likely tokens (0: all)")
    gen.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0: most likely token)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.set_defaults(run=_generate)


def add_attention_command(commands):
    """Adds `kmlm attention`."""
    at = add_command(
        commands, "attention", help="attention maps of a text, per layer and head",
        description="Run TEXT (and --pair, a second text) through the encoder of a pretrained run or a fine-tuned "
                    "model (a directory with task.json) and show how much each token attends to every other: "
                    "attention[layer][head][query][key], the softmax probabilities of each head, numbered from 0; "
                    "each query's row sums to 1. Prints each query token's --top most attended tokens per map; "
                    "--json prints the whole matrices; --out writes them as a grid of labelled heat maps.")
    at.add_argument("model_dir", metavar="DIR", help="a run directory, or a directory written by `kmlm finetune`")
    at.add_argument("text", metavar="TEXT", nargs="?", default=None, help="the text to look inside")
    at.add_argument("--text", dest="text_option", metavar="TEXT", default=None, help="the text (instead of TEXT)")
    at.add_argument("--pair", metavar="TEXT", default=None, help="a second text ([CLS] TEXT [SEP] PAIR [SEP])")
    at.add_argument("--layer", type=int, default=None, help="show only this layer (default: every layer)")
    at.add_argument("--head", type=int, default=None, help="show only this head (default: every head)")
    at.add_argument("--top", type=positive_int, default=3, help="attended tokens printed per query token")
    at.add_argument("--out", "--plot", dest="out", metavar="PNG", default=None, help="write the heat maps to this PNG")
    at.add_argument("--json", action="store_true", help="print the tokens and the attention matrices as JSON")
    at.set_defaults(run=_attention)


def _load_masked_lm(run_dir, command):
    """The run in `run_dir`, which must have an MLM head for `command`."""
    from kmlm.run_directory import load_run

    run = load_run(run_dir)
    run.require_masked_lm_head(command)
    return run


def _fill_mask(args):
    """Runs `kmlm fill-mask`."""
    from kmlm.inference.fill_mask import FillMask

    run = _load_masked_lm(args.run_dir, "fill-mask")
    predictor = FillMask(run.model, run.vocabulary, lowercase=run.config.data.lowercase,
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


def _read_sentences(path):
    """The non-blank lines of `path` ('-': stdin), stripped; at least one."""
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise ValueError(f"--input {path!r} has no non-blank lines to score")
    return sentences


def _score(args):
    """Runs `kmlm score`."""
    from kmlm.inference.pseudo_perplexity import PseudoLikelihoodScorer, corpus_pseudo_perplexity

    sentences = _read_sentences(args.input)
    run = _load_masked_lm(args.run_dir, "score")
    scorer = PseudoLikelihoodScorer(run.model, run.vocabulary, lowercase=run.config.data.lowercase,
                                    max_length=run.model_config.max_position, batch_size=args.batch_size)
    scores = scorer.score(sentences)
    total = corpus_pseudo_perplexity(scores)
    if args.json:
        print(json.dumps({"sentences": [s.to_dict() for s in scores], "pseudo_perplexity": total,
                          "tokens": sum(len(s.tokens) for s in scores)}, indent=2, ensure_ascii=False))
        return
    for s in scores:
        print(f"{s.pseudo_perplexity:10.2f}  PLL {s.pseudo_log_likelihood:9.2f}  {len(s.tokens):4d} tokens  {s.text}")
    print(f"pseudo-perplexity {total:.2f} over {sum(len(s.tokens) for s in scores)} tokens in {len(scores)} sentences")


def _generate(args):
    """Runs `kmlm generate`."""
    from kmlm.inference.generation import MaskFillingGenerator

    run = _load_masked_lm(args.run_dir, "generate")
    generator = MaskFillingGenerator(run.model, run.vocabulary, lowercase=run.config.data.lowercase,
                                     max_length=run.model_config.max_position)
    result = generator.generate(args.seed_text, args.length, method=args.method, iterations=args.iterations,
                                top_k=args.top_k, temperature=args.temperature, seed=args.seed,
                                burn_in=args.burn_in)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(result.text)


def _attention_text(args):
    """TEXT or --text (one of them)."""
    if args.text is not None and args.text_option is not None:
        raise ValueError("give the text once: as TEXT or as --text, not both")
    text = args.text if args.text is not None else args.text_option
    if text is None:
        raise ValueError("no TEXT given; pass the text to look inside")
    return text


def _attention_reader(path):
    """An `AttentionReader` of the fine-tuned model in `path` (it has task.json) or of the
    pretrained run there, tokenizing as the model was trained."""
    from kmlm.inference.attention import AttentionReader
    from kmlm.tasks.finetune import TASK_FILE, Tasker

    if os.path.isfile(os.path.join(path, TASK_FILE)):
        tasker = Tasker.load(path)
        return AttentionReader(tasker.model, tasker.vocabulary, lowercase=tasker.info.lowercase)
    from kmlm.run_directory import load_run

    run = load_run(path)
    return AttentionReader(run.model, run.vocabulary, lowercase=run.config.data.lowercase)


def _attention(args):
    """Runs `kmlm attention`."""
    from kmlm.inference.attention import most_attended, plot_attention

    text = _attention_text(args)
    if args.out:
        from kmlm.figures import require_output_folder

        require_output_folder(args.out)
    reader = _attention_reader(args.model_dir)
    maps = reader(text, args.pair)
    selected = maps.select(args.layer, args.head)  # checks --layer and --head before any output
    drawn = plot_attention(maps, args.out, args.layer, args.head) if args.out else 0
    wrote = f"wrote {drawn} attention maps to {args.out}" if args.out else None
    if args.json:
        print(json.dumps(maps.to_dict(args.layer, args.head), ensure_ascii=False))
        if wrote:
            print(wrote, file=sys.stderr)
        return
    print(" ".join(f"{i}:{token}" for i, token in enumerate(maps.tokens)))
    width = max(len(token) for token in maps.tokens)
    for layer, head, matrix in selected:
        print(f"layer {layer}, head {head} (query -> most attended keys)")
        for query, keys in most_attended(maps.tokens, matrix, args.top):
            shown = "  ".join(f"{token} {p:.2f}" for _, token, p in keys)
            print(f"  {query:>{width}} -> {shown}")
    if wrote:
        print(wrote)


# Subcommand name -> the function that adds it, in the group's order.
COMMANDS = {"fill-mask": add_fill_mask_command, "score": add_score_command, "generate": add_generate_command,
            "attention": add_attention_command}

"""CLI commands for BERT compatibility: convert, score, generate."""

import json
import sys
import time


def add_commands(commands, formatter_class):
    """Adds the BERT-compatibility subcommands to the `kmlm` argument parser."""
    from kmlm.cli.main import _positive_int

    conv = commands.add_parser(
        "convert", help="import a Hugging Face BERT checkpoint", formatter_class=formatter_class,
        description="Convert a Hugging Face BERT directory (config.json, model.safetensors, vocab.txt; "
                    "safetensors only, never pickled .bin files) into a kmlm run directory: encoder, MLM head "
                    "and [CLS] pooler when the checkpoint has them. The result works with fill-mask (MLM head "
                    "needed), evaluate, score, generate, export and fine-tuning.")
    conv.add_argument("hf_dir", metavar="HF_DIR", help="Hugging Face model directory")
    conv.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write (new or empty)")
    conv.add_argument("--seq-len", type=_positive_int, default=128,
                      help="default sequence length recorded for evaluate and export")
    conv.set_defaults(run=_convert)

    score = commands.add_parser(
        "score", help="pseudo-perplexity of sentences", formatter_class=formatter_class,
        description="Score each line of FILE by its pseudo-log-likelihood: every token is masked in turn and "
                    "the model's log-probability of the true token is summed (masked copies run in batches). "
                    "Prints the pseudo-perplexity exp(-PLL / tokens) of each sentence and of the whole file.")
    score.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with an MLM head")
    score.add_argument("--input", required=True, metavar="FILE", help="UTF-8 text, one sentence per line ('-': stdin)")
    score.add_argument("--batch-size", type=_positive_int, default=64, help="masked copies per model call")
    score.add_argument("--json", action="store_true", help="print per-token log-probabilities as JSON")
    score.set_defaults(run=_score)

    gen = commands.add_parser(
        "generate", help="generate text by iterative mask filling", formatter_class=formatter_class,
        description="Append --length [MASK] tokens to the seed text (a [MASK] inside it is filled too) and fill "
                    "them. mask-predict: predict all, then re-mask the least confident tokens on a linear "
                    "schedule for --iterations rounds. gibbs: fill left to right, then resample one position "
                    "at a time for --iterations sweeps, the first --burn-in of them from the whole "
                    "distribution. Special tokens are never produced; --seed makes the output repeatable.")
    gen.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with an MLM head")
    gen.add_argument("seed_text", metavar="SEED_TEXT", help="text to continue (may be empty or contain [MASK])")
    gen.add_argument("--length", type=_positive_int, default=16, help="tokens to generate")
    gen.add_argument("--method", choices=("mask-predict", "gibbs"), default="mask-predict", help="filling method")
    gen.add_argument("--iterations", type=_positive_int, default=None,
                     help="mask-predict rounds (default 10) or gibbs sweeps (default 4)")
    gen.add_argument("--burn-in", type=int, default=None, help="gibbs sweeps before top-k applies (default: half)")
    gen.add_argument("--top-k", type=int, default=10, help="draw among the k most likely tokens (0: all)")
    gen.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0: most likely token)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.set_defaults(run=_generate)


def _convert(args):
    from kmlm.interop.huggingface import convert_checkpoint

    start = time.time()
    convert_checkpoint(args.hf_dir, args.out, seq_len=args.seq_len)
    print(f"done in {time.time() - start:.1f}s")


def _load_masked_lm(run_dir, command):
    from kmlm.run_directory import load_run

    run = load_run(run_dir)
    run.require_masked_lm_head(command)
    return run


def _read_sentences(path):
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
    from kmlm.inference.pseudo_perplexity import PseudoLikelihoodScorer, corpus_pseudo_perplexity

    sentences = _read_sentences(args.input)
    run = _load_masked_lm(args.run_dir, "score")
    scorer = PseudoLikelihoodScorer(run.model, run.vocabulary, lowercase=run.data.get("lowercase", True),
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
    from kmlm.inference.generation import MaskFillingGenerator

    run = _load_masked_lm(args.run_dir, "generate")
    generator = MaskFillingGenerator(run.model, run.vocabulary, lowercase=run.data.get("lowercase", True),
                                     max_length=run.model_config.max_position)
    result = generator.generate(args.seed_text, args.length, method=args.method, iterations=args.iterations,
                                top_k=args.top_k, temperature=args.temperature, seed=args.seed,
                                burn_in=args.burn_in)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(result.text)

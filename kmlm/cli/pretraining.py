"""`kmlm vocab`, `kmlm pretrain`, `kmlm evaluate` and `kmlm distill`: learn a vocabulary, pretrain a
masked language model into a run directory, evaluate a run, and distil one into a smaller one.

TensorFlow-heavy modules are imported inside the command functions, so `kmlm --help` stays fast.
"""

import argparse
import json
import os
import time

from kmlm.cli.options import (
    RUN_DIR_HELP,
    add_cased_option,
    add_command,
    add_corpus_option,
    add_one_per_line_option,
    add_quiet_option,
    add_subcommands,
    positive_float,
    positive_int,
)
from kmlm.pretraining.recipe import (
    ADAM_BETA2,
    ADAM_EPSILON,
    BATCH_SIZE,
    CLIP_NORM,
    DECAY,
    LARGER_PRESET_LEARNING_RATE,
    LARGER_PRESET_WARMUP,
    LEARNING_RATES,
    MASK_RATE,
    PRETRAINING_MODEL,
    SEQ_LEN,
    WARMUPS,
)

STRATEGIES = ("default", "mirrored", "multi-worker", "tpu")
SCHEDULES = ("linear", "cosine", "constant")
MODEL_SIZE_OVERRIDES = (("--num-layers", "encoder blocks"), ("--hidden-dim", "hidden size"),
                        ("--num-heads", "attention heads"), ("--intermediate-dim", "feed-forward width"))


def add_commands(commands, names=None):
    """Adds the subcommands vocab, pretrain, evaluate and distill (or only those in `names`) to `commands`."""
    add_subcommands(commands, COMMANDS, names)


def add_vocab_command(commands):
    """Adds `kmlm vocab`."""
    vocab = add_command(commands, "vocab", help="learn a WordPiece vocabulary",
                        description="Learn a WordPiece vocabulary ([PAD] [UNK] [CLS] [SEP] [MASK] first) "
                                    "from a corpus.")
    add_corpus_option(vocab)
    vocab.add_argument("--size", type=positive_int, default=8192, help="vocabulary size, special tokens included")
    vocab.add_argument("--out", required=True, help="vocabulary file to write (one token per line)")
    vocab.add_argument("--method", choices=("fast", "keras-nlp"), default="fast",
                       help="fast: Rust WordPiece trainer (tokenizers); keras-nlp: keras-hub's learner (slow)")
    add_one_per_line_option(vocab)
    add_cased_option(vocab)
    vocab.set_defaults(run=_vocab)


def add_pretrain_command(commands):
    """Adds `kmlm pretrain`; its options, in the order `--help` lists them, by group."""
    pre = add_command(commands, "pretrain", help="pretrain a masked language model",
                      description="Pretrain a BERT-style encoder with on-the-fly masking; writes a run directory "
                                  "(config.json, vocab.txt, checkpoints, model.keras, metrics.csv, logs/, curves.png). "
                                  "Re-running the same command after a kill resumes the run.")
    add_corpus_option(pre)
    add_one_per_line_option(pre)
    _add_model_size_options(pre)
    _add_row_and_masking_options(pre)
    _add_vocabulary_options(pre)
    _add_optimisation_options(pre)
    _add_evaluation_options(pre)
    _add_distribution_options(pre)
    _add_run_options(pre)
    pre.set_defaults(run=_pretrain)


def _add_model_size_options(parser):
    """Model size: a preset, overrides of its dimensions, its dropout and LayerNorm placement."""
    parser.add_argument("--preset", default="mini", help="model size: tiny, mini, small, medium, base, large")
    for flag, meaning in MODEL_SIZE_OVERRIDES:
        parser.add_argument(flag, type=positive_int, default=None, help=f"override the preset's {meaning}")
    parser.add_argument("--dropout", type=float, default=None, metavar="RATE",
                        help=f"dropout of the embeddings, feed-forward and attention weights, in [0, 1) "
                             f"(default {PRETRAINING_MODEL['dropout']:g} in pretraining; fine-tuning keeps the run's)")
    parser.add_argument("--norm", choices=("post", "pre"), default=None,
                        help="LayerNorm placement: pre, before each sublayer, or post, after each residual sum "
                             f"as in BERT (default {'pre' if PRETRAINING_MODEL['norm_first'] else 'post'})")
    parser.add_argument("--positions", choices=("document", "row"), default=None,
                        help="position embeddings counted from the start of each packed document, or from the "
                             "start of the row as in BERT (default "
                             f"{'document' if PRETRAINING_MODEL['document_positions'] else 'row'}; the same for "
                             "a single document)")


def _add_length_options(parser):
    """--steps or --time-budget: how long a run trains."""
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, default=None,
                        help="training steps (default 1000; rounded up to whole epochs)")
    length.add_argument("--time-budget", type=positive_float, default=None, metavar="MINUTES",
                        help="train for this many minutes of wall-clock time instead of a step count: the "
                             "learning-rate schedule follows the time and ends at 0 when it is spent (start-up, "
                             "vocabulary and final evaluation are outside it); a re-run resumes with the time "
                             "already spent")


def _add_row_and_masking_options(parser):
    """Steps, the [B, S] shape of a batch, and what is masked."""
    _add_length_options(parser)
    parser.add_argument("--seq-len", type=positive_int, default=SEQ_LEN, help="tokens per row S")
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help="rows per batch B")
    parser.add_argument("--masking", choices=("token", "whole_word", "span"), default="token",
                        help="masking strategy")
    parser.add_argument("--mask-rate", type=float, default=MASK_RATE, help="fraction of tokens to predict, in (0, 1)")
    parser.add_argument("--segmenter", choices=("none", "jieba"), default="none",
                        help="Chinese word segmenter for --masking whole_word/span: the characters of a jieba "
                             "word are masked together (Chinese BERT-wwm); tokens stay single characters")


def _add_vocabulary_options(parser):
    """The vocabulary (given or learned), case, and packing of documents into rows."""
    parser.add_argument("--vocab", default=None, help="existing vocabulary file (default: learn one from the corpus)")
    parser.add_argument("--vocab-size", type=positive_int, default=8192, help="size of the vocabulary to learn")
    parser.add_argument("--vocab-method", choices=("fast", "keras-nlp"), default="fast", help="vocabulary learner")
    add_cased_option(parser)
    parser.add_argument("--no-packing", action="store_true", help="one document per padded row instead of packing")


def _add_optimisation_options(parser):
    """The optimizer, precision, XLA and the seed."""
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak learning rate (default per preset: "
                             + ", ".join(f"{name} {rate:g}" for name, rate in LEARNING_RATES.items())
                             + f", larger {LARGER_PRESET_LEARNING_RATE:g})")
    parser.add_argument("--schedule", dest="lr_schedule", choices=SCHEDULES, default="linear",
                        help="learning rate after the warmup: linear or cosine fall to 0 at the end of the run "
                             "(its steps or its --time-budget), or constant")
    parser.add_argument("--warmup", type=float, default=None, metavar="SHARE",
                        help="linear warmup over this share of the run (steps or time), in [0, 1) (default per "
                             "preset: " + ", ".join(f"{name} {share:g}" for name, share in WARMUPS.items())
                             + f", larger {LARGER_PRESET_WARMUP:g})")
    parser.add_argument("--decay", type=float, default=None, metavar="SHARE",
                        help="the linear or cosine fall takes only the last SHARE of the run, in (0, 1], the rate "
                             f"holding at its peak after the warmup until then (default {DECAY:g}; 1: the fall "
                             "takes all of the run after the warmup)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="linear warmup over this many steps instead (with --steps only)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    parser.add_argument("--clip-norm", type=float, default=CLIP_NORM,
                        help="clip the gradient to this global norm (0: no clipping)")
    parser.add_argument("--adam-beta2", type=float, default=ADAM_BETA2, help="AdamW's second-moment decay beta_2")
    parser.add_argument("--adam-epsilon", type=float, default=ADAM_EPSILON, help="AdamW's epsilon")
    parser.add_argument("--precision", choices=("float32", "mixed_float16", "mixed_bfloat16"), default="float32",
                        help="compute precision (softmax, LayerNorm and loss stay float32)")
    parser.add_argument("--no-jit", action="store_true", help="do not XLA-compile the train step")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and masking")
    parser.add_argument("--deterministic", action="store_true",
                        help="make every TensorFlow op deterministic (tf.config.experimental.enable_op_determinism) "
                             "so that the same seed gives the same run on any device; Keras then runs the step "
                             "without XLA (as --no-jit does). CPU runs are reproducible without it")


def _add_evaluation_options(parser):
    """Held-out evaluation and the epochs that metrics.csv and checkpoints follow."""
    parser.add_argument("--eval-batches", type=int, default=4, help="held-out batches evaluated after every epoch")
    parser.add_argument("--log-points", type=positive_int, default=20,
                        help="epochs the run is split into (metrics.csv rows, checkpoints)")


def _add_distribution_options(parser):
    """tf.distribute strategy and tf.data service."""
    parser.add_argument("--strategy", dest="distribution", choices=STRATEGIES, default="default",
                        help="tf.distribute strategy: default (one device), mirrored (all local GPUs), multi-worker "
                             "(MultiWorkerMirroredStrategy over the hosts in TF_CONFIG; needs --vocab), tpu")
    parser.add_argument("--distribution", dest="distribution", choices=STRATEGIES,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # the flag's name before --strategy
    parser.add_argument("--data-service", metavar="ADDRESS", default=None,
                        help="run the input pipeline on a tf.data service dispatcher (grpc://host:port) and its "
                             "workers, for when the host CPU cannot feed the accelerators")


def _add_run_options(parser):
    """The objective, the starting embeddings and the run directory to write."""
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--init-embeddings", metavar="VECTORS", default=None,
                        help="initialise the token embeddings from a word2vec/GloVe text file "
                             "(whole-word tokens; a linear map when sizes differ)")
    parser.add_argument("--objective", choices=("mlm", "mlm+nsp", "mlm+sop"), default="mlm",
                        help="pretraining objective: masked LM alone, or jointly with next-sentence (nsp) or "
                             "sentence-order (sop) prediction on sentence pairs (one device)")
    parser.add_argument("--out", required=True, help="run directory to write")
    add_quiet_option(parser)


def add_evaluate_command(commands):
    """Adds `kmlm evaluate`."""
    ev = add_command(commands, "evaluate", help="masked accuracy, loss and perplexity of a run",
                     description="Evaluate a run on the held-out split of its corpus (or on all of --corpus) "
                                 "with fixed-seed masking, so numbers compare across runs.")
    ev.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    ev.add_argument("--corpus", default=None, help="evaluate on all of this corpus instead of the held-out split")
    ev.add_argument("--max-batches", type=positive_int, default=None, help="stop after this many batches")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.set_defaults(run=_evaluate)


def add_distill_command(commands):
    """Adds `kmlm distill`."""
    dis = add_command(commands, "distill", help="distil a pretrained run into a smaller student",
                      description="Train a smaller student on a pretrained teacher's masked-LM distributions: at "
                                  "every masked slot, alpha x T^2 x KL(teacher/T || student/T) plus (1 - alpha) x "
                                  "the cross-entropy of the true token. The student reads the teacher's corpus, "
                                  "vocabulary, rows and masking (the pipeline of `kmlm pretrain`) and is written as "
                                  "an ordinary run directory. Without --preset the student is the teacher with half "
                                  "its layers, started from the teacher's embeddings, MLM head and every other block "
                                  "(as DistilBERT); a student of another width starts from random weights. "
                                  "Re-running the same command after a kill resumes.")
    dis.add_argument("teacher", metavar="TEACHER_RUN", help="the teacher: " + RUN_DIR_HELP)
    dis.add_argument("--corpus", default=None,
                     help="text to distil on: a file, directory or glob of UTF-8 text, tfds:NAME[...] or "
                          "builtin:python-docs (default: the teacher's corpus, whose held-out split stays held out)")
    _add_model_size_options(dis)
    dis.set_defaults(preset=None)  # None: the teacher's width with half its layers
    dis.add_argument("--no-init-from-teacher", dest="init_from_teacher", action="store_false",
                     help="start the student from random weights even when it has the teacher's width (default: "
                          "the teacher's embeddings, MLM head and every k-th block)")
    dis.add_argument("--temperature", type=float, default=2.0,
                     help="temperature T of the teacher's and student's distributions, > 0 (default 2)")
    dis.add_argument("--alpha", type=float, default=0.5,
                     help="weight of the teacher's soft targets in [0, 1]; 1 - alpha weighs the true tokens "
                          "(default 0.5)")
    _add_length_options(dis)
    dis.add_argument("--seq-len", type=positive_int, default=None, help="tokens per row S (default: the teacher's)")
    dis.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, help="rows per batch B")
    _add_optimisation_options(dis)
    _add_evaluation_options(dis)
    dis.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    dis.add_argument("--out", required=True, help="run directory of the student to write")
    add_quiet_option(dis)
    dis.set_defaults(run=_distill)


def _vocab(args):
    """Runs `kmlm vocab`."""
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


def _pretrain_settings(args):
    """The `PretrainSettings` of a `kmlm pretrain` command line, validated."""
    from kmlm.pretraining.settings import PretrainSettings

    settings = PretrainSettings(
        corpus=args.corpus, one_per_line=args.one_per_line, preset=args.preset, steps=args.steps,
        seq_len=args.seq_len, batch_size=args.batch_size, masking=args.masking, mask_rate=args.mask_rate,
        segmenter=None if args.segmenter == "none" else args.segmenter,
        vocab=args.vocab, vocab_size=args.vocab_size, vocab_method=args.vocab_method, lowercase=not args.cased,
        packing=not args.no_packing, learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
        warmup=args.warmup, lr_schedule=args.lr_schedule, decay=args.decay, time_budget=args.time_budget,
        weight_decay=args.weight_decay, clip_norm=args.clip_norm, adam_beta2=args.adam_beta2,
        adam_epsilon=args.adam_epsilon, precision=args.precision,
        jit_compile=not (args.no_jit or args.deterministic), seed=args.seed,
        eval_batches=args.eval_batches, log_points=args.log_points, distribution=args.distribution,
        data_service=args.data_service, init_embeddings=args.init_embeddings, objective=args.objective,
        model_overrides=model_overrides(args),
    )
    settings.validate()
    return settings


def _pretrain(args):
    """Runs `kmlm pretrain`."""
    from kmlm.pretraining.job import pretrain, remove_run
    from kmlm.run_directory import MODEL_FILE
    from kmlm.training import enable_determinism

    settings = _pretrain_settings(args)
    if args.deterministic:
        enable_determinism()
    if args.overwrite and os.path.isfile(os.path.join(args.out, MODEL_FILE)):
        remove_run(args.out)
    start = time.time()
    metrics = pretrain(args.out, settings, verbose=0 if args.quiet else "auto")
    if not metrics:  # a non-chief worker of --strategy multi-worker
        print(f"worker finished its {settings.total_steps} steps; the chief worker wrote the run directory {args.out}")
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
    """Runs `kmlm evaluate`."""
    from kmlm.pretraining.evaluation import eval_dataset, evaluate_masked_lm
    from kmlm.run_directory import load_run

    run = load_run(args.run_dir)
    run.require_masked_lm_head("evaluate")
    dataset = eval_dataset(run.config.data, run.vocabulary, corpus=args.corpus)
    metrics = evaluate_masked_lm(run.model, dataset, max_batches=args.max_batches, verbose=0 if args.json else 1)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(
            f"masked_accuracy {metrics['masked_accuracy']:.4f}  loss {metrics['loss']:.4f}  "
            f"perplexity {metrics['perplexity']:.2f}  ({metrics['masked_tokens']} masked tokens, "
            f"{metrics['batches']} batches)"
        )


def _distill(args):
    """Runs `kmlm distill`."""
    from kmlm.pretraining.distill import DistillSettings, distill
    from kmlm.pretraining.job import remove_run
    from kmlm.run_directory import MODEL_FILE
    from kmlm.training import enable_determinism

    settings = DistillSettings.from_teacher(
        args.teacher, corpus=args.corpus, preset=args.preset, steps=args.steps, time_budget=args.time_budget,
        seq_len=args.seq_len, batch_size=args.batch_size, temperature=args.temperature, alpha=args.alpha,
        learning_rate=args.learning_rate, warmup_steps=args.warmup_steps, warmup=args.warmup,
        lr_schedule=args.lr_schedule, decay=args.decay, weight_decay=args.weight_decay, clip_norm=args.clip_norm,
        adam_beta2=args.adam_beta2, adam_epsilon=args.adam_epsilon, precision=args.precision,
        jit_compile=not (args.no_jit or args.deterministic), seed=args.seed, eval_batches=args.eval_batches,
        log_points=args.log_points, model_overrides=model_overrides(args), init_from_teacher=args.init_from_teacher,
    )
    settings.validate()
    if args.deterministic:
        enable_determinism()
    if args.overwrite and os.path.isfile(os.path.join(args.out, MODEL_FILE)):
        remove_run(args.out)
    print(settings.describe_start(), flush=True)
    start = time.time()
    metrics = distill(args.out, settings, verbose=0 if args.quiet else "auto")
    print(
        f"student held-out masked accuracy {metrics['masked_accuracy']:.4f}, loss {metrics['loss']:.4f}, "
        f"perplexity {metrics['perplexity']:.2f} ({metrics['masked_tokens']} masked tokens); "
        f"{(time.time() - start) / 60:.1f} min; run directory {args.out}"
    )


# Subcommand name -> the function that adds it, in the group's order.
COMMANDS = {"vocab": add_vocab_command, "pretrain": add_pretrain_command, "evaluate": add_evaluate_command,
            "distill": add_distill_command}


def model_overrides(args):
    """The ModelConfig fields the command line sets (the preset keeps the rest)."""
    overrides = {
        key: getattr(args, key)
        for key in ("num_layers", "hidden_dim", "num_heads", "intermediate_dim")
        if getattr(args, key) is not None
    }
    if args.dropout is not None:
        overrides.update(dropout=args.dropout, attention_dropout=args.dropout)
    if args.norm is not None:
        overrides["norm_first"] = args.norm == "pre"
    if args.positions is not None:
        overrides["document_positions"] = args.positions == "document"
    return overrides

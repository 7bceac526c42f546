"""`kmlm convert`: import a Hugging Face BERT, DistilBERT, RoBERTa, ALBERT or ELECTRA checkpoint
as a kmlm run directory.

TensorFlow-heavy modules are imported inside the command function, so `kmlm --help` stays fast.
"""

import time

from kmlm.cli.options import add_command, add_subcommands, positive_int


def add_commands(commands, names=None):
    """Adds the subcommand convert (or only those in `names`) to `commands`."""
    add_subcommands(commands, COMMANDS, names)


def add_convert_command(commands):
    """Adds `kmlm convert`."""
    conv = add_command(
        commands, "convert", help="import a Hugging Face BERT, DistilBERT, RoBERTa, ALBERT or ELECTRA checkpoint",
        description="Convert a Hugging Face directory (config.json, model.safetensors and the tokenizer files: "
                    "vocab.txt for BERT, DistilBERT and ELECTRA, vocab.json + merges.txt or tokenizer.json "
                    "for RoBERTa, spiece.model for ALBERT; safetensors only, never pickled .bin files) into a kmlm run "
                    "directory: encoder, MLM head "
                    "and [CLS] pooler when the checkpoint has them. The result works with fill-mask (MLM head "
                    "needed), evaluate, score, generate, embed and fine-tuning; export --format huggingface "
                    "writes each family back (DistilBERT as BERT).")
    conv.add_argument("hf_dir", metavar="HF_DIR", help="Hugging Face model directory")
    conv.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write (new or empty)")
    conv.add_argument("--seq-len", type=positive_int, default=128,
                      help="default sequence length recorded for evaluate and export")
    conv.set_defaults(run=_convert)


def _convert(args):
    """Runs `kmlm convert`."""
    from kmlm.interop.huggingface import convert_checkpoint

    start = time.time()
    convert_checkpoint(args.hf_dir, args.out, seq_len=args.seq_len)
    print(f"done in {time.time() - start:.1f}s")


# Subcommand name -> the function that adds it.
COMMANDS = {"convert": add_convert_command}

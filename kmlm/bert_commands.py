"""CLI commands for BERT compatibility: convert, score, generate."""


def add_commands(commands, formatter_class):
    """Adds the BERT-compatibility subcommands to the `kmlm` argument parser."""

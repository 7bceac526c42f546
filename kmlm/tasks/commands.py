"""CLI commands of the downstream tasks: finetune, predict, embed."""


def add_commands(commands, formatter_class):
    """Adds the task subcommands to the `kmlm` argument parser."""

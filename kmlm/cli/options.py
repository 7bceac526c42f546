"""Argparse pieces shared by every `kmlm` command group: the help formatter, the parser that
reports a bad command line in one line, argument types and the options several commands take."""

import argparse
import math

CORPUS_HELP = (
    "text corpus: a file, directory or glob of UTF-8 .txt/.gz files (documents separated by "
    "blank lines), tfds:NAME[/CONFIG][:SPLIT][:FEATURE], or builtin:python-docs "
    "(default: builtin:python-docs, offline)"
)
RUN_DIR_HELP = "a directory written by `kmlm pretrain`"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps the line breaks of a command's description.

    An option whose help already says its default, or whose default is None (the help says
    what happens without it) or False (a switch), gets no "(default: ...)" of its own.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False) or "default" in text:
            return text
        return super()._get_help_string(action)


class OneLineErrorParser(argparse.ArgumentParser):
    """Reports a bad command line in one line (argparse alone prints the usage too)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def positive_int(text):
    """Argument type: an integer >= 1, e.g. `--steps 1000`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def positive_float(text):
    """Argument type: a finite number > 0, e.g. `--time-budget 8`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def add_command(commands, name, *, help, description):
    """Adds the subcommand `name` to the `kmlm` subparsers `commands`; returns its parser."""
    return commands.add_parser(name, help=help, formatter_class=HelpFormatter, description=description)


def add_subcommands(commands, adders, names=None):
    """Calls `adders[name](commands)` for each of `names` (default: every adder, in order).

    Args:
        commands: the subparsers action of the `kmlm` parser.
        adders: a command group's dict from subcommand name to the function that adds it.
        names: the subcommands to add; an unknown name raises ValueError.
    """
    for name in adders if names is None else names:
        if name not in adders:
            raise ValueError(f"no subcommand {name!r} in this command group; it has {', '.join(adders)}")
        adders[name](commands)


def add_corpus_option(parser):
    """`--corpus SRC`, the text source of training (default: builtin:python-docs)."""
    parser.add_argument("--corpus", default=None, help=CORPUS_HELP)


def add_one_per_line_option(parser):
    """`--one-per-line`: every non-blank line of the corpus is a document."""
    parser.add_argument("--one-per-line", action="store_true", help="every non-blank line is a document")


def add_cased_option(parser):
    """`--cased`: keep case and accents when tokenizing."""
    parser.add_argument("--cased", action="store_true", help="keep case and accents (default: lowercase)")


def add_quiet_option(parser):
    """`--quiet`: no progress output during long work."""
    parser.add_argument("--quiet", action="store_true", help="no progress output")

"""kmlm/cli/options.py: the argparse pieces every command group shares."""

import argparse

import pytest

from kmlm.cli.options import (
    CORPUS_HELP,
    HelpFormatter,
    OneLineErrorParser,
    add_command,
    add_corpus_option,
    add_subcommands,
    positive_int,
)


def test_positive_int_accepts_integers_from_one():
    assert positive_int("1") == 1 and positive_int("8192") == 8192


@pytest.mark.parametrize("text, message", [
    ("0", "0 is not a positive integer"),
    ("-3", "-3 is not a positive integer"),
    ("x", "'x' is not a positive integer"),
    ("1.5", "'1.5' is not a positive integer"),
])
def test_positive_int_names_the_bad_value(text, message):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        positive_int(text)
    assert str(error.value) == message


def _parser():
    parser = OneLineErrorParser(prog="kmlm", formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub = add_command(commands, "demo", help="a demo command", description="First line.\n  Second, indented.")
    sub.add_argument("--size", type=positive_int, default=8, help="rows")
    add_corpus_option(sub)
    return parser, sub


def test_bad_command_line_is_one_line_naming_the_command(capsys):
    parser, _ = _parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["demo", "--size", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "kmlm demo: error: argument --size: 0 is not a positive integer; see `kmlm demo --help`\n"
    )


def test_help_shows_defaults_and_keeps_the_description_lines():
    _, sub = _parser()
    text = sub.format_help()
    assert "First line.\n  Second, indented." in text
    assert "rows (default: 8)" in text
    assert " ".join(CORPUS_HELP.split()[:4]) in " ".join(text.split())


def test_add_subcommands_adds_the_named_ones_in_the_given_order():
    added = []
    adders = {name: (lambda commands, name=name: added.append(name)) for name in ("a", "b", "c")}
    add_subcommands(None, adders)
    add_subcommands(None, adders, ("c", "a"))
    assert added == ["a", "b", "c", "c", "a"]
    with pytest.raises(ValueError, match=r"no subcommand 'd' in this command group; it has a, b, c"):
        add_subcommands(None, adders, ("d",))

"""kmlm/cli/main.py and the command groups: which subcommands exist, in which order, and that
`kmlm --help` answers without loading TensorFlow."""

import argparse
import ast
import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

from kmlm.cli import inference, interop, main as cli_main, pretraining, serving, tasks, wordvec
from kmlm.cli.main import build_parser, main, one_line

# The order of `kmlm --help` (and of "choose from ..." in the error for an unknown command).
COMMANDS = ("vocab", "pretrain", "evaluate", "fill-mask", "export", "word2vec", "glove", "vectors", "fasttext",
            "finetune", "predict", "embed", "convert", "score", "generate", "attention", "distill")
GROUPS = {
    pretraining: ("vocab", "pretrain", "evaluate", "distill"),
    inference: ("fill-mask", "score", "generate", "attention"),
    serving: ("export",),
    wordvec: ("word2vec", "glove", "vectors", "fasttext"),
    tasks: ("finetune", "predict", "embed"),
    interop: ("convert",),
}


def _subcommands(parser):
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_help_lists_every_command_in_its_order():
    assert tuple(_subcommands(build_parser())) == COMMANDS


def test_every_command_belongs_to_exactly_one_group():
    for group, names in GROUPS.items():
        assert tuple(group.COMMANDS) == names, group.__name__
    listed = [name for _, names in cli_main.COMMAND_ORDER for name in names]
    assert sorted(listed) == sorted(COMMANDS)
    for group, names in cli_main.COMMAND_ORDER:
        assert set(names) <= set(GROUPS[group]), (group.__name__, names)


@pytest.mark.parametrize("group", list(GROUPS), ids=lambda group: group.__name__)
def test_a_group_adds_its_commands_to_any_parser(group):
    parser = argparse.ArgumentParser(prog="kmlm")
    group.add_commands(parser.add_subparsers(dest="command"))
    assert tuple(_subcommands(parser)) == GROUPS[group]
    for sub in _subcommands(parser).values():
        assert callable(sub.get_default("run"))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: kmlm {command} ")
    assert "(default: None)" not in out and "(default: False)" not in out
    # Every option with a real default says it, in its own help or as "(default: ...)".
    sub = _subcommands(build_parser())[command] if command in _subcommands(build_parser()) else None
    if sub is not None:
        flat = " ".join(out.split())
        for action in sub._actions:
            if action.default not in (None, False) and action.help and action.option_strings and \
                    action.default != "==SUPPRESS==":
                assert "default" in " ".join(action.help.split()) or f"(default: {action.default})" in flat, action.dest


def test_help_does_not_load_tensorflow():
    code = ("import sys, contextlib, io\n"
            "from kmlm.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            "        main(['--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'numpy'}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_debug_is_a_flag_anywhere_before_a_double_dash(capsys):
    with pytest.raises(SystemExit):  # accepted after the command: the error is about --size
        main(["vocab", "--out", "v.txt", "--debug", "--size", "0"])
    assert "argument --size: 0 is not a positive integer" in capsys.readouterr().err
    code = main(["generate", "--", "no-such-run", "--debug"])  # after `--` it is the seed text
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("kmlm generate: error: ") and "Traceback" not in err


def test_one_line_keeps_bad_input_short_and_names_unexpected_errors():
    assert one_line(ValueError("--steps must be positive\nmore detail")) == "--steps must be positive"
    assert one_line(FileNotFoundError("corpus 'x' does not exist")) == "corpus 'x' does not exist"
    assert one_line(RuntimeError("")) == "RuntimeError: RuntimeError (run with --debug for the traceback)"
    long = one_line(KeyError("k" * 400))
    assert long.startswith("KeyError: 'kkk") and long.endswith("... (run with --debug for the traceback)")
    assert len(long) == 300 + len(" (run with --debug for the traceback)")


def _lazy_imports():
    """(module file, line, module, name) for every `from kmlm... import name` in kmlm/cli/."""
    folder = os.path.dirname(cli_main.__file__)
    for file in sorted(os.listdir(folder)):
        if file.endswith(".py"):
            with open(os.path.join(folder, file), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kmlm"):
                    for alias in node.names:
                        yield file, node.lineno, node.module, alias.name


def test_every_name_the_commands_import_exists():
    # The commands import kmlm's TensorFlow-heavy modules only when they run; a name that moved
    # would otherwise show only when a user runs that command.
    missing = []
    for file, line, module, name in _lazy_imports():
        imported = importlib.import_module(module)
        is_submodule = hasattr(imported, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None
        if not hasattr(imported, name) and not is_submodule:
            missing.append(f"kmlm/cli/{file}:{line}: {module} has no {name}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("argv, overrides", [
    ([], {}),
    (["--dropout", "0"], {"dropout": 0.0, "attention_dropout": 0.0}),
    (["--norm", "pre", "--hidden-dim", "64"], {"norm_first": True, "hidden_dim": 64}),
    (["--norm", "post"], {"norm_first": False}),
])
def test_pretrain_model_flags_become_model_config_overrides(argv, overrides):
    from kmlm.config import ModelConfig

    args = build_parser().parse_args(["pretrain", "--out", "run", *argv])
    assert pretraining.model_overrides(args) == overrides
    config = ModelConfig.from_preset("tiny", vocabulary_size=100, **overrides)
    assert config.norm_first == overrides.get("norm_first", False)
    assert config.dropout == overrides.get("dropout", 0.1)


def test_pretrain_refuses_a_dropout_outside_zero_to_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--dropout", "1.5", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "kmlm pretrain: error: dropout=1.5 is outside [0, 1)"
    assert not out.exists()

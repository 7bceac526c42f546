"""The `kmlm` command line: the top-level parser, and `main`, which runs one command and turns
its errors into one line and an exit status.

The subcommands live in one module per command group (kmlm/cli/pretraining.py, inference.py,
serving.py, wordvec.py, tasks.py, interop.py); kmlm/cli/options.py holds what they share.
"""

import contextlib
import os
import re
import sys

from kmlm import __version__
from kmlm.cli import inference, interop, pretraining, serving, tasks, wordvec
from kmlm.cli.options import HelpFormatter, OneLineErrorParser
from kmlm.files import DiskFullError, is_disk_full
from kmlm.output_lock import hold_output_directory
from kmlm.termination import EXIT_STATUS as TERMINATED_STATUS
from kmlm.termination import Terminated

# (command group, its subcommands) in the order `kmlm --help` lists them: the order in which
# the commands joined kmlm, which users and scripts already know.
COMMAND_ORDER = (
    (pretraining, ("vocab", "pretrain", "evaluate")),
    (inference, ("fill-mask",)),
    (serving, ("export",)),
    (wordvec, ("word2vec", "glove", "vectors", "fasttext")),
    (tasks, ("finetune", "predict", "embed")),
    (interop, ("convert",)),
    (inference, ("score", "generate", "attention")),
    (pretraining, ("distill",)),
)

# Commands that write a directory `--out`: two at once on one directory would mix their files.
WRITING_COMMANDS = ("pretrain", "finetune", "word2vec", "glove", "fasttext", "distill")

# Errors of bad input, reported as their message alone; anything else also names its type.
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
                DiskFullError)


def build_parser():
    """The `kmlm` argument parser with every subcommand; each sets `run`, the function to call."""
    parser = OneLineErrorParser(
        prog="kmlm",
        description="BERT-style masked language modeling for TensorFlow/Keras.",
        formatter_class=HelpFormatter,
        epilog="Run `kmlm COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"kmlm {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show TensorFlow's start-up logs and full tracebacks (also KMLM_DEBUG=1); "
                             "may be given after the command too")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group, names in COMMAND_ORDER:
        group.add_commands(commands, names)
    return parser


def import_tensorflow_quietly(show_logs=False):
    """Imports TensorFlow with stderr silenced: its C++ start-up logs (CUDA probing on CPU
    machines, oneDNN notices) are noise to a CLI user. Set KMLM_DEBUG=1 to see them."""
    if show_logs or os.environ.get("KMLM_DEBUG") or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow

        tensorflow.config.list_physical_devices()  # probes CUDA (and logs about it) now
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# How TensorFlow reports a Python exception raised inside tf.data (a corpus reader, say).
_WRAPPED_PYTHON_ERROR = re.compile(r"\{\{function_node [^}]*\}\}\s*(\w+): (.+)")


def _input_error_inside_tensorflow(error):
    """The message of a bad-input error that TensorFlow wrapped in an op error, or None."""
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None or not isinstance(error, tensorflow.errors.OpError):
        return None
    lines = (error.message or "").strip().splitlines()
    match = _WRAPPED_PYTHON_ERROR.match(lines[0]) if lines else None
    if match and match.group(1) in {kind.__name__ for kind in INPUT_ERRORS}:
        return match.group(2)
    return None


def one_line(error):
    """The one-line message of a command's `error`; unexpected errors also name their type."""
    inner = _input_error_inside_tensorflow(error)
    if inner is not None:
        return inner
    if is_disk_full(error) and not isinstance(error, DiskFullError):  # a write outside kmlm.files
        where = f" to write {error.filename!r}" if getattr(error, "filename", None) else ""
        return f"no space left on the device{where}: free space and re-run the same command"
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else type(error).__name__
    if not isinstance(error, INPUT_ERRORS):
        message = f"{type(error).__name__}: {message}"
        if len(message) > 300:
            message = message[:297] + "..."
        message += " (run with --debug for the traceback)"
    return message


def output_lock(args):
    """The lock a command holds on its `--out` while it runs (none for commands that do not
    write one, nor for multi-worker pretraining, whose workers share the directory)."""
    if args.command not in WRITING_COMMANDS or getattr(args, "distribution", None) == "multi-worker":
        return contextlib.nullcontext()
    return hold_output_directory(args.out, args.command)


def _with_debug_first(argv):
    """`argv` with `--debug` moved in front: a global flag that reads naturally anywhere before `--`."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[:end]:
        argv = ["--debug"] + [arg for arg in argv[:end] if arg != "--debug"] + argv[end:]
    return argv


def main(argv=None):
    """Runs the `kmlm` command line `argv` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    argv = _with_debug_first(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    debug = args.debug or bool(os.environ.get("KMLM_DEBUG"))
    import_tensorflow_quietly(show_logs=debug)
    try:
        with output_lock(args):
            args.run(args)
    except Exception as error:  # one line on stderr; the traceback only with --debug
        if debug:
            raise
        print(f"kmlm {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except Terminated as stop:  # SIGTERM: its message says what was kept and how to resume
        print(f"kmlm {args.command}: {stop}", file=sys.stderr)
        return TERMINATED_STATUS
    except KeyboardInterrupt:
        print(f"kmlm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

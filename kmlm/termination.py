"""SIGTERM, what preemptible VMs and job schedulers send before they kill a job: stop cleanly.

Outside training a SIGTERM raises `Terminated` at once (the files written so far are whole,
see `kmlm.files`). During `fit` it is held back until the step in flight has finished, so that
a `BackupOnTermination` callback can save that step first; then it raises `Terminated`, whose
message says what was kept and how to resume. `kmlm.cli.main` prints that message as the
command's one line and exits with 143 (128 + SIGTERM), as a killed process would.
"""

import contextlib
import signal
import threading

EXIT_STATUS = 128 + signal.SIGTERM


class Terminated(BaseException):
    """The process got SIGTERM; the message says what was kept and how to resume.

    A BaseException, like KeyboardInterrupt: code that handles errors must let it through.
    """


class _Request:
    """Whether SIGTERM is held back now (training), and whether one came meanwhile."""

    deferred = False
    pending = False


_REQUEST = _Request()


@contextlib.contextmanager
def stop_on_sigterm(describe):
    """Within the block, SIGTERM raises `Terminated(describe())`, or during training (see
    `kmlm.training.BackupOnTermination`) once the current step is saved. Outside the main thread (where
    Python cannot catch signals) the block runs unchanged.

    Example:
    >>> import os
    >>> with stop_on_sigterm(lambda: "stopped; re-run to resume"):
    ...     try:
    ...         os.kill(os.getpid(), signal.SIGTERM)
    ...     except Terminated as stop:
    ...         print(stop)
    stopped; re-run to resume
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _REQUEST.deferred:
            _REQUEST.pending = True
            return
        raise Terminated(describe())

    previous = signal.signal(signal.SIGTERM, handler)
    _REQUEST.pending = False
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _REQUEST.deferred = _REQUEST.pending = False


def hold_back_sigterm(held):
    """From now on (`held=True`) a SIGTERM only marks itself pending; `held=False` ends that."""
    _REQUEST.deferred = held


def take_pending_sigterm():
    """Whether a SIGTERM came while held back (then it is no longer pending)."""
    pending, _REQUEST.pending = _REQUEST.pending, False
    return pending

"""One writer per output directory: the lock that `kmlm pretrain`, `finetune`, `word2vec` and
`glove` hold on their `--out` while they run.

The lock is a small file next to the directory (`runs/.demo.kmlm-lock` for `--out
runs/demo`), so the directory itself stays exactly what the command writes, and it is held
with `flock`: the kernel releases it when its process dies, however it dies, so a lock left
by a killed run never blocks the next one. The file names the holder (pid, host, command,
start time) for the one-line refusal that a second writer gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time

from kmlm.files import disk_full_error, is_disk_full

LOCK_SUFFIX = ".kmlm-lock"



class OutputInUseError(ValueError):
    """Another live process writes the same output directory."""


def lock_path(out: str) -> str:
    """The lock file of the output directory `out`: a hidden file beside it."""
    folder, name = os.path.split(os.path.abspath(out))
    return os.path.join(folder, f".{name}{LOCK_SUFFIX}")


def _holder(fd: int) -> dict:
    """The holder recorded in an open lock file ({} when it is empty or unreadable)."""
    try:
        return json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    started = holder.get("started")
    since = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}" if started else ""
    return f"kmlm {holder.get('command', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}{since})"


def _acquire(path: str, out: str) -> int | None:
    """Opens and locks `path`; returns its descriptor, or None when no lock file can be made
    there (the command's own checks then report the unwritable --out)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputInUseError(
                f"--out {out!r} is in use by {_describe(holder)}; two writers would mix their files: wait for it "
                "to finish or choose another --out"
            ) from None
        # The previous holder may have removed the file between our open and our lock.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def hold_output_directory(out: str, command: str):
    """Holds the lock of `out` for the duration of the block.

    Args:
        out: The output directory (it need not exist yet).
        command: The kmlm command holding it, named in a second writer's refusal.

    Raises:
        OutputInUseError: When another live process holds it.

    Example:
        >>> import tempfile
        >>> out = os.path.join(tempfile.mkdtemp(), "run")
        >>> with hold_output_directory(out, "pretrain"):
        ...     os.path.exists(lock_path(out))
        True
        >>> os.path.exists(lock_path(out))
        False
    """
    path = lock_path(out)
    fd = _acquire(path, out)
    if fd is None:
        yield
        return
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.time()}
    try:
        content = json.dumps(record).encode("utf-8")
        os.ftruncate(fd, 0)
        try:
            os.pwrite(fd, content, 0)
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise disk_full_error(path, len(content)) from None
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)  # before unlocking: a waiting writer then locks a fresh file
        os.close(fd)

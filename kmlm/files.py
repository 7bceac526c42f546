"""Atomic file writes: a file written through these functions appears whole or not at all.

A file is written under a temporary name in its own directory and renamed into place
(`os.replace` is atomic on POSIX), so a kill at any moment leaves either the previous file
or the new one, never a file that looks complete but is not. Run directories (config.json,
model.keras, checkpoints, evaluation.json, task.json) and word-vector folders are written
this way.
"""

import errno
import json
import os
import shutil

_PARTIAL_PREFIX = ".partial-"


class DiskFullError(OSError):
    """A file or directory could not be written: its file system is full. Whatever it was to
    replace is kept, and nothing half-written is left."""


def is_disk_full(error):
    """Whether `error` (an OSError, or TensorFlow's error of a failed save) says the disk is full."""
    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error)


def size_on_disk(path):
    """Bytes of the file, or of all files under the directory, `path` (0 when it is absent)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(parent, name)) for parent, _, names in os.walk(path) for name in names)


def _megabytes(size):
    return f"{size / 1e6:.1f} MB"


def disk_full_error(path, needed, at_least=False):
    """The `DiskFullError` of writing `path`, which needs about (or `at_least`) `needed` bytes.

    Example:
    >>> str(disk_full_error("/", 5_000_000)).startswith("no space left on the device to write '/': it needs about 5.0 MB, ")
    True
    """
    folder = os.path.dirname(os.path.abspath(path)) or "/"
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free
    return DiskFullError(
        f"no space left on the device to write {path!r}: it needs {'at least' if at_least else 'about'} "
        f"{_megabytes(needed)}, {_megabytes(free)} "
        f"are free in {folder}; nothing was replaced (the previous version is kept): free space and re-run the "
        "same command"
    )


def replace_atomically(path, write, needed=None):
    """Calls `write(tmp_path)` and renames the result to `path`.

    When the disk fills up it raises `DiskFullError`, naming `path` and the space needed and
    free; `path` keeps its previous content and the temporary file is removed. Given the bytes
    the file will take (`needed`), it refuses before writing when they are not free: h5py can
    crash the process when the disk fills while it closes a file.

    The temporary file sits in the same directory (a rename never crosses file systems) and
    keeps the file name's ending, as Keras wants `.weights.h5` and `.keras` paths.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "note.txt")
    >>> replace_atomically(path, lambda tmp: open(tmp, "w").write("done"))
    >>> open(path).read()
    'done'
    """
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f"{_PARTIAL_PREFIX}{os.getpid()}-{name}")
    if needed is not None and shutil.disk_usage(folder).free < needed:
        raise disk_full_error(path, needed)
    try:
        write(tmp)
        os.replace(tmp, path)
    except Exception as error:
        if not is_disk_full(error):
            raise
        # The new file is as large as the one it replaces, or at least what was written of it.
        needed = max(size_on_disk(tmp), size_on_disk(path))
        if os.path.exists(tmp):
            os.remove(tmp)  # first: the free space reported includes what it took
        raise disk_full_error(path, needed) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_partial_files(folder):
    """Removes the temporary files that killed processes left under `folder` (their
    `replace_atomically` never reached its rename); returns their paths.

    Call it only while holding the folder's output lock (`kmlm.output_lock`): any other
    process's temporary file is then a dead one's.

    Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, _PARTIAL_PREFIX + "1-model.keras"), "w").close()
    >>> [os.path.basename(path) for path in remove_stale_partial_files(folder)], os.listdir(folder)
    (['.partial-1-model.keras'], [])
    """
    own = f"{_PARTIAL_PREFIX}{os.getpid()}-"
    removed = []
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.startswith(_PARTIAL_PREFIX) and not name.startswith(own):
                removed.append(os.path.join(parent, name))
                os.remove(removed[-1])
    return removed


def write_json_atomically(path, value):
    """Writes `value` as indented JSON to `path` through a temporary file and a rename."""
    write_text_atomically(path, json.dumps(value, indent=2) + "\n")


def write_text_atomically(path, text):
    """Writes `text` (UTF-8) to `path` through a temporary file and a rename.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    >>> write_text_atomically(path, "[PAD]\\n")
    >>> open(path).read()
    '[PAD]\\n'
    """

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())

    replace_atomically(path, write)


def read_json(path):
    """The JSON value in the UTF-8 file `path`; one clear line when it is not valid JSON.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "config.json")
    >>> write_json_atomically(path, {"seq_len": 128})
    >>> read_json(path)
    {'seq_len': 128}
    """
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path!r} is not valid JSON ({error})") from None


"""Atomic file writes: a file written through these functions appears whole or not at all.

A file is written under a temporary name in its own directory and renamed into place
(`os.replace` is atomic on POSIX), so a kill at any moment leaves either the previous file
or the new one, never a file that looks complete but is not. Run directories (config.json,
model.keras, checkpoints, evaluation.json, task.json) and word-vector folders are written
this way.
"""

import json
import os

_PARTIAL_PREFIX = ".partial-"


def replace_atomically(path, write):
    """Calls `write(tmp_path)` and renames the result to `path`.

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
    try:
        write(tmp)
        os.replace(tmp, path)
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


"""Corpus sources: turn one source string into a `tf.data.Dataset` of text documents.

Source strings (the same for the CLI's `--corpus` and the Python API):

* a file, a directory (searched recursively for `*.txt` and `*.gz`) or a glob of UTF-8
  text: documents are separated by blank lines, or are single lines with
  `one_per_line=True`;
* `tfds:NAME[/CONFIG][:SPLIT][:FEATURE]`, e.g. `tfds:imdb_reviews:train:text` (split
  defaults to `train`, feature to `text`); nothing is ever downloaded;
* `builtin:python-docs` (the default): the docstrings of the running Python's standard
  library, real English prose present on every machine.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import glob
import gzip
import inspect
import json
import logging
import os
import platform
import re
import stat
import sysconfig
import threading
import zlib

import tensorflow as tf

logger = logging.getLogger("kmlm")

BUILTIN_CORPORA = ("python-docs",)
DEFAULT_CORPUS = "builtin:python-docs"
SPLITS = ("train", "eval")

_SOURCE_HINT = "give a file, directory, glob, tfds:NAME or builtin:python-docs"
_GLOB_CHARS = "*?["
_TEXT_SUFFIXES = (".txt", ".gz")
# A "document" without blank lines is cut after this many characters so that a file with
# no paragraph breaks cannot become one string the size of the file; the shuffle buffer of
# mlm_dataset (2,048 documents) then holds at most ~64 MiB of text.
_MAX_DOCUMENT_CHARS = 1 << 15
# Lines are read in pieces of at most this many bytes: one enormous line is split, not loaded.
_MAX_READ_BYTES = 1 << 16
# Documents travel from the Python reader into tf.data in lists of this many.
_READ_BATCH = 256
# Hash buckets for the train/eval split; fine enough for eval fractions down to 1e-6.
_SPLIT_BUCKETS = 1 << 30
# split_documents looks at this many leading documents to keep a tiny eval split non-empty.
_SPLIT_PROBE = 10_000
# Bump when the docstring extraction rules change, so stale caches are not reused.
_PYTHON_DOCS_FORMAT = 1
_SKIPPED_STDLIB_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests",
                        "idle_test"}
# Docstrings shorter than this many words ("Return self==value.") carry no prose.
_MIN_DOCSTRING_WORDS = 4


@dataclasses.dataclass
class CorpusStats:
    """What `load_documents` noticed while reading a corpus of text files.

    The counts fill in as the dataset is iterated (files are read lazily); reading a file
    again on a later epoch replaces its count rather than adding to it.

    Attributes:
        source: The source string that was loaded.
        files: The text files of the corpus, in reading order (empty for tfds and builtin).
        replaced_by_file: For each file read to the end, how many invalid UTF-8 sequences
            were replaced by U+FFFD.

    Example:
        >>> stats = CorpusStats()
        >>> docs = load_documents("corpus.txt", stats=stats)  # doctest: +SKIP
        >>> _ = list(docs)  # doctest: +SKIP
        >>> print(f"replaced {stats.invalid_utf8} invalid UTF-8 sequences")  # doctest: +SKIP
    """

    source: str = ""
    files: tuple[str, ...] = ()
    replaced_by_file: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self._lock = threading.Lock()

    @property
    def invalid_utf8(self) -> int:
        """The number of invalid UTF-8 sequences replaced so far, over all files."""
        with self._lock:
            return sum(self.replaced_by_file.values())

    def _record(self, path: str, replaced: int) -> None:
        with self._lock:
            self.replaced_by_file[path] = replaced


class CorpusChangedError(ValueError):
    """A corpus file was removed, or changed size, while a job was reading it.

    Raised inside tf.data's reader, so it reaches the caller wrapped in a TensorFlow error;
    `CorpusChangedError.within(error)` finds it there again.

    Example:
        >>> error = RuntimeError("Graph execution error: CorpusChangedError: corpus file 'a.txt' was removed\\n...")
        >>> str(CorpusChangedError.within(error))
        "corpus file 'a.txt' was removed"
    """

    _WRAPPED = re.compile(r"CorpusChangedError: ([^\n]+)")

    @classmethod
    def within(cls, error: BaseException) -> CorpusChangedError | None:
        """The `CorpusChangedError` that `error` (a TensorFlow error, say) wraps, or None."""
        if isinstance(error, cls):
            return error
        match = cls._WRAPPED.search(str(error))
        return cls(match.group(1)) if match else None


def load_documents(
    source: str | None = None,
    *,
    one_per_line: bool = False,
    stats: CorpusStats | None = None,
    input_context: tf.distribute.InputContext | None = None,
    tfds_data_dir: str | None = None,
) -> tf.data.Dataset:
    """Loads a corpus as a dataset of scalar `tf.string` documents.

    Every problem with the source (unknown name, missing path, glob matching nothing,
    no text at all) is raised here, before any dataset is iterated. Invalid UTF-8 in text
    files is replaced by U+FFFD and counted in `stats`. Whitespace-only documents are
    dropped. The order is deterministic (files sorted by path).

    Args:
        source: A file, directory, glob, `tfds:NAME[/CONFIG][:SPLIT][:FEATURE]` or
            `builtin:python-docs`; `None` means `builtin:python-docs`.
        one_per_line: For text files, make every non-blank line a document instead of
            splitting on blank lines. Ignored for tfds and builtin sources.
        stats: A `CorpusStats` to fill in (files found, invalid UTF-8 replaced).
        input_context: A `tf.distribute.InputContext`; the corpus is sharded by its
            `input_pipeline_id`: by file when there are at least as many text files as
            input pipelines (each reads only its files), else by document (each keeps
            every n-th). Give it here or to `mlm_dataset`, not both.
        tfds_data_dir: Where prepared TFDS datasets live; `None` uses TFDS' default
            (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).

    Returns:
        A `tf.data.Dataset` of scalar `tf.string` documents.

    Raises:
        ValueError: Unknown builtin or tfds name, bad tfds feature or split, no text.
        FileNotFoundError: Missing path, glob matching nothing, tfds data not prepared.

    Example:
        >>> docs = load_documents("builtin:python-docs")
        >>> next(iter(docs)).dtype
        tf.string
    """
    source = DEFAULT_CORPUS if source is None else source
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"corpus source {source!r} is empty; {_SOURCE_HINT}")
    stats = CorpusStats() if stats is None else stats
    stats.source = source
    if source.startswith("builtin:"):
        documents = _load_builtin(source)
    elif source.startswith("tfds:"):
        documents = _load_tfds(source, tfds_data_dir)
    else:
        paths = _resolve_paths(source)
        _check_has_text(source, paths)
        if input_context is not None and len(paths) >= input_context.num_input_pipelines > 1:
            # Shard by file: each input pipeline reads only its own files.
            paths = paths[input_context.input_pipeline_id::input_context.num_input_pipelines]
            input_context = None
        documents = _load_text_files(paths, one_per_line, stats)
    if input_context is not None:
        documents = documents.shard(
            input_context.num_input_pipelines, input_context.input_pipeline_id
        )
    return documents


def _load_builtin(source: str) -> tf.data.Dataset:
    name = source[len("builtin:"):]
    if name not in BUILTIN_CORPORA:
        known = ", ".join(f"builtin:{n}" for n in BUILTIN_CORPORA)
        raise ValueError(f"unknown builtin corpus {source!r}; the builtin corpora are: {known}")
    return tf.data.Dataset.from_tensor_slices(python_docs())


# ---------------------------------------------------------------------------------------
# Text files


def _load_text_files(paths: list[str], one_per_line: bool, stats: CorpusStats) -> tf.data.Dataset:
    stats.files = tuple(paths)
    # Every later pass must read the files as they are now: a job may run for days.
    sizes = {path: os.path.getsize(path) for path in paths}
    documents = tf.data.Dataset.from_generator(
        lambda: _read_documents(paths, one_per_line, stats, sizes),
        output_signature=tf.TensorSpec([None], tf.string),
    )
    return documents.unbatch()


def _resolve_paths(source: str) -> list[str]:
    """The text files a path or glob names, sorted; raises if there are none."""
    if any(char in source for char in _GLOB_CHARS):
        matches = sorted(glob.glob(source, recursive=True))
        if not matches:
            raise FileNotFoundError(f"corpus glob {source!r} matches no files; {_SOURCE_HINT}")
        paths = []
        for match in matches:
            paths.extend(_text_files_under(match) if os.path.isdir(match) else [match])
    elif os.path.isdir(source):
        paths = _text_files_under(source)
        if not paths:
            raise FileNotFoundError(
                f"corpus directory {source!r} holds no .txt or .gz files; {_SOURCE_HINT}"
            )
    elif os.path.isfile(source):
        paths = [source]
    elif os.path.exists(source):
        raise ValueError(f"corpus {source!r} is {_file_kind(source)}, not a file or directory: a corpus is read "
                         "more than once (vocabulary, split, epochs); save the text to a file first")
    else:
        raise FileNotFoundError(f"corpus {source!r} does not exist; {_SOURCE_HINT}")
    for path in paths:
        if path.endswith(".gz"):
            with open(path, "rb") as file:
                if file.read(2) != b"\x1f\x8b":
                    raise ValueError(
                        f"corpus file {path!r} is not gzip-compressed; rename it without .gz "
                        "or compress it with gzip"
                    )
        _check_not_binary(path)
    return paths


def _file_kind(path: str) -> str:
    """What a path that is neither a regular file nor a directory is, e.g. "a named pipe (FIFO)"."""
    mode = os.stat(path).st_mode
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _check_not_binary(path: str) -> None:
    """Raises for a file whose start holds NUL bytes (an image, archive, UTF-16 text...)."""
    with _gzip_checked(path), _open_text_file(path) as file:
        head = file.read(1 << 13)
    offset = head.find(b"\x00")
    if offset >= 0:
        raise ValueError(
            f"corpus file {path!r} is binary, not text (a NUL byte at offset {offset}); "
            "give UTF-8 text files (convert UTF-16 with iconv -f UTF-16 -t UTF-8)"
        )


def _text_files_under(folder: str) -> list[str]:
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        paths.extend(
            os.path.join(dirpath, name)
            for name in sorted(filenames)
            if name.lower().endswith(_TEXT_SUFFIXES) and not name.startswith(".")
        )
    return paths


def _open_text_file(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _check_has_text(source: str, paths: list[str]) -> None:
    """Raises unless some file holds a non-whitespace character (reads only that far)."""
    for path in paths:
        with _gzip_checked(path), _open_text_file(path) as file:
            while chunk := file.read(1 << 16):
                if chunk.decode("utf-8", errors="replace").strip():
                    return
    raise ValueError(
        f"corpus {source!r} contains no text: its {len(paths)} file(s) are empty or "
        "whitespace only"
    )


def _decode_line(raw: bytes) -> tuple[str, int]:
    """Decodes UTF-8, replacing invalid sequences; returns the text and how many."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        # U+FFFD characters that were in the file already are not replacements.
        genuine = raw.decode("utf-8", errors="ignore").count("\ufffd")
        return text, text.count("\ufffd") - genuine


def _read_documents(paths: list[str], one_per_line: bool, stats: CorpusStats, sizes: dict[str, int]):
    """Yields lists of documents read from `paths` (runs inside tf.data's reader thread);
    raises `CorpusChangedError` for a file that is gone or no longer has its size in `sizes`."""
    batch: list[str] = []
    for path in paths:
        replaced = 0
        lines: list[str] = []
        size = 0
        _check_unchanged(path, sizes[path])
        with _gzip_checked(path), _open_text_file(path) as file:
            for raw in _read_line_pieces(file):
                line, bad = _decode_line(raw)
                replaced += bad
                line = line.rstrip("\r\n")
                if one_per_line:
                    if line.strip():
                        batch.append(line.strip())
                elif line.strip():
                    lines.append(line)
                    size += len(line)
                if lines and (not line.strip() or size >= _MAX_DOCUMENT_CHARS):
                    batch.append("\n".join(lines))
                    lines, size = [], 0
                if len(batch) >= _READ_BATCH:
                    yield batch
                    batch = []
        _check_unchanged(path, sizes[path])  # truncated (or grown) while it was read
        if lines:
            batch.append("\n".join(lines))
        stats._record(path, replaced)
    if batch:
        yield batch


def _check_unchanged(path: str, size: int) -> None:
    """Raises `CorpusChangedError` unless `path` still exists with `size` bytes."""
    try:
        now = os.path.getsize(path)
    except FileNotFoundError:
        raise CorpusChangedError(f"corpus file {path!r} was removed while it was being read") from None
    if now != size:
        raise CorpusChangedError(
            f"corpus file {path!r} changed while it was being read: it had {size:,} bytes when the corpus was "
            f"loaded, {now:,} now"
        )


@contextlib.contextmanager
def _gzip_checked(path: str):
    """Reports a truncated or corrupted gzip stream read inside the block by the file's name."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(
            f"corpus file {path!r} is a truncated or corrupted gzip file ({error}); copy or compress it again"
        ) from None


def _read_line_pieces(file, limit: int = _MAX_READ_BYTES):
    """Yields the lines of a binary file; a line longer than `limit` bytes comes in pieces
    cut at UTF-8 character boundaries, so memory stays bounded whatever the line length."""
    carry = b""
    while raw := file.readline(limit):
        raw = carry + raw
        carry = b""
        if not raw.endswith(b"\n"):
            cut = len(raw)
            # Back up over continuation bytes (10xxxxxx) to the start of a character.
            while cut > max(0, len(raw) - 4) and raw[cut - 1] & 0xC0 == 0x80:
                cut -= 1
            if cut > 0 and raw[cut - 1] >= 0xC0:
                cut -= 1
            if 0 < cut < len(raw):
                raw, carry = raw[:cut], raw[cut:]
        yield raw
    if carry:
        yield carry


# ---------------------------------------------------------------------------------------
# TensorFlow Datasets


def _parse_tfds_source(source: str) -> tuple[str, str, str]:
    """Splits `tfds:NAME[/CONFIG][:SPLIT][:FEATURE]`; a split may hold `[:10%]` slices."""
    fields, current, depth = [], "", 0
    for char in source[len("tfds:"):]:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == ":" and depth == 0:
            fields.append(current)
            current = ""
        else:
            current += char
    fields.append(current)
    if len(fields) > 3 or not fields[0]:
        raise ValueError(
            f"corpus {source!r} is not of the form tfds:NAME[/CONFIG][:SPLIT][:FEATURE], "
            "e.g. tfds:imdb_reviews:train:text"
        )
    name = fields[0]
    split = fields[1] if len(fields) > 1 and fields[1] else "train"
    feature = fields[2] if len(fields) > 2 and fields[2] else "text"
    return name, split, feature


def _load_tfds(source: str, data_dir: str | None) -> tf.data.Dataset:
    import tensorflow_datasets as tfds

    name, split, feature = _parse_tfds_source(source)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"tfds dataset {name!r} (from {source!r}) is not known to tensorflow-datasets; "
            "see https://www.tensorflow.org/datasets/catalog for names"
        ) from None
    except ValueError as error:  # e.g. an unknown config
        raise ValueError(f"corpus {source!r}: {error}".splitlines()[0]) from None
    features = builder.info.features
    if feature not in features.keys():
        raise ValueError(
            f"tfds dataset {name!r} has no feature {feature!r}; its features are: "
            + ", ".join(sorted(features.keys()))
        )
    if getattr(features[feature], "tf_dtype", None) != tf.string:
        raise ValueError(
            f"tfds feature {name}:{feature} is not text; pick a string feature of {name}"
        )
    try:
        examples = tfds.load(name, split=split, download=False, data_dir=data_dir)
    except AssertionError:
        root = data_dir or tfds.core.constants.get_default_data_dir()
        raise FileNotFoundError(
            f"tfds dataset {name!r} is not prepared in {root!r} and kmlm never downloads; "
            f"prepare it once with `tfds build {name}` or set TFDS_DATA_DIR"
        ) from None
    except ValueError as error:  # an unknown split or bad slice
        splits = ", ".join(sorted(builder.info.splits.keys())) or "unknown"
        raise ValueError(
            f"tfds dataset {name!r} cannot read split {split!r} ({str(error).splitlines()[0]}); "
            f"its splits are: {splits}"
        ) from None
    documents = examples.map(
        lambda example: _valid_utf8(example[feature]), num_parallel_calls=tf.data.AUTOTUNE
    ).filter(_has_text)
    if not any(True for _ in documents.take(1)):
        raise ValueError(f"corpus {source!r} contains no text")
    return documents


def _valid_utf8(text: tf.Tensor) -> tf.Tensor:
    # tfds Text features are encoded from Python strings, so this rarely changes anything.
    return tf.strings.unicode_transcode(
        text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )


def _has_text(text: tf.Tensor) -> tf.Tensor:
    return tf.logical_not(tf.strings.regex_full_match(text, r"\s*"))


# ---------------------------------------------------------------------------------------
# builtin:python-docs


def python_docs(cache_dir: str | None = None) -> list[str]:
    """The docstrings of the running Python's standard library, one per document.

    The text is extracted with `ast` from the standard library's `.py` files (nothing is
    imported), cleaned with `inspect.cleandoc`; test packages, docstrings of fewer than four
    words or mostly non-letters, and repeats are skipped. Extraction takes a few seconds,
    so the result is cached as JSON in `cache_dir`, `$KMLM_CACHE_DIR` or `~/.cache/kmlm`,
    keyed by the Python version.

    Args:
        cache_dir: Where to cache the extracted text; `None` uses the default above.

    Returns:
        The documents, in a deterministic order.

    Example:
        >>> docs = python_docs()
        >>> len(docs) > 1000
        True
    """
    cache_dir = cache_dir or os.environ.get("KMLM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kmlm"
    )
    stdlib = sysconfig.get_paths()["stdlib"]
    cache = os.path.join(
        cache_dir, f"python-docs-{platform.python_version()}-v{_PYTHON_DOCS_FORMAT}.json"
    )
    try:
        with open(cache, encoding="utf-8") as file:
            cached = json.load(file)
        if cached.get("stdlib") == stdlib and cached.get("documents"):
            return cached["documents"]
    except (OSError, ValueError):
        pass
    logger.info("extracting the standard library's docstrings from %s (cached after)", stdlib)
    documents = extract_docstrings(stdlib)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        partial = f"{cache}.{os.getpid()}.partial"
        with open(partial, "w", encoding="utf-8") as file:
            json.dump({"stdlib": stdlib, "documents": documents}, file)
        os.replace(partial, cache)  # atomic: concurrent readers never see half a file
    except OSError as error:
        logger.warning("could not cache the python-docs corpus in %s: %s", cache_dir, error)
    return documents


def extract_docstrings(folder: str) -> list[str]:
    """Extracts the prose docstrings of every `.py` file under `folder` (no imports).

    Args:
        folder: A source tree, e.g. the standard library.

    Returns:
        Cleaned, de-duplicated docstrings in file order; test packages (`test`, `tests`,
        `idle_test`), `test_*.py` files and `site-packages` are skipped.

    Example:
        >>> docs = extract_docstrings(sysconfig.get_paths()["stdlib"] + "/json")
        >>> any("JSON" in doc for doc in docs)
        True
    """
    documents: dict[str, None] = {}  # an ordered set
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_STDLIB_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py") or name.startswith("test_"):
                continue
            try:
                with open(os.path.join(dirpath, name), "rb") as file:
                    tree = ast.parse(file.read())
            except (SyntaxError, ValueError, OSError):  # Python 2 fixtures, bad encodings
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                    text = ast.get_docstring(node, clean=False)
                    if text and _is_prose(text := inspect.cleandoc(text)):
                        documents[text] = None
    return list(documents)


def _is_prose(text: str) -> bool:
    words = text.split()
    if len(words) < _MIN_DOCSTRING_WORDS:
        return False
    visible = "".join(words)
    return sum(char.isalpha() for char in visible) >= 0.6 * len(visible)


# ---------------------------------------------------------------------------------------
# Held-out split


def split_documents(
    documents: tf.data.Dataset, split: str, eval_fraction: float = 0.02
) -> tf.data.Dataset:
    """Keeps the train or the eval part of a deterministic, hash-based held-out split.

    A document belongs to eval when the hash of its text (`to_hash_bucket_fast`) falls in
    the lowest `eval_fraction` of the buckets, so the split is the same in every run and
    on every machine, and the train and eval parts are disjoint and cover the corpus
    (identical documents land on the same side).

    For a tiny corpus the fixed fraction can leave eval empty. To prevent that, the first
    10,000 documents are hashed eagerly; if none of them falls into eval, the threshold is
    raised just enough to take the lowest-hashing one, so eval always holds a document.
    Pass the documents before shuffling so this probe is deterministic.

    Args:
        documents: Scalar `tf.string` documents, e.g. from `load_documents`.
        split: `"train"` or `"eval"`.
        eval_fraction: The share of documents held out, in (0, 1).

    Returns:
        The documents of that part, in their original order.

    Raises:
        ValueError: For a bad `split` or `eval_fraction`, an empty dataset, or a corpus
            of a single document (nothing would be left to train on).

    Example:
        >>> docs = tf.data.Dataset.from_tensor_slices([f"document {i}" for i in range(500)])
        >>> n_train = sum(1 for _ in split_documents(docs, "train"))
        >>> n_eval = sum(1 for _ in split_documents(docs, "eval"))
        >>> n_train + n_eval
        500
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(map(repr, SPLITS))}")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction {eval_fraction!r} is outside (0, 1); use e.g. 0.02")
    threshold = _eval_threshold(documents, eval_fraction)

    def keep(text):
        in_eval = tf.strings.to_hash_bucket_fast(text, _SPLIT_BUCKETS) < threshold
        return in_eval if split == "eval" else tf.logical_not(in_eval)

    return documents.filter(keep)


def _eval_threshold(documents: tf.data.Dataset, eval_fraction: float) -> int:
    threshold = max(1, round(eval_fraction * _SPLIT_BUCKETS))
    probe = documents.take(_SPLIT_PROBE).batch(4096).map(
        lambda texts: tf.strings.to_hash_bucket_fast(texts, _SPLIT_BUCKETS)
    )
    buckets = [int(b) for batch in probe.as_numpy_iterator() for b in batch]
    if not buckets:
        raise ValueError("cannot split an empty set of documents into train and eval")
    if min(buckets) < threshold:
        return threshold
    threshold = min(buckets) + 1
    if len(buckets) < _SPLIT_PROBE and len(set(buckets)) == 1:
        raise ValueError(
            f"the corpus has {len(buckets)} document(s), all with the same text; a "
            "train/eval split needs at least 2 different documents"
        )
    return threshold

"""Static word vectors in NumPy: files, neighbours, analogies and evaluation.

`WordVectors` holds words and a [N, D] float32 matrix. It reads and writes the word2vec text
format (a "N D" header line, then "word v1 ... vD" lines) and GloVe text files (the same
lines without the header), answers `most_similar`, `similarity` and analogies (3CosAdd and
3CosMul), and scores itself on word-pair similarity files (Spearman) and analogy files.
This module needs NumPy only; vectors taken from a masked LM come from
`kmlm.wordvec.from_mlm`, trained ones from `kmlm.wordvec.word2vec` and `kmlm.wordvec.glove`.

Example:
>>> vectors = WordVectors(["man", "woman", "king", "queen", "paris"],
...                       [[1.0, 0.0, 0.1], [0.0, 1.0, 0.1], [1.0, 0.2, 0.9], [0.1, 1.0, 0.9], [-1.0, -1.0, 0.0]])
>>> vectors.save("vectors.txt")
>>> vectors = WordVectors.load("vectors.txt")
>>> [word for word, _ in vectors.most_similar("king", top_n=2)]
['man', 'queen']
>>> [word for word, _ in vectors.analogy("man", "king", "woman")]
['queen']
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from kmlm.files import replace_atomically, write_json_atomically
from kmlm.statistics import spearman

ANALOGY_METHODS = ("add", "mul")
FORMATS = ("word2vec", "glove")
# The files of a vector trainer's output folder (`kmlm word2vec`, `kmlm glove`).
VECTORS_FILE = "vectors.txt"
COUNTS_FILE = "vocab.txt"


class WordVectors:
    """Words and their vectors.

    Args:
        words: the words, in row order, without repeats.
        vectors: [N, D] array.
        counts: optional [N] corpus counts (kept in files written by `kmlm word2vec`).

    Example:
    >>> vectors = WordVectors(["a", "b"], [[1.0, 0.0], [0.6, 0.8]])
    >>> round(vectors.similarity("a", "b"), 2)
    0.6
    """

    def __init__(self, words, vectors, counts=None):
        self.words = [str(w) for w in words]
        self.vectors = np.asarray(vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.words):
            raise ValueError(
                f"vectors of shape {self.vectors.shape} do not match {len(self.words)} words; expected [N, D]"
            )
        self.index = {}
        for i, word in enumerate(self.words):
            if word in self.index:
                raise ValueError(f"word {word!r} appears twice (rows {self.index[word]} and {i})")
            if not word or any(c.isspace() for c in word):
                raise ValueError(f"word {word!r} (row {i}) is empty or contains whitespace")
            self.index[word] = i
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self._unit = None

    # ---------------------------------------------------------------- basics

    def __len__(self):
        return len(self.words)

    def __contains__(self, word):
        return word in self.index

    def __getitem__(self, word):
        return self.vector(word)

    def __repr__(self):
        return f"WordVectors({len(self)} words, dim {self.dim})"

    @property
    def dim(self):
        return self.vectors.shape[1]

    @property
    def unit_vectors(self):
        """The rows scaled to length 1 (zero rows stay zero)."""
        if self._unit is None:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._unit = self.vectors / np.maximum(norms, 1e-12)
        return self._unit

    def _row(self, word):
        try:
            return self.index[word]
        except KeyError:
            raise KeyError(f"word {word!r} is not in the vocabulary of {len(self)} words") from None

    def vector(self, word):
        """The vector of `word` (KeyError naming it when there is none)."""
        return self.vectors[self._row(word)]

    def has_vector(self, word):
        """Whether `vector(word)` gives a vector (vectors with subwords also have them for
        words outside the vocabulary)."""
        return word in self.index

    def _as_unit(self, item):
        if isinstance(item, str):
            if item in self.index:
                return self.unit_vectors[self.index[item]]
            item = self.vector(item)
        vector = np.asarray(item, dtype=np.float32)
        if vector.shape != (self.dim,):
            raise ValueError(f"a vector of shape {vector.shape} given; expected ({self.dim},)")
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    # ---------------------------------------------------------------- files

    @classmethod
    def load(cls, path, format=None, limit=None):
        """Reads a word2vec text file (header "N D") or a GloVe text file (no header).

        Args:
            path: the file (".gz" is decompressed).
            format: "word2vec", "glove" or None to tell from the first line.
            limit: read only the first `limit` words.
        """
        if format is not None and format not in FORMATS:
            raise ValueError(f"unknown vector file format {format!r}; choose one of {', '.join(FORMATS)}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"word vector file {path!r} does not exist")
        words, rows, dim = [], [], None
        with _open_text(path) as f:
            first = f.readline()
            header = first.split()
            has_header = len(header) == 2 and all(part.isdigit() for part in header)
            if format == "word2vec" and not has_header:
                raise ValueError(f"{path!r} does not start with a word2vec header line \"N D\"; got {first[:60]!r}")
            lines = f if has_header and format != "glove" else _chain([first], f)
            if has_header and format != "glove":
                dim = int(header[1])
            for number, line in enumerate(lines, 2 if has_header else 1):
                if limit is not None and len(words) >= limit:
                    break
                parts = line.rstrip("\n").rstrip().split(" ")
                if len(parts) < 2:
                    if not line.strip():
                        continue
                    raise ValueError(f"{path}:{number}: expected a word and its vector, got {line[:60]!r}")
                dim = dim or len(parts) - 1
                if len(parts) - 1 != dim:
                    raise ValueError(f"{path}:{number}: {len(parts) - 1} numbers where the file has dim {dim}")
                words.append(parts[0])
                rows.append(np.asarray(parts[1:], dtype=np.float32))
        if not words:
            raise ValueError(f"{path!r} holds no word vectors")
        return cls(words, np.stack(rows))

    def save(self, path, format="word2vec", precision=6):
        """Writes the word2vec text format (with "N D" header) or GloVe's (without), whole or
        not at all (a temporary file renamed into place)."""
        if format not in FORMATS:
            raise ValueError(f"unknown vector file format {format!r}; choose one of {', '.join(FORMATS)}")

        def write(tmp):
            with _open_text(tmp, "w") as f:
                if format == "word2vec":
                    f.write(f"{len(self)} {self.dim}\n")
                for word, vector in zip(self.words, self.vectors):
                    f.write(word + " " + " ".join(f"{x:.{precision}g}" for x in vector) + "\n")

        replace_atomically(path, write)

    def save_counts(self, path):
        """Writes "word count" lines in row order (word2vec's -save-vocab format)."""
        if self.counts is None:
            raise ValueError("these word vectors have no counts to save")

        def write(tmp):
            with _open_text(tmp, "w") as f:
                for word, count in zip(self.words, self.counts):
                    f.write(f"{word} {int(count)}\n")

        replace_atomically(path, write)

    # ---------------------------------------------------------------- queries

    def most_similar(self, positive, negative=(), top_n=10, exclude=None):
        """Words nearest by cosine to the sum of the unit vectors of `positive` minus those of
        `negative` (words or vectors); the query words themselves are left out.

        Returns:
            list of (word, cosine) pairs, most similar first.
        """
        positive, negative = _as_list(positive), _as_list(negative)
        query = np.zeros(self.dim, dtype=np.float32)
        for item in positive:
            query += self._as_unit(item)
        for item in negative:
            query -= self._as_unit(item)
        scores = self.unit_vectors @ (query / max(float(np.linalg.norm(query)), 1e-12))
        skip = {w for w in positive + negative if isinstance(w, str)} | set(exclude or ())
        return self._top(scores, skip, top_n)

    def similarity(self, first, second):
        """Cosine similarity of two words (or vectors)."""
        return float(self._as_unit(first) @ self._as_unit(second))

    def analogy(self, a, b, c, method="add", top_n=1, restrict=None):
        """Solves a : b :: c : ?  (e.g. man : king :: woman : queen).

        Args:
            method: "add" (3CosAdd: argmax cos(x, b - a + c)) or "mul" (3CosMul, Levy &
                Goldberg 2014: argmax cos'(x,b) cos'(x,c) / (cos'(x,a) + 1e-3) with
                cos' = (cos + 1) / 2).
            restrict: search only the first `restrict` rows (the most frequent words).

        Returns:
            list of (word, score) pairs; a, b and c are never answers.
        """
        if method not in ANALOGY_METHODS:
            raise ValueError(f"unknown analogy method {method!r}; choose one of {', '.join(ANALOGY_METHODS)}")
        unit = self.unit_vectors if restrict is None else self.unit_vectors[:restrict]
        ua, ub, uc = (self._as_unit(w) for w in (a, b, c))
        if method == "add":
            query = ub - ua + uc
            scores = unit @ (query / max(float(np.linalg.norm(query)), 1e-12))
        else:
            cos_a, cos_b, cos_c = ((unit @ u + 1.0) / 2.0 for u in (ua, ub, uc))
            scores = cos_b * cos_c / (cos_a + 1e-3)
        return self._top(scores, {a, b, c}, top_n)

    def _top(self, scores, skip, top_n):
        order = np.argsort(-scores, kind="stable")
        results = []
        for i in order:
            if self.words[i] not in skip:
                results.append((self.words[i], float(scores[i])))
                if len(results) == top_n:
                    break
        return results

    # ---------------------------------------------------------------- evaluation

    def evaluate_word_pairs(self, pairs, lowercase=True):
        """Spearman correlation between human similarity scores and vector cosines.

        Args:
            pairs: a file path or an iterable of (word1, word2, score). Files hold one pair
                per line separated by tabs, commas or spaces (WordSim-353, SimLex-999, MEN,
                RG-65, ...); lines starting with "#" and lines whose score is not a number
                (headers) are skipped, and columns after the third are ignored.
            lowercase: lowercase the words before looking them up.

        Returns:
            dict with "spearman", "pairs" (scored) and "oov" (pairs with an unknown word).
        """
        rows = _read_pairs(pairs) if isinstance(pairs, (str, os.PathLike)) else list(pairs)
        human, model, oov = [], [], 0
        for first, second, score in rows:
            if lowercase:
                first, second = first.lower(), second.lower()
            if first not in self or second not in self:
                oov += 1
                continue
            human.append(float(score))
            model.append(self.similarity(first, second))
        rho = spearman(human, model) if len(human) >= 2 else float("nan")
        return {"spearman": rho, "pairs": len(human), "oov": oov}

    def evaluate_analogies(self, questions, method="add", restrict=None, lowercase=True):
        """Accuracy on analogy questions "a b c d" (a : b :: c : d).

        Args:
            questions: a file path or an iterable of 4-tuples. Files use the Google format
                (questions-words.txt: ": section" lines then "a b c d" lines, spaces or tabs;
                BATS-style tab-separated quadruples work too).
            method: "add" or "mul" (see `analogy`).
            restrict: answer among the `restrict` most frequent words only (word2vec's 30000
                convention); questions with a word outside are out of vocabulary.

        Returns:
            dict with "accuracy", "correct", "questions" (answered), "oov", and "sections"
            (per-section dicts with the same keys but "sections").
        """
        items = _read_analogies(questions) if isinstance(questions, (str, os.PathLike)) else [("", q) for q in questions]
        limit = len(self) if restrict is None else min(restrict, len(self))
        known = set(self.words[:limit])
        sections = {}
        for section, quad in items:
            quad = [w.lower() for w in quad] if lowercase else list(quad)
            stats = sections.setdefault(section, {"correct": 0, "questions": 0, "oov": 0})
            if any(w not in known for w in quad):
                stats["oov"] += 1
                continue
            a, b, c, d = quad
            stats["questions"] += 1
            stats["correct"] += int(self.analogy(a, b, c, method=method, restrict=limit)[0][0] == d)
        for stats in sections.values():
            stats["accuracy"] = stats["correct"] / stats["questions"] if stats["questions"] else float("nan")
        total = {key: sum(s[key] for s in sections.values()) for key in ("correct", "questions", "oov")}
        total["accuracy"] = total["correct"] / total["questions"] if total["questions"] else float("nan")
        total["sections"] = sections
        return total

    # ---------------------------------------------------------------- from a masked LM

    @classmethod
    def from_masked_lm(cls, model, vocabulary, words=None, lowercase=True):
        """Static word vectors from a kmlm model's token-embedding table: a word's vector is
        the mean of the rows of its WordPiece pieces (`kmlm.wordvec.from_mlm.static_vectors`).

        Example:
        (Needs a trained run directory such as `runs/demo`, so not run as a test.)
        >>> vectors = WordVectors.from_masked_lm(kmlm.load_run("runs/demo"), None)  # doctest: +SKIP
        """
        from kmlm.wordvec.from_mlm import static_vectors

        return static_vectors(model, vocabulary, words=words, lowercase=lowercase)

    @classmethod
    def contextual(cls, model, vocabulary, documents, **options):
        """Contextual word vectors: a word's vector is the mean of the encoder's outputs at its
        occurrences in `documents`; `options` as `kmlm.wordvec.from_mlm.contextual_vectors`.

        Example:
        (Needs a trained run directory such as `runs/demo`, so not run as a test.)
        >>> vectors = WordVectors.contextual(kmlm.load_run("runs/demo"), None, ["a text", "more text"])  # doctest: +SKIP
        """
        from kmlm.wordvec.from_mlm import contextual_vectors

        return contextual_vectors(model, vocabulary, documents, **options)


def _as_list(items):
    # One word or one vector, or a list of them.
    if isinstance(items, str) or (isinstance(items, np.ndarray) and items.ndim == 1):
        return [items]
    return list(items)


def _read_pairs(path):
    rows = []
    with _open_text(path) as f:
        for line in f:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.replace("\t", " ").replace(",", " ").split()
            if len(parts) < 3:
                continue
            try:
                rows.append((parts[0], parts[1], float(parts[2])))
            except ValueError:
                continue  # a header line
    if not rows:
        raise ValueError(f"{path!r} holds no word pairs; expected lines \"word1 word2 score\"")
    return rows


def _read_analogies(path):
    items, section = [], ""
    with _open_text(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.startswith(":"):
                section = line[1:].strip()
                continue
            parts = line.split()
            if len(parts) != 4:
                raise ValueError(f"{path}:{number}: expected 4 words \"a b c d\", got {line.strip()[:60]!r}")
            items.append((section, parts))
    if not items:
        raise ValueError(f"{path!r} holds no analogy questions")
    return items


def _open_text(path, mode="r"):
    if str(path).endswith(".gz"):
        import gzip

        return gzip.open(path, mode + "t", encoding="utf-8", errors="replace" if mode == "r" else "strict")
    return open(path, mode, encoding="utf-8", errors="replace" if mode == "r" else "strict")


def _chain(first, rest):
    yield from first
    yield from rest


def write_vectors_directory(out, vectors, record_file, *, settings, corpus=None, extra=None, format="word2vec",
                            vectors_file=VECTORS_FILE):
    """The output folder of a vector trainer: `vectors_file` (default `vectors.txt`),
    `vocab.txt` ("word count" lines) and a JSON record `record_file` of the corpus, the
    settings (a dataclass), the vocabulary size and `extra`.

    Example:
    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Settings:
    ...     dim: int = 2
    >>> vectors = WordVectors(["a", "b"], [[1.0, 0.0], [0.6, 0.8]], counts=[5, 3])
    >>> write_vectors_directory("runs/w2v", vectors, "word2vec.json", settings=Settings(), corpus="corpus.txt")
    >>> sorted(os.listdir("runs/w2v"))
    ['vectors.txt', 'vocab.txt', 'word2vec.json']
    """
    os.makedirs(out, exist_ok=True)
    vectors.save(os.path.join(out, vectors_file), format=format)
    vectors.save_counts(os.path.join(out, COUNTS_FILE))
    record = {"corpus": corpus, "settings": dataclasses.asdict(settings), "vocabulary_size": len(vectors),
              **(extra or {})}
    write_json_atomically(os.path.join(out, record_file), record)

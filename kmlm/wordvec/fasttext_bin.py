"""Facebook fastText's binary model file (`.bin`), read and written with NumPy.

The layout (fastText 0.9, file version 12; all little-endian):

```
int32 magic 793712314, int32 version
args:        int32 dim, ws, epoch, minCount, neg, wordNgrams, loss, model, bucket, minn, maxn,
             lrUpdateRate; float64 t
dictionary:  int32 size, nwords, nlabels; int64 ntokens, pruneidx_size;
             per entry: UTF-8 bytes, NUL, int64 count, int8 type (0 word, 1 label)
input:       bool quantized; int64 rows (nwords + bucket), cols; float32 rows x cols
output:      bool quantized; int64 rows, cols; float32 rows x cols
```

Files of fastText before 2017 have no magic and version, no pruneidx_size and no quantized
flags; they are read too. `pruneidx_size` is written as -1 (not pruned): fastText reads 0 as
"every n-gram pruned".

Example:
>>> import numpy as np
>>> from kmlm.wordvec.subwords import SubwordVectors
>>> vectors = SubwordVectors(["walk", "talk"], np.ones((2, 4)), np.zeros((50, 4)), 3, 6, counts=[7, 5])
>>> save_fasttext_bin("model.bin", vectors, np.zeros((2, 4)), FastTextArgs(model="cbow"))
>>> loaded = load_fasttext_bin("model.bin")
>>> loaded.vectors.words, loaded.args.model, loaded.vectors.buckets
(['walk', 'talk'], 'cbow', 50)
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct

import numpy as np

from kmlm.files import replace_atomically
from kmlm.wordvec.subwords import SubwordVectors

MAGIC = 793712314
VERSION = 12
MODELS = {1: "cbow", 2: "skipgram", 3: "supervised"}
LOSSES = {1: "hs", 2: "ns", 3: "softmax", 4: "ova"}
_ARGS = struct.Struct("<12id")


@dataclasses.dataclass
class FastTextArgs:
    """The training arguments a `.bin` records besides the sizes of its tables.

    Attributes:
        model: "skipgram" or "cbow" ("supervised" only when read from a classifier file).
        loss: "ns" (negative sampling), "hs", "softmax" or "ova".
        window, epochs, min_count, negatives: as fastText's -ws, -epoch, -minCount, -neg.
        subsample: the subsampling threshold t.
        word_ngrams, lr_update_rate: recorded for fastText; unused by word vectors.
    """

    model: str = "skipgram"
    loss: str = "ns"
    window: int = 5
    epochs: int = 5
    min_count: int = 5
    negatives: int = 5
    subsample: float = 1e-4
    word_ngrams: int = 1
    lr_update_rate: int = 100


@dataclasses.dataclass
class FastTextFile:
    """What `load_fasttext_bin` returns: `vectors` (`SubwordVectors` with counts), the output
    table `output_rows` [rows, D], the `args`, the corpus token count `tokens` and the file
    `version` (0 for files without one)."""

    vectors: SubwordVectors
    output_rows: np.ndarray
    args: FastTextArgs
    tokens: int
    version: int


def save_fasttext_bin(path, vectors: SubwordVectors, output_rows, args: FastTextArgs, tokens=None):
    """Writes `vectors` (and the output table) as a fastText 0.9 `.bin`, whole or not at all.

    Args:
        path: the file to write.
        vectors: `SubwordVectors` with counts.
        output_rows: [V, D] output vectors (negative sampling's context table).
        args: `FastTextArgs`.
        tokens: corpus tokens (default: the sum of the counts).
    """
    if vectors.counts is None:
        raise ValueError("a fastText .bin records word counts; these vectors have none")
    output_rows = np.ascontiguousarray(output_rows, dtype="<f4")
    if output_rows.ndim != 2 or output_rows.shape[1] != vectors.dim:
        raise ValueError(f"output rows of shape {output_rows.shape} do not match vectors of dim {vectors.dim}")
    codes = {name: code for code, name in MODELS.items()}, {name: code for code, name in LOSSES.items()}
    tokens = int(vectors.counts.sum()) if tokens is None else int(tokens)
    header = struct.pack("<2i", MAGIC, VERSION) + _ARGS.pack(
        vectors.dim, args.window, args.epochs, args.min_count, args.negatives, args.word_ngrams,
        codes[1][args.loss], codes[0][args.model], vectors.buckets, vectors.min_n, vectors.max_n,
        args.lr_update_rate, args.subsample,
    )
    entries = b"".join(
        word.encode("utf-8") + b"\0" + struct.pack("<qb", int(count), 0)
        for word, count in zip(vectors.words, vectors.counts)
    )
    dictionary = struct.pack("<3i2q", len(vectors), len(vectors), 0, tokens, -1) + entries
    input_rows = np.concatenate([vectors.word_rows, vectors.ngram_rows]).astype("<f4")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(header + dictionary)
            for table in (input_rows, output_rows):
                f.write(struct.pack("<?2q", False, *table.shape))
                f.write(table.tobytes())

    replace_atomically(path, write)


def load_fasttext_bin(path, encoding="utf-8") -> FastTextFile:
    """Reads a fastText `.bin` of word vectors (skipgram or cbow; old and new file versions).

    Words that are not valid `encoding` keep their bytes as backslash escapes, as gensim does;
    an empty word or one containing whitespace is left out.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a fastText model, cut short, quantized (`.ftz`) or supervised.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fastText model {path!r} does not exist")
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < _ARGS.size:
            raise ValueError(f"{path!r} is not a fastText .bin: it is only {os.fstat(f.fileno()).st_size} bytes")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _Reader(path, data, encoding).model()


class _Reader:
    """Reads the parts of a `.bin` in order from a memory map."""

    def __init__(self, path, data, encoding):
        self.path, self.data, self.encoding, self.at = path, data, encoding, 0

    def unpack(self, layout):
        layout = struct.Struct(layout) if isinstance(layout, str) else layout
        if self.at + layout.size > len(self.data):
            raise self.cut_short()
        values = layout.unpack_from(self.data, self.at)
        self.at += layout.size
        return values

    def cut_short(self):
        return ValueError(f"{self.path!r} is cut short at byte {self.at} of {len(self.data)}: it is not a complete "
                          "fastText .bin (copy or download it again)")

    def model(self):
        magic, version = struct.unpack_from("<2i", self.data, 0)
        new_format = magic == MAGIC
        # Files without magic and version start with the args themselves.
        self.at, version = (8, version) if new_format else (0, 0)
        dim, window, epochs, min_count, negatives, word_ngrams, loss, model, buckets, min_n, max_n, rate, t = (
            self.unpack(_ARGS))
        if model not in MODELS or loss not in LOSSES or not 0 < dim <= 1 << 16 or buckets < 0:
            raise ValueError(f"{self.path!r} is not a fastText .bin (no fastText header: magic {magic}, model code "
                             f"{model}, dim {dim})")
        if MODELS[model] == "supervised":
            raise ValueError(f"{self.path!r} is a supervised fastText model (a text classifier), not word vectors; "
                             "give a model trained with skipgram or cbow")
        args = FastTextArgs(model=MODELS[model], loss=LOSSES[loss], window=window, epochs=epochs,
                            min_count=min_count, negatives=negatives, subsample=t, word_ngrams=word_ngrams,
                            lr_update_rate=rate)
        words, counts, tokens = self.dictionary(new_format)
        input_rows = self.matrix(new_format, "input")
        output_rows = self.matrix(new_format, "output")
        if input_rows.shape != (len(words) + buckets, dim):
            raise ValueError(f"{self.path!r}: the input table is {input_rows.shape}, expected "
                             f"({len(words)} words + {buckets} buckets, {dim})")
        # An empty word or one with whitespace (fastText files may hold one) cannot be queried or
        # written as text: its row is left out, the others keep theirs.
        usable = np.array([bool(w) and not any(c.isspace() for c in w) for w in words], dtype=bool)
        vectors = SubwordVectors([w for w, keep in zip(words, usable) if keep], input_rows[: len(words)][usable],
                                 input_rows[len(words):], min_n, max_n, counts=counts[usable])
        return FastTextFile(vectors=vectors, output_rows=output_rows, args=args, tokens=tokens, version=version)

    def dictionary(self, new_format):
        size, nwords, nlabels = self.unpack("<3i")
        tokens, = self.unpack("<q")
        pruned = self.unpack("<q")[0] if new_format else 0
        if nlabels > 0:
            raise ValueError(f"{self.path!r} is a supervised fastText model ({nlabels} labels), not word vectors; "
                             "give a model trained with skipgram or cbow")
        words, counts = [], []
        entry = struct.Struct("<qb")
        for _ in range(size):
            end = self.data.find(b"\0", self.at)
            if end < 0:
                raise self.cut_short()
            raw = self.data[self.at : end]
            self.at = end + 1
            count, kind = self.unpack(entry)
            if kind == 0:
                words.append(raw.decode(self.encoding, errors="backslashreplace"))
                counts.append(count)
        self.at += 8 * max(pruned, 0)  # pairs of the pruned n-gram index (not used for vectors)
        return words, np.asarray(counts, dtype=np.int64), tokens

    def matrix(self, new_format, name):
        if new_format and self.unpack("<?")[0]:
            raise ValueError(f"{self.path!r} has a quantized {name} table (a .ftz model); quantized fastText models "
                             "are not supported: give the .bin it was quantized from")
        rows, cols = self.unpack("<2q")
        if rows < 0 or cols < 0 or self.at + 4 * rows * cols > len(self.data):
            raise self.cut_short()
        table = np.frombuffer(self.data, dtype="<f4", count=rows * cols, offset=self.at).reshape(rows, cols)
        self.at += 4 * rows * cols
        return table.astype(np.float32)

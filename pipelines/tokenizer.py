"""The in-graph tokenizers (WordPiece, and the byte-level BPE and SentencePiece of converted
checkpoints) and the ids of the special tokens.

Every run has a vocabulary (vocab.txt, token per line, `SPECIAL_TOKENS` among them). A run
converted from a RoBERTa or ALBERT checkpoint also has the files of its own tokenizer
(`TokenizerFiles`: BPE merges, a SentencePiece model); loading the run directory registers
them for its vocabulary (`register_tokenizer`), and from then on `make_tokenizer` of that
vocabulary, wherever it is called (fill-mask, embed, fine-tuning, export), builds that
tokenizer instead of WordPiece.
"""

from __future__ import annotations

import dataclasses
import re

import keras_hub
import tensorflow as tf

from kmlm.pipelines.vocabulary import SPECIAL_TOKENS, resolve_vocabulary

TOKENIZER_KINDS = ("wordpiece", "byte_bpe", "sentencepiece")


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """The ids of the special tokens in one vocabulary.

    Attributes:
        pad: Id of `[PAD]`.
        unk: Id of `[UNK]`.
        cls: Id of `[CLS]`, which starts every document.
        sep: Id of `[SEP]`, which ends every document.
        mask: Id of `[MASK]`, which replaces most masked tokens.

    Example:
        >>> special_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]).mask
        4
    """

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int


def special_ids(vocabulary: list[str] | str) -> SpecialIds:
    """Looks up the special token ids of a vocabulary (a token list or a file path).

    Args:
        vocabulary: The tokens in id order, or the path of a vocabulary file.

    Returns:
        A `SpecialIds`.

    Raises:
        ValueError: If a special token is missing.

    Example:
        >>> special_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]).cls
        2
    """
    vocabulary = resolve_vocabulary(vocabulary)
    index = {token: i for i, token in enumerate(vocabulary)}
    pad, unk, cls, sep, mask = (index[token] for token in SPECIAL_TOKENS)
    return SpecialIds(pad=pad, unk=unk, cls=cls, sep=sep, mask=mask)


@dataclasses.dataclass(frozen=True)
class TokenizerFiles:
    """What a tokenizer other than WordPiece needs besides its vocabulary.

    Attributes:
        kind: "byte_bpe" (RoBERTa, GPT-2) or "sentencepiece" (ALBERT).
        merges: byte_bpe: the merge rules ("Ġ t"), highest priority first.
        model: sentencepiece: the serialized model (the bytes of a `.model` file).
        lowercase: sentencepiece: lowercase before the model, as ALBERT's `do_lower_case`.
        strip_accents: sentencepiece: drop combining marks after NFKD, as ALBERT's
            `keep_accents=False`.
    """

    kind: str
    merges: tuple = ()
    model: bytes = b""
    lowercase: bool = False
    strip_accents: bool = False

    def __post_init__(self):
        if self.kind not in TOKENIZER_KINDS[1:]:
            raise ValueError(f"unknown tokenizer kind {self.kind!r}; choose one of {', '.join(TOKENIZER_KINDS[1:])}")


# tuple(vocabulary) -> TokenizerFiles, filled by `register_tokenizer` (a run directory's loader).
_REGISTERED: dict = {}


def register_tokenizer(vocabulary: list[str], files: TokenizerFiles) -> None:
    """Makes `make_tokenizer(vocabulary)` build the tokenizer of `files` from now on."""
    _REGISTERED[tuple(vocabulary)] = files


def registered_tokenizer(vocabulary: list[str]) -> TokenizerFiles | None:
    """The `TokenizerFiles` registered for `vocabulary`, or None for a WordPiece vocabulary."""
    return _REGISTERED.get(tuple(vocabulary))


def make_tokenizer(vocabulary: list[str] | str, *, lowercase: bool = True):
    """Builds the in-graph tokenizer for a vocabulary: WordPiece, or the byte-level BPE or
    SentencePiece tokenizer registered for it (`register_tokenizer`).

    Text is split on whitespace, punctuation and around every CJK character; with
    `lowercase=True` it is lowercased and accents are stripped, as `learn_vocabulary`
    does. Special tokens written literally in the text (e.g. `"[MASK]"`) map to their ids.
    Inside `tf.data` or a `tf.function`, a batch of strings gives a ragged int32 tensor.

    Args:
        vocabulary: The tokens in id order, or the path of a vocabulary file.
        lowercase: Whether to lowercase and strip accents.

    Returns:
        A `keras_hub.tokenizers.WordPieceTokenizer` (or, for a registered vocabulary, a
        `ByteLevelBPETokenizer` or `SentencePieceTextTokenizer`); all have `tokenize`.

    Raises:
        FileNotFoundError: If a vocabulary path does not exist.
        ValueError: If the vocabulary lacks a special token or repeats a token.

    Example:
        >>> tokenizer = make_tokenizer(list(SPECIAL_TOKENS) + ["hello", "world"])
        >>> tokenizer.tokenize("Hello [MASK] world")
        array([5, 4, 6], dtype=int32)
    """
    vocabulary = resolve_vocabulary(vocabulary)
    files = registered_tokenizer(vocabulary)
    if files is not None and files.kind == "byte_bpe":
        return ByteLevelBPETokenizer(vocabulary, files.merges)
    if files is not None:
        return SentencePieceTextTokenizer(vocabulary, files)
    _refuse_foreign_vocabulary(vocabulary)
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary,
        lowercase=lowercase,
        strip_accents=lowercase,
        split_on_cjk=True,
        oov_token="[UNK]",
        special_tokens=list(SPECIAL_TOKENS),
        special_tokens_in_strings=True,
        dtype="int32",
    )


def _refuse_foreign_vocabulary(vocabulary):
    """A byte-level BPE or SentencePiece vocabulary read without its tokenizer files would be
    split into different (wrong) pieces by WordPiece: refuse it in one line instead."""
    if "##" in " ".join(vocabulary[:2000]):
        return
    for marker, kind in (("\u0120", "byte-level BPE"), ("\u2581", "SentencePiece")):
        if sum(token.startswith(marker) for token in vocabulary) > len(vocabulary) // 4:
            raise ValueError(
                f"this vocabulary belongs to a {kind} tokenizer (its pieces start with {marker!r}), not WordPiece; "
                "load it through its run directory (kmlm.run_directory.load_run), which reads the tokenizer's files"
            )


class ByteLevelBPETokenizer(keras_hub.tokenizers.BytePairTokenizer):
    """RoBERTa's byte-level BPE, in the graph (keras-hub's `BytePairTokenizer`, TF path).

    The special tokens written in a text (`[MASK]`, ...) map to their ids, and `[MASK]` takes
    the whitespace before it, as RoBERTa's `<mask>` does (so "a [MASK]" is two tokens).

    Args:
        vocabulary: the tokens in id order (the specials under kmlm's names).
        merges: the merge rules ("Ġ t"), highest priority first.
    """

    def __init__(self, vocabulary, merges, **kwargs):
        super().__init__(
            vocabulary={token: i for i, token in enumerate(vocabulary)},
            merges=list(merges),
            unsplittable_tokens=list(SPECIAL_TOKENS),
            dtype="int32",
            _allow_python_workflow=False,  # the same in-graph path eagerly as in tf.data and serving
            **kwargs,
        )

    def tokenize(self, inputs):
        inputs = tf.strings.regex_replace(inputs, r"\s*\[MASK\]", "[MASK]")
        return super().tokenize(inputs)


class SentencePieceTextTokenizer:
    """ALBERT's SentencePiece tokenizer, in the graph (TF Text's `SentencepieceTokenizer`).

    Special tokens written in a text are split off first and map to their ids; the rest is
    normalized as ALBERT's tokenizer does (`` and '' become ", then NFKD without combining
    marks and lowercase when the files say so) and encoded by the SentencePiece model.

    Args:
        vocabulary: the tokens in id order (the model's pieces, specials under kmlm's names).
        files: the `TokenizerFiles` with the serialized model.

    Call arguments of `tokenize`: a string, or a batch of strings ([B] -> ragged int32 [B, None]).
    """

    def __init__(self, vocabulary, files):
        import tensorflow_text as tf_text

        self.files = files
        self._model = tf_text.SentencepieceTokenizer(model=files.model, out_type=tf.int32)
        self._specials = [token for token in SPECIAL_TOKENS if token in vocabulary]
        self._special_ids = tf.constant([vocabulary.index(token) for token in self._specials], tf.int32)
        self._pattern = "|".join(re.escape(token) for token in self._specials)

    def _normalize(self, text):
        text = tf.strings.regex_replace(text, "``|''", '"')
        if self.files.strip_accents:
            import tensorflow_text as tf_text

            text = tf.strings.regex_replace(tf_text.normalize_utf8(text, "NFKD"), r"\p{Mn}", "")
        if self.files.lowercase:
            text = tf.strings.lower(text, encoding="utf-8")
        return text

    def tokenize(self, inputs):
        import tensorflow_text as tf_text

        inputs = tf.convert_to_tensor(inputs, tf.string)
        unbatched = inputs.shape.rank == 0
        texts = tf.reshape(inputs, [-1])
        pieces = tf_text.regex_split(texts, self._pattern, self._pattern)  # [B, pieces]
        flat = pieces.flat_values
        matches = tf.equal(flat[:, None], tf.constant(self._specials)[None, :])
        is_special = tf.reduce_any(matches, axis=1)
        which = tf.gather(self._special_ids, tf.argmax(tf.cast(matches, tf.int32), axis=1))
        special = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(which, is_special), tf.cast(is_special, tf.int64))
        encoded = self._model.tokenize(tf.where(is_special, tf.constant(""), self._normalize(flat)))
        ids = tf.concat([special, tf.cast(encoded, tf.int32)], axis=1)  # one of the two is empty per piece
        ids = tf.RaggedTensor.from_row_splits(ids, pieces.row_splits).merge_dims(1, 2)
        return ids[0] if unbatched else ids

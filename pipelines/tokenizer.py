"""The in-graph WordPiece tokenizer and the ids of the special tokens."""

from __future__ import annotations

import dataclasses

import keras_hub

from kmlm.pipelines.vocabulary import SPECIAL_TOKENS, resolve_vocabulary


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


def make_tokenizer(
    vocabulary: list[str] | str, *, lowercase: bool = True
) -> keras_hub.tokenizers.WordPieceTokenizer:
    """Builds the in-graph WordPiece tokenizer for a vocabulary.

    Text is split on whitespace, punctuation and around every CJK character; with
    `lowercase=True` it is lowercased and accents are stripped, as `learn_vocabulary`
    does. Special tokens written literally in the text (e.g. `"[MASK]"`) map to their ids.
    Inside `tf.data` or a `tf.function`, a batch of strings gives a ragged int32 tensor.

    Args:
        vocabulary: The tokens in id order, or the path of a vocabulary file.
        lowercase: Whether to lowercase and strip accents.

    Returns:
        A `keras_hub.tokenizers.WordPieceTokenizer`.

    Raises:
        FileNotFoundError: If a vocabulary path does not exist.
        ValueError: If the vocabulary lacks a special token or repeats a token.

    Example:
        >>> tokenizer = make_tokenizer(list(SPECIAL_TOKENS) + ["hello", "world"])
        >>> tokenizer.tokenize("Hello [MASK] world")
        array([5, 4, 6], dtype=int32)
    """
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=resolve_vocabulary(vocabulary),
        lowercase=lowercase,
        strip_accents=lowercase,
        split_on_cjk=True,
        oov_token="[UNK]",
        special_tokens=list(SPECIAL_TOKENS),
        special_tokens_in_strings=True,
        dtype="int32",
    )

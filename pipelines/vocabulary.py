"""WordPiece vocabularies: learn one from a corpus, save it, load and validate it.

A kmlm vocabulary is a plain text file with one token per line; the line number (from 0) is
the token id. Vocabularies learned here start with `SPECIAL_TOKENS` at ids 0..4; vocabularies
from elsewhere (e.g. Google's BERT `vocab.txt`) are accepted as long as they contain every
special token once. Tokens written `[name]` (the special tokens, BERT's `[unused12]`) are
markup, not text: `never_predicted` marks them, and no prediction, generation or random
replacement ever produces one.
"""

from __future__ import annotations

import collections
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow as tf

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

#: The smallest vocabulary `learn_vocabulary` accepts: the special tokens plus room for the
#: characters of an ordinary English corpus.
MIN_VOCABULARY_SIZE = 128

VOCABULARY_METHODS = ("fast", "keras-nlp")

CONTINUATION_PREFIX = "##"

#: TF Text's in-graph WordPiece tokenizer refuses a vocabulary holding a token longer than
#: this many UTF-8 bytes (not counting the `##` prefix).
MAX_TOKEN_BYTES = 256

#: The in-graph tokenizer maps a word longer than this many UTF-8 bytes to `[UNK]`, so a
#: learned piece longer than this could never be matched.
MAX_WORD_BYTES = 100

# "[CLS]", "[unused12]" and the like: reserved entries of a vocabulary, never text (a
# learned vocabulary cannot hold one: pre-tokenization splits "[" and "]" off every word).
_MARKUP_TOKEN = re.compile(r"\[\w+\]")

# CJK ideographs: the tokenizers split around each one, so none ever continues a word.
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))

# How many documents travel together from a tf.data corpus into the trainers.
_STREAM_BATCH = 1024


def learn_vocabulary(
    documents: Iterable[str] | tf.data.Dataset,
    size: int,
    *,
    lowercase: bool = True,
    method: str = "fast",
) -> list[str]:
    """Learns a WordPiece vocabulary of at most `size` tokens from documents.

    Text is normalized as `make_tokenizer` normalizes it in the graph: with
    `lowercase=True` accents are stripped and text is lowercased (BERT "uncased"); every
    CJK character is a word of its own; words split on whitespace and punctuation. Pieces
    that continue a word carry the `##` prefix. The documents are streamed (twice with
    `method="fast"`: characters first, then words), so a corpus larger than memory is fine;
    an iterator that can be read only once is held in memory. The same documents give the
    same vocabulary, token for token, in every process.

    Args:
        documents: Python strings, or a `tf.data.Dataset` of scalar `tf.string` documents
            (e.g. from `load_documents`).
        size: The largest number of tokens to return, special tokens included. A corpus
            with too few distinct words yields a smaller vocabulary.
        lowercase: Whether to lowercase and strip accents (must match the tokenizer).
        method: `"fast"` uses the Rust WordPiece trainer of the `tokenizers` package;
            `"keras-nlp"` uses `keras_hub.tokenizers.compute_word_piece_vocabulary`
            (TensorFlow Text's BERT vocabulary learner, much slower).

    Returns:
        The tokens, `SPECIAL_TOKENS` first (ids 0..4), then the learned pieces.

    Raises:
        ValueError: If `size` is too small or `method` is unknown.

    Example:
        >>> vocab = learn_vocabulary(["Hello world.", "Hello there!"] * 50, 200)
        >>> vocab[:5]
        ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < MIN_VOCABULARY_SIZE:
        raise ValueError(
            f"vocabulary size {size!r} is too small; kmlm learns vocabularies of at least "
            f"{MIN_VOCABULARY_SIZE} tokens (a fixed minimum, whatever the corpus), e.g. --size 8192"
        )
    if method == "fast":
        vocabulary = _learn_with_tokenizers(documents, size, lowercase)
    elif method == "keras-nlp":
        vocabulary = _learn_with_keras_nlp(documents, size, lowercase)
    else:
        raise ValueError(
            f"unknown vocabulary method {method!r}; use one of "
            + ", ".join(repr(m) for m in VOCABULARY_METHODS)
        )
    # Both trainers put the reserved tokens first; keep that an invariant, not a hope.
    # TF Text's learner can emit " " (NFKC turns a no-break space into a space after the
    # split), and both learn pieces of long symbol runs (a table drawn in box characters)
    # longer than any word the tokenizer splits; such tokens could never be matched.
    learned = [
        token for token in vocabulary
        if token not in SPECIAL_TOKENS and token and token == token.strip()
        and _piece_bytes(token) <= MAX_WORD_BYTES
    ]
    return list(SPECIAL_TOKENS) + learned[: size - len(SPECIAL_TOKENS)]


def _piece_bytes(token: str) -> int:
    """The UTF-8 length of a vocabulary token without its `##` prefix."""
    return len(token.removeprefix(CONTINUATION_PREFIX).encode("utf-8"))


def _text_batches(documents: Iterable[str] | tf.data.Dataset) -> Iterator[list[str]]:
    """Yields lists of Python strings from either kind of document source."""
    if isinstance(documents, tf.data.Dataset):
        for batch in documents.batch(_STREAM_BATCH).as_numpy_iterator():
            yield [text.decode("utf-8", errors="replace") for text in batch]
        return
    if isinstance(documents, (str, bytes)):
        raise ValueError(
            "documents must be an iterable of strings or a tf.data.Dataset, not a single "
            "string; wrap it in a list"
        )
    batch = []
    for text in documents:
        batch.append(text)
        if len(batch) == _STREAM_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _is_a_word_of_its_own(char: str) -> bool:
    """Whether BERT pre-tokenization always splits `char` off (whitespace, punctuation, CJK)."""
    code = ord(char)
    return (
        char.isspace()
        or 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
        or unicodedata.category(char).startswith("P")
        or any(start <= code <= end for start, end in _CJK_RANGES)
    )


def _fixed_alphabet(documents, normalizer, limit: int) -> tuple[list[str], list[str]]:
    """The `limit` most frequent characters of the normalized documents (ties by code
    point), and the `##` pieces of those that can continue a word, sorted.

    The Rust trainer creates `##` pieces in hash-map order and breaks ties between equally
    frequent merges (and alphabet cuts) by id, so the same corpus gave different
    vocabularies from run to run; pinning both before training makes every id fixed."""
    counts = collections.Counter()
    for batch in _text_batches(documents):
        for text in batch:
            counts.update(normalizer.normalize_str(text))
    chars = sorted((c for c in counts if not c.isspace()), key=lambda c: (-counts[c], ord(c)))[:limit]
    continuations = [CONTINUATION_PREFIX + c for c in sorted(chars) if not _is_a_word_of_its_own(c)]
    return chars, continuations


def _learn_with_tokenizers(documents, size: int, lowercase: bool) -> list[str]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    if not isinstance(documents, tf.data.Dataset) and iter(documents) is documents:
        documents = list(documents)  # read twice: once for the alphabet, once to learn

    tokenizer = Tokenizer(
        models.WordPiece(unk_token="[UNK]", continuing_subword_prefix=CONTINUATION_PREFIX)
    )
    # Mirror keras-hub's in-graph pre-tokenization: NFD accent stripping, then NFKC
    # case folding (approximated by NFKC + lowercase), CJK characters as words.
    steps = [
        normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=False
        )
    ]
    if lowercase:
        steps += [normalizers.NFKC(), normalizers.Lowercase()]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # Every character may need a `##` twin; keep the alphabet small enough that the two
    # together never exceed the requested size.
    alphabet, continuations = _fixed_alphabet(documents, tokenizer.normalizer, (size - len(SPECIAL_TOKENS)) // 2)
    trainer = trainers.WordPieceTrainer(
        vocab_size=size,
        # Reserved first, the `##` pieces right after them: their ids no longer depend on
        # the trainer's hash-map order.
        special_tokens=list(SPECIAL_TOKENS) + continuations,
        continuing_subword_prefix=CONTINUATION_PREFIX,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_text_batches(documents), trainer)
    ids = tokenizer.get_vocab()
    return sorted(ids, key=ids.get)


def _learn_with_keras_nlp(documents, size: int, lowercase: bool) -> list[str]:
    import keras_hub

    if isinstance(documents, tf.data.Dataset):
        data = documents.batch(_STREAM_BATCH)
    else:
        data = tf.data.Dataset.from_generator(
            lambda: _text_batches(documents),
            output_signature=tf.TensorSpec([None], tf.string),
        )
    return keras_hub.tokenizers.compute_word_piece_vocabulary(
        data,
        size,
        lowercase=lowercase,
        strip_accents=lowercase,
        split_on_cjk=True,
        suffix_indicator=CONTINUATION_PREFIX,
        reserved_tokens=list(SPECIAL_TOKENS),
    )


def is_never_predicted(token: str) -> bool:
    """Whether `token` is markup that no model output may be: a special token or a reserved
    `[name]` entry such as BERT's `[unused12]`.

    Args:
        token: A vocabulary entry.

    Returns:
        True for `[PAD]`, `[MASK]`, `[unused0]`, ...; False for text pieces, `[` included.

    Example:
        >>> [is_never_predicted(t) for t in ["[MASK]", "[unused7]", "[", "cat", "##s"]]
        [True, True, False, False, False]
    """
    return token in SPECIAL_TOKENS or bool(_MARKUP_TOKEN.fullmatch(token))


def never_predicted(vocabulary: list[str]) -> np.ndarray:
    """The tokens of a vocabulary that fill-mask, generation and random replacement never
    produce (see `is_never_predicted`).

    Args:
        vocabulary: The tokens in id order.

    Returns:
        A bool array [V], True at the ids never predicted.

    Example:
        >>> never_predicted(list(SPECIAL_TOKENS) + ["[unused0]", "cat"]).nonzero()[0].tolist()
        [0, 1, 2, 3, 4, 5]
    """
    return np.array([is_never_predicted(token) for token in vocabulary], bool).reshape(len(vocabulary))


def check_vocabulary(vocabulary: list[str], origin: str = "vocabulary") -> None:
    """Checks that a vocabulary has every special token, no empty or repeated token and no
    token longer than the in-graph tokenizer accepts (`MAX_TOKEN_BYTES`).

    Args:
        vocabulary: The tokens, in id order.
        origin: How to name the vocabulary in error messages, e.g. `"vocabulary 'v.txt'"`.

    Raises:
        ValueError: Naming the first problem found.

    Example:
        >>> check_vocabulary(list(SPECIAL_TOKENS) + ["hello"])
    """
    seen: dict[str, int] = {}
    for index, token in enumerate(vocabulary):
        if not isinstance(token, str) or not token or token != token.strip():
            raise ValueError(
                f"{origin} has an invalid token {token!r} at id {index}; tokens must be "
                "non-empty strings without surrounding whitespace"
            )
        if _piece_bytes(token) > MAX_TOKEN_BYTES:
            raise ValueError(
                f"{origin} line {index + 1} (id {index}) holds a token of {_piece_bytes(token)} UTF-8 bytes "
                f"({token[:12] + '...'!r}); the WordPiece tokenizer accepts at most "
                f"{MAX_TOKEN_BYTES} bytes per token (not counting '##'): shorten or remove it"
            )
        if token in seen:
            raise ValueError(
                f"{origin} repeats the token {token!r} (ids {seen[token]} and {index}); "
                "every token must appear once"
            )
        seen[token] = index
    for special in SPECIAL_TOKENS:
        if special not in seen:
            raise ValueError(
                f"{origin} is missing the special token {special}; a kmlm vocabulary must "
                f"contain {', '.join(SPECIAL_TOKENS)}"
            )


def save_vocabulary(vocabulary: list[str], path: str) -> None:
    """Writes a vocabulary to `path`, one token per line (parent folders are created).

    Args:
        vocabulary: The tokens in id order; checked with `check_vocabulary` first.
        path: The file to write (conventionally `vocab.txt`).

    Example:
        >>> save_vocabulary(list(SPECIAL_TOKENS) + ["hello"], "/tmp/kmlm_doc/vocab.txt")
    """
    check_vocabulary(vocabulary)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        file.writelines(token + "\n" for token in vocabulary)


def load_vocabulary(path: str) -> list[str]:
    """Reads and checks a vocabulary written by `save_vocabulary` (or a BERT `vocab.txt`).

    Args:
        path: A text file with one token per line.

    Returns:
        The tokens in id order.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If a special token is missing or a token is empty, repeated or too long.

    Example:
        >>> save_vocabulary(list(SPECIAL_TOKENS) + ["hello"], "/tmp/kmlm_doc/vocab.txt")
        >>> load_vocabulary("/tmp/kmlm_doc/vocab.txt")[-1]
        'hello'
    """
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"vocabulary file {path!r} is a directory; give the vocabulary file itself (one token per "
            f"line), e.g. {os.path.join(path, 'vocab.txt')}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"vocabulary file {path!r} does not exist; create one with "
            f"`kmlm vocab --corpus SRC --size N --out {path}`"
        )
    with open(path, encoding="utf-8") as file:
        vocabulary = [line.rstrip("\r\n") for line in file]
    check_vocabulary(vocabulary, f"vocabulary {path!r}")
    return vocabulary


def resolve_vocabulary(vocabulary: list[str] | str) -> list[str]:
    """Returns the checked token list of a vocabulary given as tokens or as a file path.

    Args:
        vocabulary: The tokens in id order, or the path of a vocabulary file.

    Returns:
        The tokens in id order.

    Raises:
        FileNotFoundError: If a vocabulary path does not exist.
        ValueError: If a special token is missing or a token is empty, repeated or too long.

    Example:
        >>> resolve_vocabulary(list(SPECIAL_TOKENS) + ["hello"])[-1]
        'hello'
    """
    if isinstance(vocabulary, str):
        return load_vocabulary(vocabulary)
    vocabulary = list(vocabulary)
    check_vocabulary(vocabulary)
    return vocabulary

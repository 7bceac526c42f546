"""Word vectors and a masked LM's token embeddings, both ways.

From a kmlm masked LM to word vectors:
- `static_vectors`: a word's vector is the mean of the input-embedding rows of its
  WordPiece pieces;
- `contextual_vectors`: a word's vector is the mean, over its occurrences in documents, of
  the encoder's outputs at its pieces.

From word vectors to a masked LM: `embedding_table_from_vectors` / `init_token_embeddings`
start a token-embedding table from trained word vectors (`kmlm pretrain --init-embeddings`).

Example:
(Needs a trained run directory such as `runs/demo`, so not run as a test.)
>>> run = kmlm.load_run("runs/demo")  # doctest: +SKIP
>>> static_vectors(run, None).most_similar("file", top_n=3)  # doctest: +SKIP
>>> init_token_embeddings(model, vocabulary, "runs/w2v/vectors.txt")  # doctest: +SKIP
2811
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kmlm.pipelines import is_never_predicted, make_tokenizer, resolve_vocabulary, special_ids
from kmlm.statistics import principal_components
from kmlm.wordvec.vectors import WordVectors

# ----------------------------------------------------------------------------- the model


def _model_and_vocabulary(model, vocabulary):
    if hasattr(model, "vocabulary") and hasattr(model, "model"):  # a Run from load_run
        return model.model, vocabulary if vocabulary is not None else model.vocabulary
    if vocabulary is None:
        raise ValueError("give the model's vocabulary (or pass a Run from kmlm.load_run)")
    return model, vocabulary


def _encoder_of(model):
    encoder = getattr(model, "encoder", model)
    if not hasattr(encoder, "embedding"):
        raise ValueError(f"{type(model).__name__} is not a kmlm MaskedLMModel or Encoder")
    return encoder


# ----------------------------------------------------------------------------- static


def static_vectors(model, vocabulary, *, words=None, lowercase=True):
    """Static word vectors from a kmlm model's input token-embedding table: a word's
    vector is the mean of the rows of its WordPiece pieces.

    Args:
        model: a `MaskedLMModel` or `Encoder` (or a `Run` from `load_run`).
        vocabulary: its WordPiece vocabulary (token list or file); None with a `Run`.
        words: the words to embed; default: every vocabulary token that starts a word
            (no "##" continuation, no special token).
        lowercase: the tokenizer setting the model was trained with.

    Returns:
        `WordVectors`; words that tokenize to [UNK] only are left out.

    Example:
    (Needs a trained run directory such as `runs/demo`, so not run as a test.)
    >>> static_vectors(model, vocabulary, words=["playing", "cat"]).words  # doctest: +SKIP
    ['playing', 'cat']
    """
    model, vocabulary = _model_and_vocabulary(model, vocabulary)
    vocabulary = resolve_vocabulary(vocabulary)
    table = np.asarray(_encoder_of(model).embedding.token_embeddings)
    if words is None:
        words = [t for t in vocabulary if not is_never_predicted(t) and not t.startswith("##") and t.strip()]
    tokenizer = make_tokenizer(vocabulary, lowercase=lowercase)
    unk = vocabulary.index("[UNK]")
    kept, rows = [], []
    pieces_of_words = [np.asarray(tokenizer.tokenize(word)).tolist() for word in words]
    for word, pieces in zip(words, pieces_of_words):
        pieces = [p for p in pieces if p != unk]
        if pieces and not any(c.isspace() for c in word) and word not in kept:
            kept.append(word)
            rows.append(table[pieces].mean(axis=0))
    if not kept:
        raise ValueError("none of the words is covered by the vocabulary")
    return WordVectors(kept, np.stack(rows))


# ----------------------------------------------------------------------------- contextual


def _words_of_pieces(pieces, vocabulary, ids):
    """(word, start, end) for the words of a [CLS] ... [SEP] row: a piece starting with "##"
    continues the word before it; special tokens are not words."""
    words, start = [], None
    specials = {ids.pad, ids.unk, ids.cls, ids.sep, ids.mask}
    for position, piece in enumerate(pieces + [ids.sep]):
        token = vocabulary[piece]
        continues = token.startswith("##") and piece not in specials
        if start is not None and not continues:
            words.append(("".join(vocabulary[p].removeprefix("##") for p in pieces[start:position]), start, position))
            start = None
        if piece in specials:
            start = None
        elif not continues:
            start = position
    return words


class _OccurrenceMeans:
    """Running sums of a word's vectors over its occurrences, and their counts."""

    def __init__(self, wanted):
        self.wanted = wanted
        self.sums, self.counts = {}, {}

    def add(self, word, vector):
        if self.wanted is not None and word not in self.wanted:
            return
        if word in self.sums:
            self.sums[word] += vector
            self.counts[word] += 1
        else:
            self.sums[word], self.counts[word] = vector.astype(np.float64), 1

    def vectors(self, min_count):
        kept = sorted((w for w in self.sums if self.counts[w] >= min_count), key=lambda w: (-self.counts[w], w))
        if not kept:
            raise ValueError("no word of the documents was seen often enough; give more documents or lower min_count")
        means = np.stack([self.sums[w] / self.counts[w] for w in kept])
        return WordVectors(kept, means, counts=[self.counts[w] for w in kept])


def _hidden_states(encoder, rows, pad, seq_len):
    """The encoder's outputs [B, seq_len, H] for rows of piece ids (one document each)."""
    token_ids = np.full((len(rows), seq_len), pad, dtype=np.int32)
    document_ids = np.zeros_like(token_ids)
    for row, pieces in enumerate(rows):
        token_ids[row, : len(pieces)] = pieces
        document_ids[row, : len(pieces)] = 1
    features = {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids), "document_ids": document_ids}
    return np.asarray(encoder(features, training=False))


def _document_batches(documents, tokenizer, ids, *, seq_len, batch_size, max_documents=None):
    """Batches of [CLS] pieces [SEP] rows, each document cut to `seq_len` tokens."""
    if isinstance(documents, tf.data.Dataset):
        documents = (d.decode("utf-8", "replace") for d in documents.as_numpy_iterator())
    batch = []
    for number, text in enumerate(documents):
        if max_documents is not None and number >= max_documents:
            break
        pieces = np.asarray(tokenizer.tokenize(text)).tolist()[: seq_len - 2]
        batch.append([ids.cls] + pieces + [ids.sep])
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def contextual_vectors(model, vocabulary, documents, *, words=None, lowercase=True, seq_len=128, batch_size=16,
                       min_count=1, max_documents=None):
    """Contextual word vectors: a word's vector is the mean, over its occurrences in
    `documents`, of the encoder's output at its pieces (averaged within the word).

    Args:
        model: a `MaskedLMModel` or `Encoder` (or a `Run`).
        vocabulary: its WordPiece vocabulary; None with a `Run`.
        documents: an iterable of strings or a tf.data dataset of `tf.string`.
        words: keep only these words (default: every word seen).
        lowercase: the tokenizer setting the model was trained with.
        seq_len: each document is cut to this many tokens ([CLS] and [SEP] included).
        batch_size: documents per encoder call.
        min_count: keep words seen at least this many times.
        max_documents: read at most this many documents.

    Returns:
        `WordVectors` with occurrence counts, most frequent first.

    Example:
    (Needs a trained run directory such as `runs/demo`, so not run as a test.)
    >>> contextual_vectors(run, None, ["the cat sat", "the dog"]).words[0]  # doctest: +SKIP
    'the'
    """
    model, vocabulary = _model_and_vocabulary(model, vocabulary)
    vocabulary = resolve_vocabulary(vocabulary)
    encoder = _encoder_of(model)
    ids = special_ids(vocabulary)
    tokenizer = make_tokenizer(vocabulary, lowercase=lowercase)
    means = _OccurrenceMeans(None if words is None else set(words))
    batches = _document_batches(documents, tokenizer, ids, seq_len=seq_len, batch_size=batch_size,
                                max_documents=max_documents)
    for batch in batches:
        hidden = _hidden_states(encoder, batch, ids.pad, seq_len)
        for row, pieces in enumerate(batch):
            for word, start, end in _words_of_pieces(pieces, vocabulary, ids):
                means.add(word, hidden[row, start:end].mean(axis=0))
    return means.vectors(min_count)


# ----------------------------------------------------------------------------- into a model


def embedding_table_from_vectors(vectors, vocabulary, table, lowercase=True):
    """A token-embedding table whose rows for whole-word tokens hold their word vectors.

    Vocabulary tokens that are words of `vectors` (looked up as written, then lowercased
    with `lowercase=True`) get that word's vector; special tokens, "##" continuation pieces
    and words without a vector keep their row of `table`. When the vector size D differs
    from the table's H, a linear map is fitted by PCA of the vectors: their top H principal
    axes (D > H), or all D axes followed by zero columns (D < H). Every copied row is then
    scaled by one factor so that the copied rows have the standard deviation of the rows
    they replace, which keeps them on the scale of the position and segment embeddings.

    Args:
        vectors: `WordVectors` (or a path to a vectors file).
        vocabulary: the WordPiece tokens in id order.
        table: the current [V, H] table (e.g. the model's random initialisation).
        lowercase: also look tokens up lowercased.

    Returns:
        (new_table, rows): the [V, H] float32 table and the ids of the rows set.

    Example:
    (Needs a vectors file and a model's table, so not run as a test.)
    >>> table, rows = embedding_table_from_vectors(WordVectors.load("vectors.txt"), vocab, table)  # doctest: +SKIP
    """
    if not isinstance(vectors, WordVectors):
        vectors = WordVectors.load(vectors)
    table = np.array(table, dtype=np.float32)
    if table.shape[0] != len(vocabulary):
        raise ValueError(f"the embedding table has {table.shape[0]} rows for {len(vocabulary)} vocabulary tokens")
    rows, sources = [], []
    for token_id, token in enumerate(vocabulary):
        if is_never_predicted(token) or token.startswith("##"):
            continue
        word = token if token in vectors else token.lower() if lowercase and token.lower() in vectors else None
        if word is not None:
            rows.append(token_id)
            sources.append(vectors.index[word])
    if not rows:
        raise ValueError(
            f"no token of the {len(vocabulary)}-token vocabulary has a word vector among {len(vectors)} words; "
            "check that the vectors were trained on text in the same language and casing"
        )
    mapped = _linear_map(vectors.vectors, table.shape[1])[sources]
    scale = float(table[rows].std()) / max(float(mapped.std()), 1e-12)
    table[rows] = mapped * scale
    return table, np.array(rows, dtype=np.int64)


def _linear_map(matrix, dim):
    """`matrix` [N, D] mapped linearly to [N, dim]: unchanged when D == dim, else onto its
    principal axes (top `dim` of them, or all D then zero columns)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix if matrix.shape[1] == dim else principal_components(matrix, dim)


def init_token_embeddings(model, vocabulary, vectors, lowercase=True):
    """Sets a kmlm model's input token-embedding table from word vectors (see
    `embedding_table_from_vectors`); returns the number of rows set.

    Example:
    (Needs a model and a vectors file, so not run as a test.)
    >>> init_token_embeddings(model, vocabulary, "runs/w2v/vectors.txt")  # doctest: +SKIP
    2811
    """
    embedding = _encoder_of(model).embedding.token_embeddings
    table, rows = embedding_table_from_vectors(vectors, vocabulary, np.asarray(embedding), lowercase=lowercase)
    embedding.assign(table.astype(embedding.dtype))
    return len(rows)

"""tf.data input pipelines for masked language modeling: corpus sources, vocabulary,
tokenizer, packing, masking, and `mlm_dataset`, which chains them.

Example:
    >>> from kmlm import pipelines
    >>> docs = pipelines.load_documents("builtin:python-docs")
    >>> train = pipelines.split_documents(docs, "train")
    >>> vocab = pipelines.learn_vocabulary(train, 8192)
    >>> batches = pipelines.mlm_dataset(train, vocab, seq_len=128, batch_size=32)
"""

from kmlm.pipelines.corpus import (
    BUILTIN_CORPORA,
    DEFAULT_CORPUS,
    CorpusChangedError,
    CorpusStats,
    extract_docstrings,
    load_documents,
    python_docs,
    split_documents,
)
from kmlm.pipelines.dataset import mlm_dataset
from kmlm.pipelines.masking import STRATEGIES, Masker, MaskingConfig, max_predictions_for
from kmlm.pipelines.packing import MIN_SEQ_LEN, check_seq_len, pack_documents, pad_documents
from kmlm.pipelines.tokenizer import SpecialIds, make_tokenizer, special_ids
from kmlm.pipelines.vocabulary import (
    MIN_VOCABULARY_SIZE,
    SPECIAL_TOKENS,
    VOCABULARY_METHODS,
    check_vocabulary,
    is_never_predicted,
    learn_vocabulary,
    load_vocabulary,
    never_predicted,
    resolve_vocabulary,
    save_vocabulary,
)

__all__ = [
    "BUILTIN_CORPORA",
    "DEFAULT_CORPUS",
    "MIN_SEQ_LEN",
    "MIN_VOCABULARY_SIZE",
    "SPECIAL_TOKENS",
    "STRATEGIES",
    "VOCABULARY_METHODS",
    "CorpusChangedError",
    "CorpusStats",
    "Masker",
    "MaskingConfig",
    "SpecialIds",
    "check_seq_len",
    "check_vocabulary",
    "extract_docstrings",
    "is_never_predicted",
    "learn_vocabulary",
    "load_documents",
    "load_vocabulary",
    "make_tokenizer",
    "max_predictions_for",
    "mlm_dataset",
    "never_predicted",
    "pack_documents",
    "pad_documents",
    "python_docs",
    "resolve_vocabulary",
    "save_vocabulary",
    "special_ids",
    "split_documents",
]

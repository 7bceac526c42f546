"""Shared fixtures for the pipelines tests: the builtin corpus, a vocabulary learned from
it once per session, and packed rows of real tokenized text."""

import numpy as np
import pytest
import tensorflow as tf

from kmlm import pipelines

SEQ_LEN = 128


@pytest.fixture(scope="session")
def python_docs():
    return pipelines.python_docs()


@pytest.fixture(scope="session")
def vocabulary(python_docs):
    return pipelines.learn_vocabulary(python_docs, 4096)


@pytest.fixture(scope="session")
def packed_rows(python_docs, vocabulary):
    """The whole builtin corpus tokenized and packed into numpy rows of SEQ_LEN tokens."""
    tokenizer = pipelines.make_tokenizer(vocabulary)
    ids = pipelines.special_ids(vocabulary)
    rows = tf.data.Dataset.from_tensor_slices(python_docs).batch(512).map(
        lambda texts: pipelines.pack_documents(
            tokenizer.tokenize(texts), SEQ_LEN, cls_id=ids.cls, sep_id=ids.sep
        )
    )
    parts = list(rows.as_numpy_iterator())
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

import numpy as np
import pytest

from kmlm.layers import SequencePooling
from tests.helpers import assert_config_round_trip


def test_mean_ignores_padding_and_matches_numpy():
    rng = np.random.default_rng(0)
    sequence = rng.normal(size=(2, 5, 3)).astype("float32")
    document_ids = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)
    pooled = np.asarray(SequencePooling("mean")(sequence, document_ids))
    np.testing.assert_allclose(pooled[0], sequence[0, :3].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(pooled[1], sequence[1].mean(axis=0), atol=1e-6)


def test_extra_padding_changes_nothing():
    rng = np.random.default_rng(1)
    sequence = rng.normal(size=(1, 4, 3)).astype("float32")
    padded = np.concatenate([sequence, rng.normal(size=(1, 6, 3)).astype("float32") * 100], axis=1)
    short = np.asarray(SequencePooling("mean")(sequence, np.ones([1, 4], np.int32)))
    long = np.asarray(SequencePooling("mean")(padded, np.array([[1] * 4 + [0] * 6], np.int32)))
    np.testing.assert_allclose(short, long, atol=1e-6)


def test_cls_and_normalize():
    sequence = np.arange(24, dtype="float32").reshape(2, 4, 3)
    pooled = np.asarray(SequencePooling("cls", normalize=True)(sequence, np.ones([2, 4], np.int32)))
    expected = sequence[:, 0] / np.linalg.norm(sequence[:, 0], axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, expected, atol=1e-6)


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"^unknown pooling 'max'; choose one of mean, cls$"):
        SequencePooling("max")


def test_config_round_trip_non_default():
    rebuilt = assert_config_round_trip(SequencePooling("cls", normalize=True))
    assert rebuilt.mode == "cls" and rebuilt.normalize

"""The export base: declared signatures, warmup records and the versioned atomic write,
checked on a one-layer module (the MLM and task exports are checked end to end elsewhere)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from kmlm.pipelines import SpecialIds
from kmlm.serving.base import TEMP_PREFIX, WARMUP_DIR, WARMUP_FILE, ExportModule, check_version_free, existing_versions

IDS = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)


class Scaling(ExportModule):
    """Two signatures over a Dense layer: ids (the token count per row) and floats."""

    def __init__(self, model=None, seq_len=6, warmup=True):
        model = model or keras.Sequential([keras.Input([3]), keras.layers.Dense(2)])
        super().__init__(model, None, IDS, seq_len, name="scaling")
        self._warmup = warmup
        ids = tf.TensorSpec([None, seq_len], tf.int32)
        self.add_signature("serving_default", self._count, ids, ids, ids)
        self.add_signature("dense", self._dense, tf.TensorSpec([None, 3], tf.float32, name="x"))

    def _count(self, token_ids, segment_ids, document_ids):
        return {"tokens": tf.reduce_sum(document_ids, axis=1)}

    def _dense(self, x):
        return {"y": self._keras.model(x)}

    def warmup_requests(self):
        if not self._warmup:
            return super().warmup_requests()
        return [("serving_default", self.id_request([IDS.cls, IDS.sep])), ("dense", {"x": np.ones([1, 3], np.float32)})]


def _read_warmup(path):
    logs = []
    for record in tf.data.TFRecordDataset(os.path.join(path, WARMUP_DIR, WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log.predict_log.request)
    return logs


def test_declared_signatures_are_saved_and_served(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input([3]), keras.layers.Dense(2)])
    module = Scaling(model)
    request = module.id_request([IDS.cls, 7, IDS.sep])
    assert {name: value.tolist() for name, value in request.items()} == {
        "token_ids": [[2, 7, 3, 0, 0, 0]], "segment_ids": [[0] * 6], "document_ids": [[1, 1, 1, 0, 0, 0]]}
    assert all(value.dtype == np.int32 for value in request.values())
    path, version, ops = module.write_version(str(tmp_path / "scaling"))
    assert (path, version) == (str(tmp_path / "scaling" / "1"), 1)
    assert sorted(ops) == ["dense", "serving_default"] and "MatMul" in ops["dense"]
    loaded = tf.saved_model.load(path)
    assert sorted(loaded.signatures) == ["dense", "serving_default"]
    x = np.array([[1.0, 2.0, -1.0]], np.float32)
    kernel, bias = (np.asarray(w) for w in model.weights)
    np.testing.assert_allclose(loaded.signatures["dense"](x=tf.constant(x))["y"].numpy(), x @ kernel + bias, rtol=1e-6)
    np.testing.assert_allclose(loaded.dense(tf.constant(x))["y"].numpy(), x @ kernel + bias, rtol=1e-6)
    requests = _read_warmup(path)
    assert [(r.model_spec.name, r.model_spec.signature_name) for r in requests] == [
        ("scaling", "serving_default"), ("scaling", "dense")]
    assert tf.make_ndarray(requests[0].inputs["document_ids"]).tolist() == [[1, 1, 0, 0, 0, 0]]


def test_versions_count_up_are_never_overwritten_and_name_the_next_one(tmp_path):
    base = str(tmp_path / "scaling")
    assert Scaling().write_version(base, model_name="other")[1] == 1
    assert _read_warmup(os.path.join(base, "1"))[0].model_spec.name == "other"
    assert Scaling().write_version(base, version=5)[1] == 5
    assert Scaling().write_version(base)[1] == 6
    assert existing_versions(base) == [1, 5, 6]
    message = (f"version 5 already exists in {base!r}; versions are never overwritten: pass another --version "
               "or leave it out to write version 7")
    with pytest.raises(ValueError, match=message.replace("[", "\\[").replace("(", "\\(")):
        check_version_free(base, 5)
    with pytest.raises(ValueError, match="version 5 already exists"):
        Scaling().write_version(base, version=5)
    for bad in (0, -2, True):
        with pytest.raises(ValueError, match=f"version={bad!r} must be a positive integer"):
            check_version_free(base, bad)
    assert sorted(os.listdir(base)) == ["1", "5", "6"]


def test_a_module_without_warmup_requests_writes_nothing(tmp_path):
    base = tmp_path / "scaling"
    with pytest.raises(NotImplementedError, match="Scaling must list its warmup requests"):
        Scaling(warmup=False).write_version(str(base))
    assert os.listdir(base) == []


def test_abandoned_temporary_directories_are_removed_and_live_ones_kept(tmp_path):
    base = tmp_path / "scaling"
    dead, live = base / f"{TEMP_PREFIX}999999999-dead", base / f"{TEMP_PREFIX}{os.getpid()}-live"
    dead.mkdir(parents=True)
    live.mkdir()
    Scaling().write_version(str(base))
    assert sorted(os.listdir(base)) == sorted(["1", live.name])


def test_a_file_as_base_directory_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"--out {str(target)!r} is a file"):
        Scaling().write_version(str(target))


_RACER = """
import os, sys, time
from tests.serving.test_base import Scaling
base, line, racers = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = Scaling()
open(os.path.join(line, str(os.getpid())), "w").close()
while len(os.listdir(line)) < racers:  # every racer leaves the line together
    time.sleep(0.01)
print(module.write_version(base)[1])
"""


def test_exports_racing_for_the_next_version_end_with_distinct_complete_versions(tmp_path):
    import subprocess
    import sys

    base = str(tmp_path / "scaling")
    Scaling().write_version(base)  # version 1 exists: the racers all aim for 2
    line = tmp_path / "line"
    line.mkdir()
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, base, str(line), "3"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=os.getcwd()) for _ in range(3)]
    results = [racer.communicate(timeout=300) for racer in racers]
    for racer, (_, err) in zip(racers, results):
        assert racer.returncode == 0, err[-2000:]
    versions = sorted(int(out.strip().splitlines()[-1]) for out, _ in results)
    assert versions == [2, 3, 4]
    assert sorted(os.listdir(base)) == ["1", "2", "3", "4"]  # no claim or temporary directory left
    for version in versions:
        folder = os.path.join(base, str(version))
        assert tf.saved_model.load(folder).signatures["dense"](x=tf.ones([1, 3]))["y"].shape == (1, 2)
        assert len(_read_warmup(folder)) == 2


def test_a_version_claimed_by_a_live_export_is_skipped_and_a_dead_ones_claim_removed(tmp_path):
    from kmlm.serving.base import CLAIM_PREFIX

    base = tmp_path / "scaling"
    base.mkdir()
    os.symlink(str(os.getpid()), base / f"{CLAIM_PREFIX}1")  # a live export is renaming version 1 into place
    os.symlink("999999999", base / f"{CLAIM_PREFIX}7")  # left by a killed export
    assert Scaling().write_version(str(base))[1] == 2
    assert sorted(os.listdir(base)) == sorted(["2", f"{CLAIM_PREFIX}1"])
    with pytest.raises(ValueError, match="version 1 already exists"):
        Scaling().write_version(str(base), version=1)

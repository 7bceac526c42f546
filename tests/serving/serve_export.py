"""Runs kmlm exports the way TensorFlow Serving does, in a process that cannot import kmlm
or keras: only tensorflow and the TF Text op kernels are loaded.

Usage: python serve_export.py REQUESTS.json RESULTS.npz

REQUESTS.json: {"exports": {tag: SavedModel dir}, "requests": {tag: {signature: {input: list}}}}.
For each export, every requested signature runs through `tf.saved_model.load` ("eager") and
through the TF1 session loader by signature tensor names ("session"), and every warmup
record replays through the session. Results: "{tag}/{loader}/{signature}/{output}" arrays
(strings decoded to str) and "{tag}/warmup/{n}/{signature}/{output}" shapes.
"""

import json
import sys

BLOCKED = {"kmlm", "keras", "keras_hub", "keras_nlp", "tf_keras"}


class _RefusingLoader:
    def __init__(self, name):
        self.name = name

    def create_module(self, spec):
        raise ImportError(f"{self.name} must not be needed to serve an export")

    def exec_module(self, module):
        raise ImportError(f"{self.name} must not be needed to serve an export")


class _RefuseImport:
    """A meta path finder under which importing a blocked package fails (finding it still
    works: TensorFlow looks keras up to place its lazy `tf.keras` alias)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in BLOCKED:
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    spec.loader = _RefusingLoader(name)
                    return spec
        return None


sys.meta_path.insert(0, _RefuseImport())

import glob  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _load_text_kernels():
    """Registers the TF Text ops from its kernel libraries alone, as TF Serving links them
    (importing the tensorflow_text Python package would also import keras)."""
    package = importlib.util.find_spec("tensorflow_text").submodule_search_locations[0]
    for library in sorted(glob.glob(os.path.join(package, "python", "ops", "*.so"))):
        tf.load_op_library(library)


_load_text_kernels()


def _plain(array):
    array = np.asarray(array)
    if array.dtype.kind in "SO":
        return np.vectorize(lambda item: item.decode("utf-8"), otypes=[str])(array) if array.size else array.astype(str)
    return array


def _run_eager(path, requests, results, tag):
    loaded = tf.saved_model.load(path)
    for signature, inputs in requests.items():
        function = loaded.signatures[signature]
        specs = function.structured_input_signature[1]
        feeds = {name: tf.constant(value, dtype=specs[name].dtype) for name, value in inputs.items()}
        for output, value in function(**feeds).items():
            results[f"{tag}/eager/{signature}/{output}"] = _plain(value.numpy())


def _read_warmup(path):
    from tensorflow_serving.apis import prediction_log_pb2

    records = tf.data.TFRecordDataset(f"{path}/assets.extra/tf_serving_warmup_requests")
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy()) for record in records]


def _run_session(path, requests, results, tag):
    warmup = _read_warmup(path)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        for signature, inputs in requests.items():
            definition = meta_graph.signature_def[signature]
            feeds = {definition.inputs[name].name: value for name, value in inputs.items()}
            fetches = {name: info.name for name, info in definition.outputs.items()}
            for output, value in session.run(fetches, feeds).items():
                results[f"{tag}/session/{signature}/{output}"] = _plain(value)
        for number, log in enumerate(warmup):
            request = log.predict_log.request
            definition = meta_graph.signature_def[request.model_spec.signature_name]
            feeds = {definition.inputs[name].name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            fetches = {name: info.name for name, info in definition.outputs.items()}
            for output, value in session.run(fetches, feeds).items():
                key = f"{tag}/warmup/{number}/{request.model_spec.signature_name}/{output}"
                results[key] = np.array(np.shape(value))


def main(request_path, results_path):
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    results = {}
    for tag, path in request["exports"].items():
        requests = request["requests"][tag]
        _run_eager(path, requests, results, tag)
        _run_session(path, requests, results, tag)
    leaked = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    results["leaked_modules"] = np.array(leaked, dtype=str)
    np.savez(results_path, **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

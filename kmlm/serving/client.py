"""Requests for a kmlm export served by TensorFlow Serving: REST bodies and gRPC messages.

This module needs only numpy (REST) and tensorflow-serving-api (gRPC); it never loads a model.

The calls that reach a server need TF Serving running an export, so tests skip them.

Example (REST, port 8501):
>>> import json, urllib.request
>>> body = rest_body("fill_mask", {"text": ["the [MASK] of a list"]})
>>> request = urllib.request.Request(rest_url("localhost", "kmlm"), json.dumps(body).encode())
>>> json.load(urllib.request.urlopen(request))["predictions"][0]["top_k_tokens"][0][0]  # doctest: +SKIP
'length'

Example (gRPC, port 8500):
>>> import grpc
>>> from tensorflow_serving.apis import prediction_service_pb2_grpc
>>> stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel("localhost:8500"))
>>> response = stub.Predict(grpc_predict_request("kmlm", "encode", {"text": ["a sentence"]}), 10.0)  # doctest: +SKIP
>>> response.outputs["pooled_embedding"].tensor_shape.dim[1].size  # doctest: +SKIP
256
"""

from __future__ import annotations

import numpy as np

FORMS = ("instances", "inputs")


def _json_value(value):
    """A JSON-ready nested list (bytes decoded as UTF-8 text)."""
    array = np.asarray(value)
    if array.dtype.kind in "SO":
        return np.vectorize(lambda item: item.decode("utf-8") if isinstance(item, bytes) else str(item),
                            otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def rest_body(signature_name, inputs, form="instances"):
    """The JSON body of a REST `:predict` request.

    Args:
        signature_name: `serving_default`, `fill_mask` or `encode`.
        inputs: {input name: batch-first array or list}; every input has the same batch size.
        form: `"instances"` (row format: one object per example; the response holds
            `"predictions"`, one object per example) or `"inputs"` (columnar format: one list
            per input; the response holds `"outputs"`, one list per output).

    Returns:
        A dict to serialise with `json.dumps`.

    Example:
    >>> rest_body("fill_mask", {"text": ["a [MASK] day"]})
    {'signature_name': 'fill_mask', 'instances': [{'text': 'a [MASK] day'}]}
    >>> rest_body("fill_mask", {"text": ["a [MASK] day"]}, form="inputs")
    {'signature_name': 'fill_mask', 'inputs': {'text': ['a [MASK] day']}}
    """
    if form not in FORMS:
        raise ValueError(f"unknown REST form {form!r}; choose one of {', '.join(FORMS)}")
    if not inputs:
        raise ValueError("inputs is empty; pass {input name: values}")
    columns = {name: _json_value(value) for name, value in inputs.items()}
    if form == "inputs":
        return {"signature_name": signature_name, "inputs": columns}
    sizes = {name: len(column) for name, column in columns.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"inputs have different batch sizes {sizes}; the instances form needs one per example")
    count = next(iter(sizes.values()))
    instances = [{name: column[row] for name, column in columns.items()} for row in range(count)]
    return {"signature_name": signature_name, "instances": instances}


def rest_url(host, model_name, version=None, port=8501):
    """The REST predict URL, e.g. `http://localhost:8501/v1/models/kmlm:predict`."""
    path = f"/v1/models/{model_name}" + (f"/versions/{int(version)}" if version is not None else "")
    return f"http://{host}:{port}{path}:predict"


def grpc_predict_request(model_name, signature_name, inputs, version=None):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for `PredictionService.Predict`.

    Args:
        model_name: the name the server serves the model under (`--model_name`).
        signature_name: `serving_default`, `fill_mask` or `encode`.
        inputs: {input name: batch-first array or list}. Strings become DT_STRING (UTF-8),
            Python and numpy integers int32 (the dtype of every kmlm id input).
        version: a version number, or None for the latest.

    Example:
    >>> request = grpc_predict_request("kmlm", "fill_mask", {"text": ["a [MASK] day"]})
    >>> request.inputs["text"].string_val
    [b'a [MASK] day']
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind in "SUO":
            array = np.vectorize(lambda item: item.encode("utf-8") if isinstance(item, str) else item,
                                 otypes=[object])(array) if array.size else array.astype(object)
            proto = tf.make_tensor_proto(array, dtype=tf.string)
        elif array.dtype.kind in "iu":
            proto = tf.make_tensor_proto(array.astype(np.int32), dtype=tf.int32)
        else:
            proto = tf.make_tensor_proto(array)
        request.inputs[name].CopyFrom(proto)
    return request

"""REST bodies and gRPC requests of `kmlm.serving.client` (no model, no server)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from kmlm.serving.client import grpc_predict_request, rest_body, rest_url


def test_rest_instances_form_has_one_object_per_example():
    body = rest_body("serving_default", {"token_ids": np.array([[2, 4, 3], [2, 5, 3]], np.int32),
                                         "mask_positions": [[1], [1]]})
    assert body == {
        "signature_name": "serving_default",
        "instances": [{"token_ids": [2, 4, 3], "mask_positions": [1]}, {"token_ids": [2, 5, 3], "mask_positions": [1]}],
    }


def test_rest_inputs_form_is_columnar_and_json_ready():
    body = rest_body("fill_mask", {"text": np.array([b"\xe6\x88\x91[MASK]", "a [MASK]"], object)}, form="inputs")
    assert json.loads(json.dumps(body, ensure_ascii=False)) == {
        "signature_name": "fill_mask", "inputs": {"text": ["我[MASK]", "a [MASK]"]},
    }


def test_rest_body_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown REST form 'rows'; choose one of instances, inputs"):
        rest_body("encode", {"text": ["a"]}, form="rows")
    with pytest.raises(ValueError, match="different batch sizes"):
        rest_body("serving_default", {"token_ids": [[1], [2]], "mask_positions": [[0]]})


def test_rest_url():
    assert rest_url("localhost", "kmlm") == "http://localhost:8501/v1/models/kmlm:predict"
    assert rest_url("10.0.0.2", "kmlm", version=3, port=9000) == "http://10.0.0.2:9000/v1/models/kmlm/versions/3:predict"


def test_grpc_request_round_trips_its_tensors():
    ids = np.array([[2, 4, 3, 0]], np.int64)
    request = grpc_predict_request("kmlm", "serving_default", {"token_ids": ids}, version=2)
    assert (request.model_spec.name, request.model_spec.signature_name, request.model_spec.version.value) == (
        "kmlm", "serving_default", 2)
    tensor = request.inputs["token_ids"]
    assert tensor.dtype == tf.int32.as_datatype_enum
    np.testing.assert_array_equal(tf.make_ndarray(tensor), ids)
    text = grpc_predict_request("kmlm", "fill_mask", {"text": ["今天[MASK]气", "a [MASK]"]}).inputs["text"]
    assert text.dtype == tf.string.as_datatype_enum
    assert [item.decode("utf-8") for item in tf.make_ndarray(text)] == ["今天[MASK]气", "a [MASK]"]

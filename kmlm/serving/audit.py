"""The op audit of a serving export: what TensorFlow Serving can run, and nothing else.

TensorFlow Serving 2.20 links core TensorFlow 2.20 and the TensorFlow Text 2.20 op library,
and runs every function without XLA. An export passes when:

- every op in its graph and in every function of its function library is a core TensorFlow op
  (one of `tf.raw_ops`) or a TensorFlow Text op (the ops registered by the installed
  `tensorflow_text` kernels' shared libraries), and none is a Python callback (`PyFunc`,
  `EagerPyFunc`) or an XLA launch op;
- no function or call carries `_XlaMustCompile=True`;
- every signature uses the predict method, names all its inputs and outputs, returns only
  dense tensors (no ragged, sparse or other composite outputs) of REST-safe dtypes.
"""

from __future__ import annotations

import functools
import glob
import os

import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.core.protobuf import saved_model_pb2

PREDICT_METHOD = "tensorflow/serving/predict"
# Core ops that TensorFlow Serving cannot run: Python callbacks and XLA launches.
FORBIDDEN_OPS = frozenset(
    {"PyFunc", "PyFuncStateless", "EagerPyFunc", "XlaLaunch", "XlaLaunchV2", "_XlaCompile", "_XlaRun"}
)
# Dtypes the REST API reads and writes as JSON numbers, booleans or strings.
REST_SAFE_DTYPES = frozenset(
    dtype.as_datatype_enum for dtype in (tf.int32, tf.int64, tf.float32, tf.float64, tf.string, tf.bool)
)


class OpAuditError(ValueError):
    """An export that TensorFlow Serving could not load or run."""


@functools.lru_cache(maxsize=None)
def core_ops():
    """The op types of core TensorFlow (those with a `tf.raw_ops` entry)."""
    return frozenset(name for name in dir(tf.raw_ops) if not name.startswith("__"))


@functools.lru_cache(maxsize=None)
def text_ops():
    """The op types the installed TensorFlow Text registers, read from its kernel libraries."""
    import tensorflow_text  # noqa: F401  (locates the kernels; TF Serving links the same library)
    from tensorflow.python.client import pywrap_tf_session

    folder = os.path.join(os.path.dirname(tensorflow_text.__file__), "python", "ops")
    names = set()
    for library in sorted(glob.glob(os.path.join(folder, "*.so"))):
        handle = pywrap_tf_session.TF_LoadLibrary(library)
        try:
            op_list = op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetOpList(handle))
        finally:
            pywrap_tf_session.TF_DeleteLibraryHandle(handle)
        names.update(op.name for op in op_list.op)
    if not names:
        raise OpAuditError(f"found no TensorFlow Text kernels in {folder!r}; reinstall tensorflow-text")
    return frozenset(names)


def read_meta_graph(path, tag="serve"):
    """The MetaGraphDef of `path/saved_model.pb` with `tag`."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return meta_graph
    raise OpAuditError(f"{path!r} has no meta graph tagged {tag!r}; TF Serving loads tag {tag!r}")


def _called_functions(node):
    """Names of the functions a node calls through its attributes."""
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        yield from (func.name for func in value.list.func)


def _must_compile(attrs):
    return "_XlaMustCompile" in attrs and attrs["_XlaMustCompile"].b


def _collect(nodes, library, ops, visited, where):
    """Adds the op types of `nodes` and of every function they call, recursively, to `ops`."""
    for node in nodes:
        if _must_compile(node.attr):
            raise OpAuditError(f"{where}: node {node.name!r} must be compiled with XLA; TF Serving runs without XLA")
        callees = list(_called_functions(node))
        if node.op in library:  # a direct call of a library function
            callees.append(node.op)
        else:
            ops.add(node.op)
        for name in callees:
            if name in visited or name not in library:
                continue
            visited.add(name)
            function = library[name]
            if _must_compile(function.attr):
                raise OpAuditError(f"function {name!r} must be compiled with XLA; TF Serving runs without XLA")
            _collect(function.node_def, library, ops, visited, f"function {name!r}")


def _signature_nodes(graph, signature):
    """The graph nodes the signature's outputs depend on."""
    by_name = {node.name: node for node in graph.node}
    pending = [info.name.split(":")[0] for info in signature.outputs.values()]
    seen = set()
    while pending:
        name = pending.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        pending.extend(inp.lstrip("^").split(":")[0] for inp in by_name[name].input)
    return [by_name[name] for name in seen]


def _check_signature(name, signature):
    if signature.method_name != PREDICT_METHOD:
        raise OpAuditError(f"signature {name!r} has method {signature.method_name!r}; TF Serving predict needs "
                           f"{PREDICT_METHOD!r}")
    for kind, infos in (("input", signature.inputs), ("output", signature.outputs)):
        for key, info in infos.items():
            if info.WhichOneof("encoding") != "name":
                raise OpAuditError(f"signature {name!r} {kind} {key!r} is a composite tensor; return dense tensors")
            if info.dtype not in REST_SAFE_DTYPES:
                dtype = tf.dtypes.as_dtype(info.dtype).name
                raise OpAuditError(f"signature {name!r} {kind} {key!r} has dtype {dtype}, which the REST API "
                                   "cannot carry; use int32, int64, float32, float64, string or bool")


def audit_saved_model(path, tag="serve"):
    """Audits a SavedModel for TensorFlow Serving (see the module docstring).

    Args:
        path: the SavedModel directory.
        tag: the meta graph tag TF Serving loads.

    Returns:
        {signature name: sorted op types that signature runs}.

    Raises:
        OpAuditError: naming the first op, function or signature that breaks a rule.

    Example:
    >>> module = tf.Module()
    >>> module.double = tf.function(lambda x: {"y": 2 * x}, input_signature=[tf.TensorSpec([None], tf.float32)],
    ...                             autograph=False)
    >>> signatures = {"serving_default": module.double.get_concrete_function()}
    >>> tf.saved_model.save(module, "doubling", signatures=signatures)
    >>> audit_saved_model("doubling")
    {'serving_default': ['Const', 'Identity', 'Mul', 'PartitionedCall', 'Placeholder']}
    """
    meta_graph = read_meta_graph(path, tag)
    graph = meta_graph.graph_def
    library = {function.signature.name: function for function in graph.library.function}
    if not meta_graph.signature_def:
        raise OpAuditError(f"{path!r} has no signatures; TF Serving needs at least serving_default")

    everything = set()
    _collect(graph.node, library, everything, set(), "graph")
    for name, function in library.items():  # functions no node calls still get loaded
        if _must_compile(function.attr):
            raise OpAuditError(f"function {name!r} must be compiled with XLA; TF Serving runs without XLA")
        _collect(function.node_def, library, everything, {name}, f"function {name!r}")
    allowed_core, allowed_text = core_ops(), text_ops()
    for op in sorted(everything):
        if op in FORBIDDEN_OPS:
            raise OpAuditError(f"the export contains {op}, which TF Serving cannot run; build it from TF ops only")
        if op not in allowed_core and op not in allowed_text:
            raise OpAuditError(f"the export contains op {op!r}, which is neither core TensorFlow nor TensorFlow Text; "
                               "TF Serving would fail to load it")

    per_signature = {}
    for name, signature in sorted(meta_graph.signature_def.items()):
        if name.startswith("__"):  # TF's own saver signature, not served
            continue
        _check_signature(name, signature)
        ops = set()
        _collect(_signature_nodes(graph, signature), library, ops, set(), f"signature {name!r}")
        per_signature[name] = sorted(ops)
    return per_signature


def text_ops_used(per_signature):
    """The TensorFlow Text ops among an audit's op lists."""
    return sorted({op for ops in per_signature.values() for op in ops} & text_ops())

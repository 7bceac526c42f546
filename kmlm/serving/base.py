"""The export base: what every kmlm SavedModel for TensorFlow Serving shares.

An export module subclasses `ExportModule`, declares its signatures with `add_signature`
and lists one warmup request per signature; `ExportModule.write_version` does the rest, the
same way for every export:

```
BASE_DIR/.kmlm-export-<pid>-<hex>/   saved (tag "serve", the declared signatures),
                                     op-audited, given assets.extra/tf_serving_warmup_requests
BASE_DIR/<version>/                  ...then renamed to its number
```

TF Serving ignores the non-numeric temporary name, so it never loads a half-written version;
a temporary directory left by a killed export is removed by the next export into BASE_DIR.
Versions are never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import types
import uuid

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from kmlm.files import disk_full_error, is_disk_full, size_on_disk
from kmlm.serving.audit import audit_saved_model
from kmlm.serving.client import grpc_predict_request

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
TEMP_PREFIX = ".kmlm-export-"
# `.kmlm-version-N`, a symlink to the exporting pid: the claim of version N while it is renamed
# into place (creating a symlink is atomic and fails when the name exists).
CLAIM_PREFIX = ".kmlm-version-"


class ExportModule(tf.Module):
    """Base of every exported object: a Keras model's variables, its in-graph tokenizer and
    the signature functions a subclass declares.

    Subclasses call `add_signature` in their constructor, once per signature, and implement
    `warmup_requests`. Every signature is a plain `tf.function` (TF Serving runs the graph
    without XLA) traced for its input specs.

    Args:
        model: the Keras model the signatures call.
        tokenizer: the in-graph WordPiece tokenizer of the text signatures.
        ids: the vocabulary's `SpecialIds`.
        seq_len: S, the fixed length of the id signatures.
        name: the module's name.

    Example:
    >>> import keras
    >>> class Doubling(ExportModule):
    ...     def __init__(self, model):
    ...         super().__init__(model, None, None, 4, name="doubling")
    ...         self.add_signature("serving_default", lambda x: {"y": 2 * x}, tf.TensorSpec([None], tf.float32))
    ...     def warmup_requests(self):
    ...         return [("serving_default", {"x": np.ones([1], np.float32)})]
    >>> module = Doubling(keras.Sequential([keras.Input([2]), keras.layers.Dense(1)]))
    >>> sorted(module.signatures())
    ['serving_default']
    """

    def __init__(self, model, tokenizer, ids, seq_len, *, name):
        super().__init__(name=name)
        # Track the model's tf.Variables themselves, not the Keras objects: a Keras variable
        # saves as a second copy that the TF1 session loader (TF Serving's) restores while the
        # graph reads the first, uninitialised one.
        self.model_variables = [weight.value for weight in model.weights]
        # A plain namespace is invisible to tracking, so no Keras object is saved.
        self._keras = types.SimpleNamespace(model=model, tokenizer=tokenizer)
        self._ids = ids
        self._seq_len = int(seq_len)
        self._signature_names = ()

    def add_signature(self, name, function, *input_specs):
        """Declares signature `name`: `function` traced for `input_specs`, kept as attribute
        `name` (so a `tf.saved_model.load`ed export can also call it by that name)."""
        traced = tf.function(function, input_signature=list(input_specs), jit_compile=False, autograph=False)
        setattr(self, name, traced)
        self._signature_names = (*self._signature_names, name)

    def signatures(self):
        """The concrete functions to save, by signature name."""
        return {name: getattr(self, name).get_concrete_function() for name in self._signature_names}

    def warmup_requests(self):
        """One request per signature, as (signature name, {input name: array}) pairs."""
        raise NotImplementedError(f"{type(self).__name__} must list its warmup requests")

    def id_request(self, tokens):
        """One row of `token_ids`, `segment_ids`, `document_ids` [1, S] holding `tokens`."""
        token_ids = np.full([1, self._seq_len], self._ids.pad, np.int32)
        token_ids[0, : len(tokens)] = tokens
        document_ids = np.zeros([1, self._seq_len], np.int32)
        document_ids[0, : len(tokens)] = 1
        return {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids), "document_ids": document_ids}

    def write_version(self, base_dir, version=None, model_name=None):
        """Saves this module as version `version` of `base_dir`: written under a temporary
        name, op-audited, given its warmup requests, then renamed into place.

        Args:
            base_dir: the model's base directory.
            version: the version number (default: one more than the highest present, or 1).
            model_name: the name the warmup requests address (default: base_dir's name).

        Returns:
            (version directory, version number, the audit's op types per signature).

        Raises:
            ValueError: when the version exists or the op audit fails.
        """
        if os.path.exists(base_dir) and not os.path.isdir(base_dir):
            raise NotADirectoryError(f"--out {base_dir!r} is a file; pass a directory to hold the versions")
        os.makedirs(base_dir, exist_ok=True)
        _remove_abandoned_exports(base_dir)
        explicit = version is not None
        version = int(version) if explicit else max(existing_versions(base_dir), default=0) + 1
        if os.path.exists(os.path.join(base_dir, str(version))):
            raise _version_exists_error(base_dir, version)
        model_name = model_name or os.path.basename(os.path.normpath(os.path.abspath(base_dir)))
        temp = os.path.join(base_dir, f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            try:
                tf.saved_model.save(self, temp, signatures=self.signatures())
                ops = audit_saved_model(temp)
                write_warmup_requests(temp, self.warmup_requests(), model_name)
            except Exception as error:
                if not is_disk_full(error):
                    raise
                needed = size_on_disk(temp)  # at least what was written before the disk filled
                shutil.rmtree(temp, ignore_errors=True)
                raise disk_full_error(os.path.join(base_dir, str(version)), needed, at_least=True) from None
            version, claim = _claim_version(base_dir, version, explicit)
            final = os.path.join(base_dir, str(version))
            try:
                os.rename(temp, final)
            finally:
                os.remove(claim)
        finally:
            if os.path.exists(temp):
                shutil.rmtree(temp, ignore_errors=True)
        return final, version, ops


def existing_versions(base_dir):
    """The version numbers present in `base_dir` (directories named by an integer).

    Example:
    >>> existing_versions("/nonexistent")
    []
    """
    if not os.path.isdir(base_dir):
        return []
    return sorted(
        int(name) for name in os.listdir(base_dir) if name.isdigit() and os.path.isdir(os.path.join(base_dir, name))
    )


def check_version_free(base_dir, version):
    """Refuses a bad or taken --version before any work is done.

    Example:
    >>> check_version_free("/nonexistent", 0)
    Traceback (most recent call last):
    ValueError: version=0 must be a positive integer
    """
    if version is not None and (isinstance(version, bool) or int(version) < 1):
        raise ValueError(f"version={version!r} must be a positive integer")
    if version is not None and os.path.exists(os.path.join(base_dir, str(int(version)))):
        raise _version_exists_error(base_dir, int(version))


def write_warmup_requests(path, requests, model_name):
    """Writes `path/assets.extra/tf_serving_warmup_requests`: one PredictionLog per request.

    Args:
        path: the SavedModel directory (still under its temporary name: the whole
            directory is renamed into place, so this file needs no rename of its own).
        requests: (signature name, {input name: array}) pairs.
        model_name: the model name TF Serving serves the export under.
    """
    os.makedirs(os.path.join(path, WARMUP_DIR), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(path, WARMUP_DIR, WARMUP_FILE)) as writer:
        for signature, inputs in requests:
            request = grpc_predict_request(model_name, signature, inputs)
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _claim_version(base_dir, version, explicit):
    """Claims `version` of `base_dir` for this process, or (without an explicit --version) the
    next free number after it, so that exports racing for one number end with two versions.

    Returns (version, claim path); the caller renames its export into place and removes the claim.
    A claimed number's directory must not exist: `os.rename` onto an existing empty directory
    succeeds on Linux and would pass for a version that another writer made."""
    while True:
        claim = os.path.join(base_dir, f"{CLAIM_PREFIX}{version}")
        try:
            os.symlink(str(os.getpid()), claim)
        except FileExistsError:
            taken = True
        else:
            taken = os.path.lexists(os.path.join(base_dir, str(version)))
            if taken:
                os.remove(claim)
        if not taken:
            return version, claim
        if explicit:
            raise _version_exists_error(base_dir, version)
        version += 1


def _remove_abandoned_exports(base_dir):
    """Removes temporary directories and version claims left by an export that was killed
    (its process is gone)."""
    for name in os.listdir(base_dir):
        path = os.path.join(base_dir, name)
        if name.startswith(CLAIM_PREFIX) and os.path.islink(path):
            pid = os.readlink(path)
            if pid.isdigit() and not _process_alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            continue
        if not name.startswith(TEMP_PREFIX):
            continue
        pid = name[len(TEMP_PREFIX):].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(os.path.join(base_dir, name), ignore_errors=True)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _version_exists_error(base_dir, version):
    present = existing_versions(base_dir)
    return ValueError(
        f"version {version} already exists in {base_dir!r}; versions are never overwritten: pass another "
        f"--version or leave it out to write version {max(present, default=0) + 1}"
    )

"""Export a run or a fine-tuned classifier as a TF Lite model (int8 weights by default), and
run it from Python.

TF Serving cannot serve a `.tflite` file, so this is its own format with its own directory
and loader, never a TF Serving version:

```
OUT/model.tflite      the model on ids: TF Lite builtin ops only, one signature "serving_default"
OUT/vocab.txt         the run's vocabulary (the runner tokenizes in Python with it)
OUT/kmlm_tflite.json  what the runner needs: kind, case, S, K, labels, quantization, inputs
```

| kind | inputs (int32) | outputs |
|---|---|---|
| `fill_mask` | `token_ids`, `segment_ids`, `document_ids` [B, W], `mask_positions` [B, M] | `top_k_ids` [B, M, K] int32, `top_k_scores` [B, M, K] float32 |
| `classify`, `pair` | `token_ids`, `segment_ids`, `document_ids` [B, W] | `scores` [B, C] float32 |

W <= S and M are free at run time (the runner pads a request to its longest text rounded up
to 16 and asks for exactly its [MASK]s). Scores are softmaxes, computed as the TF Serving
exports compute them (special and reserved tokens never predicted).

`--quantize int8` is TF Lite's dynamic-range quantization: weights stored as int8 with one
scale per output channel, activations quantized per row on the fly by the hybrid kernels
(no calibration data needed; accuracy close to float, see the README's measured agreement).
`--quantize none` keeps float32 weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
import warnings

import numpy as np
import tensorflow as tf

from kmlm.files import disk_full_error, is_disk_full, size_on_disk
from kmlm.pipelines import load_vocabulary, make_tokenizer, never_predicted, save_vocabulary, special_ids

TFLITE_FILE = "model.tflite"
META_FILE = "kmlm_tflite.json"
VOCAB_FILE = "vocab.txt"
QUANTIZATIONS = ("int8", "none")
TFLITE_TASKS = ("classify", "pair")  # fine-tuned tasks with a TF Lite export
TEMP_PREFIX = ".kmlm-tflite-"
WIDTH_MULTIPLE = 16  # a request is padded to its longest text rounded up to this
# Up to this many texts are tokenized by keras-hub's Python path (about 1.4 ms a text here),
# more in one TF graph call (about 4 ms, then 0.1 ms a text): the same WordPiece either way.
PYTHON_TOKENIZE_MAX = 2


@dataclasses.dataclass
class TFLiteExport:
    """What `export_tflite` wrote.

    Attributes:
        path: the output directory.
        kind: "fill_mask", "classify" or "pair".
        quantize: "int8" or "none".
        seq_len: S, the longest row the runner accepts.
        size_bytes: the size of model.tflite.
        ops: the TF Lite op names in the model, sorted.
    """

    path: str
    kind: str
    quantize: str
    seq_len: int
    size_bytes: int
    ops: list


class _Graph(tf.Module):
    """The model's variables and the one function to convert; the plain variables are
    tracked, not the Keras objects, as in `kmlm.serving.base.ExportModule`."""

    def __init__(self, model, function, input_names):
        super().__init__(name="kmlm_tflite")
        self.model_variables = [weight.value for weight in model.weights]
        spec = tf.TensorSpec([None, None], tf.int32)
        self.function = tf.function(function, input_signature=[spec] * len(input_names), autograph=False)
        self.input_names = tuple(input_names)


def fill_mask_graph(model, vocabulary, top_k):
    """The masked LM on ids with its top-k softmax over the predictable tokens."""
    blocked = tf.constant(np.where(never_predicted(vocabulary), -np.inf, 0.0).astype(np.float32))

    def fill_mask(token_ids, segment_ids, document_ids, mask_positions):
        logits = model({"token_ids": token_ids, "segment_ids": segment_ids, "document_ids": document_ids,
                        "mask_positions": mask_positions}, training=False)
        scores = tf.nn.softmax(tf.cast(logits, tf.float32) + blocked, axis=-1)
        best = tf.math.top_k(scores, k=top_k, sorted=True)
        return {"top_k_ids": best.indices, "top_k_scores": best.values}

    return _Graph(model, fill_mask, ("token_ids", "segment_ids", "document_ids", "mask_positions"))


def classifier_graph(model):
    """A classify/pair task model on ids with its softmax over the labels."""

    def classify(token_ids, segment_ids, document_ids):
        logits = model({"token_ids": token_ids, "segment_ids": segment_ids, "document_ids": document_ids},
                       training=False)
        return {"scores": tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}

    return _Graph(model, classify, ("token_ids", "segment_ids", "document_ids"))


def convert(graph, quantize="int8"):
    """The TF Lite flatbuffer of `graph` (builtin ops only: no TF kernels are linked).

    Args:
        graph: a `_Graph` (from `fill_mask_graph` or `classifier_graph`).
        quantize: "int8" (dynamic-range int8 weights) or "none" (float32).

    Returns:
        bytes of the .tflite model.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    concrete = graph.function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], graph)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def tflite_ops(model_bytes):
    """The op names a .tflite model uses, sorted (read with TF Lite's own analyzer)."""
    interpreter = make_interpreter(model_bytes, num_threads=1)
    return sorted({detail["op_name"] for detail in interpreter._get_ops_details()})


def export_tflite(model_dir, out, quantize="int8", seq_len=None, top_k=5, verbose=1):
    """Writes a run (fill-mask) or a fine-tuned classify/pair model as a TF Lite directory.

    Args:
        model_dir: a `kmlm pretrain` run directory (or a loaded `Run`), or a `kmlm finetune` output.
        out: the directory to write; must not exist or be empty. Written under a temporary
            name beside it and renamed into place.
        quantize: "int8" or "none".
        seq_len: S, the longest row the runner accepts (default: the run's training seq_len).
        top_k: K, predictions per [MASK] (fill-mask only).
        verbose: print progress.

    Returns:
        A `TFLiteExport`.

    Raises:
        ValueError: on a bad setting, a task without a TF Lite export, or a non-empty `out`.

    Example (needs the run directory of `kmlm pretrain --out runs/demo`, so tests skip it):
    >>> export_tflite("runs/demo", "tflite/demo").size_bytes  # doctest: +SKIP
    1680512
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"--quantize {quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out {out!r} already exists and is not empty; choose a new directory")
    graph, vocabulary, meta = _load_for_export(model_dir, seq_len, top_k)
    if verbose:
        print(f"converting the {meta['kind']} model to TF Lite ({'int8 weights' if quantize == 'int8' else 'float32'})"
              " ...", flush=True)
    model_bytes = convert(graph, quantize)
    meta.update(quantize=quantize, inputs=list(graph.input_names), format_version=1)
    _write_directory(out, model_bytes, vocabulary, meta)
    return TFLiteExport(path=out, kind=meta["kind"], quantize=quantize, seq_len=meta["seq_len"],
                        size_bytes=len(model_bytes), ops=tflite_ops(model_bytes))


def _load_for_export(model_dir, seq_len, top_k):
    """(graph, vocabulary, metadata) of a run or a fine-tuned model, settings checked."""
    from kmlm.run_directory import Run, load_run

    if not isinstance(model_dir, Run) and os.path.isfile(os.path.join(model_dir, "task.json")):
        from kmlm.tasks.finetune import Tasker, TaskInfo

        task = TaskInfo.read(model_dir)[0].task
        if task not in TFLITE_TASKS:  # refused before the model is loaded
            raise ValueError(f"--format tflite exports fill-mask runs and {' and '.join(TFLITE_TASKS)} models; "
                             f"{model_dir!r} is a {task} model: export it with --format tf-serving")
        tasker = Tasker.load(model_dir)
        seq_len = _checked_seq_len(seq_len or tasker.info.seq_len, tasker.model.get_layer("encoder").config.max_position)
        meta = {"kind": task, "lowercase": tasker.info.lowercase, "seq_len": seq_len,
                "labels": list(tasker.info.labels)}
        return classifier_graph(tasker.model), tasker.vocabulary, meta
    run = model_dir if isinstance(model_dir, Run) else load_run(model_dir)
    if not run.has_masked_lm_head:
        raise ValueError(f"{run.path!r} has no trained masked-LM head, so there is no fill-mask model to export; "
                         "export it with --format tf-serving (its encode signature)")
    seq_len = _checked_seq_len(seq_len or run.config.data.seq_len, run.model_config.max_position)
    predictable = int((~never_predicted(run.vocabulary)).sum())
    if not 1 <= int(top_k) <= predictable:
        raise ValueError(f"top_k={top_k} must be in [1, {predictable}] (the vocabulary's non-special tokens)")
    meta = {"kind": "fill_mask", "lowercase": run.config.data.lowercase, "seq_len": seq_len, "top_k": int(top_k)}
    return fill_mask_graph(run.model, run.vocabulary, int(top_k)), run.vocabulary, meta


def _checked_seq_len(seq_len, max_position):
    seq_len = int(seq_len)
    if not 3 <= seq_len <= max_position:
        raise ValueError(f"seq_len={seq_len} is outside [3, {max_position}]: the model's max_position is "
                         f"{max_position}; export with --seq-len <= {max_position}")
    return seq_len


def _write_directory(out, model_bytes, vocabulary, meta):
    """Writes the three files into a temporary directory beside `out`, then renames it to
    `out`, so a killed export never leaves a half-written model there."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        try:
            os.makedirs(temp)
            with open(os.path.join(temp, TFLITE_FILE), "wb") as file:
                file.write(model_bytes)
            save_vocabulary(vocabulary, os.path.join(temp, VOCAB_FILE))
            with open(os.path.join(temp, META_FILE), "w", encoding="utf-8") as file:
                json.dump(meta, file, indent=2)
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise disk_full_error(out, size_on_disk(temp), at_least=True) from None
        if os.path.isdir(out):
            os.rmdir(out)  # empty (checked first): the rename needs the name free
        os.rename(temp, out)
    finally:
        if os.path.exists(temp):
            shutil.rmtree(temp, ignore_errors=True)


# --- running ---------------------------------------------------------------------------------


def make_interpreter(model, num_threads=None):
    """A TF Lite interpreter of `model` (a path or bytes): LiteRT's (`ai_edge_litert`) when it is
    installed, else the one TensorFlow still ships (`tf.lite.Interpreter`, deprecated there)."""
    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": model}
    threads = int(num_threads or os.cpu_count() or 1)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = None
    if Interpreter is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the deprecation notice, on every load
            return tf.lite.Interpreter(num_threads=threads, **source)
    return Interpreter(num_threads=threads, **source)


class TFLiteRunner:
    """A TF Lite export loaded for inference: the interpreter, the run's tokenizer and the
    export's settings. `load_tflite` returns the subclass for the export's kind.

    Args:
        path: the directory written by `export_tflite` (`kmlm export --format tflite`).
        num_threads: interpreter threads (default: all cores).
    """

    def __init__(self, path, num_threads=None):
        self.meta = read_tflite_meta(path)
        self.path = path
        self.kind = self.meta["kind"]
        self.seq_len = int(self.meta["seq_len"])
        self.vocabulary = load_vocabulary(os.path.join(path, VOCAB_FILE))
        self.ids = special_ids(self.vocabulary)
        self.tokenizer = make_tokenizer(self.vocabulary, lowercase=self.meta["lowercase"])
        text = tf.TensorSpec([None], tf.string)
        self._tokenize_graph = tf.function(lambda t: _flat_pieces(self.tokenizer, t), input_signature=[text],
                                           autograph=False)
        self.interpreter = make_interpreter(os.path.join(path, TFLITE_FILE), num_threads)
        # Tensor indices of the one signature's inputs and outputs, by name.
        signature = self.interpreter.get_signature_runner("serving_default")
        self._input_index = {name: d["index"] for name, d in signature.get_input_details().items()}
        self._output_index = {name: d["index"] for name, d in signature.get_output_details().items()}
        self._shapes = None

    def run_ids(self, **inputs):
        """Runs the model on int32 id arrays (names as in `kmlm_tflite.json`'s `inputs`);
        returns {output name: array}."""
        shapes = {name: np.shape(value) for name, value in inputs.items()}
        if shapes != self._shapes:  # reallocate only when the request's shape changes
            for name, shape in shapes.items():
                self.interpreter.resize_tensor_input(self._input_index[name], list(shape), strict=False)
            self.interpreter.allocate_tensors()
            self._shapes = shapes
        for name, value in inputs.items():
            self.interpreter.set_tensor(self._input_index[name], np.ascontiguousarray(value, np.int32))
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self._output_index.items()}

    def pieces(self, texts):
        """The WordPiece ids of each text (no [CLS]/[SEP]), as lists of ints, from the run's
        tokenizer."""
        texts = list(texts)
        if len(texts) <= PYTHON_TOKENIZE_MAX:  # eagerly, keras-hub tokenizes in Python
            return [[int(i) for i in row] for row in self.tokenizer.tokenize(texts)]
        return _split(*self._tokenize_graph(tf.constant(texts)))

    def dense_rows(self, rows, segments=None):
        """token, segment and document ids [B, W] of token rows, W = the longest rounded up
        to 16, at most S."""
        longest = max(len(row) for row in rows)
        width = min(-(-longest // WIDTH_MULTIPLE) * WIDTH_MULTIPLE, self.seq_len)
        token_ids = np.full([len(rows), width], self.ids.pad, np.int32)
        segment_ids = np.zeros([len(rows), width], np.int32)
        document_ids = np.zeros([len(rows), width], np.int32)
        for row, tokens in enumerate(rows):
            token_ids[row, : len(tokens)] = tokens
            document_ids[row, : len(tokens)] = 1
            if segments is not None:
                segment_ids[row, : len(tokens)] = segments[row]
        return {"token_ids": token_ids, "segment_ids": segment_ids, "document_ids": document_ids}


class TFLiteFillMask(TFLiteRunner):
    """Fill-mask on a TF Lite export: the results of `kmlm.FillMask`, per text.

    Example (needs `kmlm export runs/demo --format tflite --out tflite/demo`, so tests skip it):
    >>> fill_mask = load_tflite("tflite/demo")  # doctest: +SKIP
    >>> fill_mask(["the [MASK] of a list"])[0][0]["predictions"][0]["token"]  # doctest: +SKIP
    'end'
    """

    def __call__(self, texts, top_k=None):
        """For each text, a list with one dict per [MASK]: `position` (token index) and
        `predictions` (top-k dicts of `token`, `id`, `score`), as `kmlm.FillMask` returns."""
        top_k = int(top_k or self.meta["top_k"])
        if not 1 <= top_k <= self.meta["top_k"]:
            raise ValueError(f"top_k={top_k} must be in [1, {self.meta['top_k']}] (the top_k of this export)")
        rows = [[self.ids.cls, *pieces, self.ids.sep] for pieces in self.pieces(list(texts))]
        for text, tokens in zip(texts, rows):
            if len(tokens) > self.seq_len:
                raise ValueError(f"text is {len(tokens)} tokens long, more than the seq_len={self.seq_len} of this "
                                 f"export ([CLS] and [SEP] included); shorten it or export with a larger --seq-len: "
                                 f"{text[:60]!r}")
        positions = [[i for i, token in enumerate(tokens) if token == self.ids.mask] for tokens in rows]
        slots = max(1, max(len(p) for p in positions))
        mask_positions = np.zeros([len(rows), slots], np.int32)
        for row, found in enumerate(positions):
            mask_positions[row, : len(found)] = found
        out = self.run_ids(**self.dense_rows(rows), mask_positions=mask_positions)
        ids, scores = out["top_k_ids"], out["top_k_scores"]
        return [
            [{"position": position,
              "predictions": [{"token": self.vocabulary[i], "id": int(i), "score": float(s)}
                              for i, s in zip(ids[row, slot, :top_k], scores[row, slot, :top_k])]}
             for slot, position in enumerate(found)]
            for row, found in enumerate(positions)
        ]


class TFLiteClassifier(TFLiteRunner):
    """A classify or pair model on a TF Lite export: label probabilities per text.

    Example (needs `kmlm export runs/sentiment --format tflite --out tflite/sentiment`, so tests skip it):
    >>> classifier = load_tflite("tflite/sentiment")  # doctest: +SKIP
    >>> classifier(["a fine film"])[0]["label"]  # doctest: +SKIP
    'pos'
    """

    @property
    def labels(self):
        return list(self.meta["labels"])

    def class_probabilities(self, texts, text_pairs=None, batch_size=32):
        """Softmax over the labels [N, C], as `Tasker.class_probabilities` gives it."""
        if (text_pairs is None) != (self.kind == "classify"):
            need = "text pairs" if self.kind == "pair" else "single texts"
            raise ValueError(f"this is a {self.kind} model: it takes {need}")
        texts = list(texts)
        results = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start: start + batch_size]
            if text_pairs is None:
                rows = [[self.ids.cls, *p[: self.seq_len - 2], self.ids.sep] for p in self.pieces(chunk)]
                segments = None
            else:
                firsts, seconds = self.pieces(chunk), self.pieces(text_pairs[start: start + batch_size])
                rows, segments = zip(*(self._pair_row(a, b) for a, b in zip(firsts, seconds)))
            results.append(self.run_ids(**self.dense_rows(rows, segments))["scores"])
        return np.concatenate(results) if results else np.zeros([0, len(self.labels)], np.float32)

    def __call__(self, texts, text_pairs=None):
        """For each text (or pair), a dict of `label`, `label_id`, `score` and `scores`."""
        scores = self.class_probabilities(texts, text_pairs)
        best = scores.argmax(axis=1)
        return [{"label": self.labels[i], "label_id": int(i), "score": float(row[i]), "scores": row.tolist()}
                for i, row in zip(best, scores)]

    def _pair_row(self, first, second):
        """[CLS] a [SEP] b [SEP] within S, trimmed as `kmlm.tasks.encoding.text_rows` trims."""
        budget = self.seq_len - 3
        keep_first = min(len(first), max(budget - budget // 2, budget - len(second)))
        keep_second = min(len(second), budget - keep_first)
        part_a = [self.ids.cls, *first[:keep_first], self.ids.sep]
        part_b = [*second[:keep_second], self.ids.sep]
        return part_a + part_b, [0] * len(part_a) + [1] * len(part_b)


def load_tflite(path, num_threads=None):
    """The runner of a TF Lite export: a `TFLiteFillMask` or a `TFLiteClassifier`."""
    kind = read_tflite_meta(path)["kind"]
    return (TFLiteFillMask if kind == "fill_mask" else TFLiteClassifier)(path, num_threads)


def read_tflite_meta(path):
    """The settings of a TF Lite export (its kmlm_tflite.json)."""
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isfile(meta_path):
        raise ValueError(f"{path!r} is not a kmlm TF Lite export (no {META_FILE}); write one with "
                         "`kmlm export RUN_DIR --format tflite --out DIR`")
    with open(meta_path, encoding="utf-8") as file:
        return json.load(file)


def _flat_pieces(tokenizer, text):
    pieces = tf.cast(tokenizer.tokenize(text), tf.int32)
    return pieces.flat_values, pieces.row_lengths()


def _split(values, lengths):
    values, lengths = values.numpy().tolist(), lengths.numpy().tolist()
    rows, start = [], 0
    for length in lengths:
        rows.append(values[start: start + length])
        start += length
    return rows

"""Export a kmlm run, or a fine-tuned classifier, as a Hugging Face transformers directory.

```
kmlm export RUN_DIR --format huggingface --out DIR
```

writes `config.json`, `model.safetensors` (safetensors only, never pickle), `vocab.txt` and
`tokenizer_config.json`, which `AutoModelForMaskedLM.from_pretrained(DIR)` (or
`AutoModelForSequenceClassification` for a classifier) and `AutoTokenizer.from_pretrained(DIR)`
load. The weights are the run's own, tensor for tensor (`kmlm.interop.huggingface_layouts`):

| kmlm | exported as |
|---|---|
| post-LN run (BERT, a converted BERT checkpoint) | `BertForMaskedLM` (`BertForPreTraining` with a next-sentence head) |
| pre-LN run (the `kmlm pretrain` default) | `RobertaPreLayerNormForMaskedLM` |
| `kmlm finetune --task classify` or `pair` | `...ForSequenceClassification`, with the label names |
| a converted checkpoint without an MLM head | `BertModel` / `RobertaPreLayerNormModel` |

The tokenizer is BERT's WordPiece tokenizer over the run's vocabulary, cased or not as the
run was trained, so it gives kmlm's ids for the pre-LN layout too. An option that no
transformers layout computes is refused with one line naming it (never exported as a
different model): a GEGLU feed-forward (`gated_ffn`), and a pre-LN MLM whose activation is
not exact GELU (roberta-prelayernorm's MLM head always applies exact GELU).

`kmlm convert DIR --out RUN_DIR` reads the directory back into the same weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid

import numpy as np

from kmlm.files import disk_full_error, is_disk_full, size_on_disk
from kmlm.interop.huggingface_layouts import (
    dense_tensors,
    encoder_tensors,
    layout_for,
    masked_lm_head_tensors,
)

# kmlm activation -> the `hidden_act` computing the same function in transformers.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
# Fine-tuned tasks with a transformers head class, and the kind of that class.
EXPORTED_TASKS = {"classify": "sequence_classification", "pair": "sequence_classification"}
TEMP_PREFIX = ".kmlm-export-"


@dataclasses.dataclass
class HuggingFaceExport:
    """What `export_huggingface` wrote.

    Attributes:
        path: the directory.
        model_type: `model_type` of its config.json ("bert", "roberta-prelayernorm").
        architecture: the transformers class (`BertForMaskedLM`, ...).
        tensors: number of tensors in model.safetensors.
        labels: the classifier's label names in id order, or None.
        left_out: what the run holds that the layout has no place for (e.g. a
            next-sentence head in roberta-prelayernorm).
    """

    path: str
    model_type: str
    architecture: str
    tensors: int
    labels: list | None = None
    left_out: list = dataclasses.field(default_factory=list)


def unsupported_option(config, masked_lm=True):
    """The one-line reason a `ModelConfig` has no transformers layout, or None when it has one.

    Example:
    >>> from kmlm.config import ModelConfig
    >>> unsupported_option(ModelConfig(gated_ffn=True)).split(";")[0]
    'gated_ffn=True (a GEGLU feed-forward) has no Hugging Face transformers layout'
    >>> unsupported_option(ModelConfig(norm_first=True)) is None
    True
    """
    if config.gated_ffn:
        return ("gated_ffn=True (a GEGLU feed-forward) has no Hugging Face transformers layout; only runs with "
                "the plain feed-forward export")
    if config.activation not in HF_ACTIVATIONS:
        return f"activation={config.activation!r} has no Hugging Face transformers equivalent"
    if config.embedding_dim is not None or config.share_layers:
        return (f"embedding_dim={config.embedding_dim}, share_layers={config.share_layers} (a factorized embedding or "
                "shared layers, as ALBERT and small ELECTRA models have) is not exported: kmlm writes the bert and "
                "roberta-prelayernorm layouts only")
    if config.norm_first and masked_lm and config.activation != "gelu":
        return (f"activation={config.activation!r} in a pre-LN masked LM has no Hugging Face transformers layout: "
                "roberta-prelayernorm's MLM head always applies exact GELU ('gelu')")
    return None


def hf_config(config, layout, architecture, ids):
    """The transformers config.json dict of a kmlm `ModelConfig` in `layout`."""
    return {
        "architectures": [architecture],
        "model_type": layout.model_type,
        "vocab_size": config.vocabulary_size,
        "hidden_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_dim,
        "hidden_act": HF_ACTIVATIONS[config.activation],
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_position + layout.position_offset(ids.pad),
        # A run without segment embeddings adds nothing: one all-zero segment row.
        "type_vocab_size": max(config.num_segments, 1),
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_epsilon,
        "pad_token_id": ids.pad,
        "bos_token_id": ids.cls,
        "eos_token_id": ids.sep,
        "position_embedding_type": "absolute",
        "is_decoder": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }


def tokenizer_config(lowercase, max_length):
    """tokenizer_config.json: BERT's WordPiece over vocab.txt, as kmlm's tokenizer splits text
    (lowercasing and stripping accents together, every CJK character its own word)."""
    return {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": bool(lowercase),
        "strip_accents": None,  # follows do_lower_case, as kmlm's does
        "tokenize_chinese_chars": True,
        "model_max_length": int(max_length),
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }


def _arrays(tensors):
    """{Hugging Face name: array} of the kmlm variables of `Tensor`s."""
    arrays = {}
    for tensor in tensors:
        arrays.update(tensor.to_hf(tensor.variable.numpy()))
    return arrays


def masked_lm_arrays(run, layout, ids):
    """(architecture kind, tensors, heads left out) of a pretrained or converted run."""
    from kmlm.run_directory import load_sentence_heads

    has_head = run.has_masked_lm_head
    prefix = layout.prefix if has_head else ""
    arrays = _arrays(encoder_tensors(run.encoder, layout, prefix, ids.pad))
    if has_head:
        arrays.update(_arrays(masked_lm_head_tensors(run.model.get_layer("mlm_head"), layout)))
    sentence_heads = load_sentence_heads(run.path)
    left_out = []
    kind = "masked_lm" if has_head else "base"
    if "pooler/kernel" in sentence_heads:
        arrays[f"{prefix}{layout.sentence_pooler}.weight"] = sentence_heads["pooler/kernel"].T
        arrays[f"{prefix}{layout.sentence_pooler}.bias"] = sentence_heads["pooler/bias"]
    if "next_sentence/kernel" in sentence_heads:
        if layout.next_sentence and has_head:
            arrays[f"{layout.next_sentence}.weight"] = sentence_heads["next_sentence/kernel"].T
            arrays[f"{layout.next_sentence}.bias"] = sentence_heads["next_sentence/bias"]
            kind = "pretraining"
        else:
            left_out.append(f"the next-sentence head (no place for it in {layout.classes[kind]})")
    return kind, arrays, left_out


def classifier_arrays(model, layout, ids):
    """Tensors of a `build_classifier` model: encoder, [CLS] pooler and output layer."""
    pooler, logits = model.get_layer("pooler"), model.get_layer("logits")
    tensors = encoder_tensors(model.get_layer("encoder"), layout, layout.prefix, ids.pad)
    tensors += dense_tensors(pooler.kernel, pooler.bias, layout.classifier_pooler)
    tensors += dense_tensors(logits.kernel, logits.bias, layout.classifier_output)
    return _arrays(tensors)


def _source(run_dir):
    """(model config, vocabulary, lowercase, task info or None, a loaded run or task model)."""
    from kmlm.tasks.finetune import TASK_FILE, Tasker

    if os.path.isfile(os.path.join(run_dir, TASK_FILE)):
        tasker = Tasker.load(run_dir)
        if tasker.info.task not in EXPORTED_TASKS:
            raise ValueError(
                f"{run_dir!r} is a fine-tuned {tasker.info.task!r} model; --format huggingface exports pretrained "
                f"runs and fine-tuned {' and '.join(EXPORTED_TASKS)} models"
            )
        config = tasker.model.get_layer("encoder").config
        return config, tasker.vocabulary, tasker.info.lowercase, tasker.info, tasker.model
    from kmlm.run_directory import load_run

    run = load_run(run_dir)
    return run.model_config, run.vocabulary, run.config.data.lowercase, None, run


def _add_zero_segment_table(arrays, config):
    """A run without segment embeddings (a converted DistilBERT) gets the one all-zero segment
    row that config.json's type_vocab_size=1 promises, so transformers adds nothing either."""
    if config.num_segments:
        return
    suffix = "embeddings.word_embeddings.weight"
    word = next(name for name in arrays if name.endswith(suffix))
    arrays[word[: -len(suffix)] + "embeddings.token_type_embeddings.weight"] = np.zeros((1, config.hidden_dim),
                                                                                        np.float32)


def export_huggingface(run_dir, out, verbose=1):
    """Writes the Hugging Face transformers directory `out` for a kmlm run or classifier.

    Args:
        run_dir: a `kmlm pretrain` / `kmlm convert` run directory, or a `kmlm finetune`
            output of task classify or pair.
        out: the directory to write; must not exist or be empty. It is written under a
            temporary name beside it and renamed into place.
        verbose: print a summary.

    Returns:
        A `HuggingFaceExport`.

    Raises:
        ValueError: for a run option no transformers layout computes, a task without a
            transformers head, or an `out` that holds files.

    Example (needs a run directory, so not run here; tests/interop export tiny runs):
    >>> export_huggingface("runs/demo", "hf/demo").architecture  # doctest: +SKIP
    'RobertaPreLayerNormForMaskedLM'
    """
    from kmlm.pipelines import special_ids

    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out {out!r} already exists and is not empty; choose a new directory")
    config, vocabulary, lowercase, task, source = _source(run_dir)
    problem = unsupported_option(config, masked_lm=task is None)
    record = getattr(getattr(source, "config", None), "tokenizer", None)
    if problem is None and record is not None:
        problem = (f"its {record.kind} tokenizer (converted from {(source.config.converted_from or {}).get('model_type')}) is "
                   "not exported: kmlm writes WordPiece tokenizers only")
    if problem:
        raise ValueError(f"cannot export {run_dir!r} to Hugging Face: {problem}")
    layout = layout_for(config.norm_first)
    ids = special_ids(vocabulary)
    left_out = []
    if task is None:
        kind, arrays, left_out = masked_lm_arrays(source, layout, ids)
    else:
        kind, arrays = EXPORTED_TASKS[task.task], classifier_arrays(source, layout, ids)
    _add_zero_segment_table(arrays, config)
    architecture = layout.classes[kind]
    settings = hf_config(config, layout, architecture, ids)
    labels = None
    if task is not None:
        labels = [str(label) for label in task.labels]
        settings.update(
            id2label={str(i): label for i, label in enumerate(labels)},
            label2id={label: i for i, label in enumerate(labels)},
            classifier_dropout=float(source.get_layer("dropout").rate),
            problem_type="single_label_classification",
        )
    files = {
        "config.json": json.dumps(settings, indent=2, sort_keys=True) + "\n",
        "tokenizer_config.json": json.dumps(tokenizer_config(lowercase, config.max_position), indent=2) + "\n",
        "vocab.txt": "".join(token + "\n" for token in vocabulary),
    }
    _write_directory(out, files, arrays)
    result = HuggingFaceExport(path=out, model_type=layout.model_type, architecture=architecture,
                               tensors=len(arrays), labels=labels, left_out=left_out)
    if verbose:
        named = f", labels {', '.join(labels)}" if labels else ""
        print(f"wrote {architecture} ({layout.model_type}, {len(arrays)} tensors{named}) to {out}: config.json, "
              "model.safetensors, vocab.txt, tokenizer_config.json", flush=True)
        for item in left_out:
            print(f"not exported: {item}", flush=True)
    return result


def _write_directory(out, files, arrays):
    """Writes the text `files` and model.safetensors into a temporary directory beside `out`,
    then renames it to `out`, so a killed export never leaves a half-written model there."""
    from safetensors.numpy import save_file

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        try:
            os.makedirs(temp)
            for name, text in files.items():
                with open(os.path.join(temp, name), "w", encoding="utf-8") as file:
                    file.write(text)
            tensors = {name: np.ascontiguousarray(value, np.float32) for name, value in arrays.items()}
            # transformers reads the "format" entry to know the tensors are PyTorch's layout.
            save_file(tensors, os.path.join(temp, "model.safetensors"), metadata={"format": "pt"})
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


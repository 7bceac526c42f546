"""Export a kmlm run, or a fine-tuned classifier, as a Hugging Face transformers directory.

```
kmlm export RUN_DIR --format huggingface --out DIR
```

writes `config.json`, `model.safetensors` (safetensors only, never pickle), the tokenizer's
files and `tokenizer_config.json`, which `AutoModelForMaskedLM.from_pretrained(DIR)` (or
`AutoModelForSequenceClassification` for a classifier) and `AutoTokenizer.from_pretrained(DIR)`
load. The weights are the run's own, tensor for tensor (`kmlm.interop.huggingface_layouts`):

| kmlm | exported as |
|---|---|
| post-LN run (BERT, a converted BERT or DistilBERT checkpoint) | `BertForMaskedLM` (`BertForPreTraining` with a next-sentence head) |
| pre-LN run (the `kmlm pretrain` default) | `RobertaPreLayerNormForMaskedLM` |
| a run converted from RoBERTa, ALBERT or ELECTRA | its family: `RobertaForMaskedLM`, `AlbertForMaskedLM` (`AlbertForPreTraining` with its SOP head), `ElectraForMaskedLM` |
| `kmlm finetune --task classify` or `pair` | `...ForSequenceClassification`, with the label names |
| a converted checkpoint without an MLM head | the family's base model (`BertModel`, `ElectraModel`, ...) |

The tokenizer is the run's own (`kmlm.interop.huggingface_tokenizers.tokenizer_files`):
BERT's WordPiece over the run's vocabulary, cased or not as the run was trained, and a
converted RoBERTa's byte-level BPE (vocab.json, merges.txt) or ALBERT's SentencePiece model
(spiece.model) with the checkpoint's own special tokens. An option that no transformers
layout computes is refused with one line naming it (never exported as a different model): a
GEGLU feed-forward (`gated_ffn`), a factorized embedding or shared layers outside the ALBERT
and ELECTRA layouts, and an MLM whose activation is not exact GELU in a layout whose MLM head
always applies exact GELU (roberta-prelayernorm, roberta, electra).

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
    export_layout,
    masked_lm_head_tensors,
)
from kmlm.interop.huggingface_tokenizers import EXPORT_LAYOUTS, tokenizer_files

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
        model_type: `model_type` of its config.json ("bert", "roberta-prelayernorm",
            "roberta", "albert", "electra").
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


def unsupported_option(config, masked_lm=True, layout=None):
    """The one-line reason a `ModelConfig` has no transformers layout, or None when it has one.

    Args:
        config: the run's `ModelConfig`.
        masked_lm: whether the MLM head is exported.
        layout: the layout to write (`export_layout`); by default the one of a kmlm run.

    Example:
    >>> from kmlm.config import ModelConfig
    >>> unsupported_option(ModelConfig(gated_ffn=True)).split(";")[0]
    'gated_ffn=True (a GEGLU feed-forward) has no Hugging Face transformers layout'
    >>> unsupported_option(ModelConfig(norm_first=True)) is None
    True
    """
    layout = layout or export_layout(config.norm_first)
    if config.gated_ffn:
        return ("gated_ffn=True (a GEGLU feed-forward) has no Hugging Face transformers layout; only runs with "
                "the plain feed-forward export")
    if config.activation not in HF_ACTIVATIONS:
        return f"activation={config.activation!r} has no Hugging Face transformers equivalent"
    factorized = config.embedding_dim is not None and layout.embedding_projection is None
    if factorized or config.share_layers != layout.shares_blocks:
        return (f"embedding_dim={config.embedding_dim}, share_layers={config.share_layers} (a factorized embedding or "
                f"shared layers, as ALBERT and small ELECTRA models have) has no place in the {layout.model_type} "
                "layout: only runs converted from ALBERT or ELECTRA export them, in their own layout")
    if masked_lm and layout.mlm_exact_gelu and config.activation != "gelu":
        kind = "a pre-LN masked LM" if config.norm_first else f"a masked LM exported as {layout.model_type}"
        return (f"activation={config.activation!r} in {kind} has no Hugging Face transformers layout: "
                f"{layout.model_type}'s MLM head always applies exact GELU ('gelu')")
    return None


def unsupported_tokenizer(record, layout, converted_from=None):
    """The one-line reason the run's tokenizer (a `TokenizerRecord`, None for WordPiece) has no
    place in `layout`, or None."""
    kind = record.kind if record is not None else None
    if kind is None:
        fits = all(layout.model_type not in names for names in EXPORT_LAYOUTS.values())
    else:
        fits = layout.model_type in EXPORT_LAYOUTS[kind]
    if fits:
        return None
    source = f" (converted from {converted_from})" if converted_from else ""
    return (f"its {kind or 'WordPiece'} tokenizer{source} has no place in the {layout.model_type} layout; kmlm exports "
            "byte_bpe tokenizers as roberta, sentencepiece as albert and WordPiece in the other layouts")


def hf_config(config, layout, architecture, ids):
    """The transformers config.json dict of a kmlm `ModelConfig` in `layout` (its keys are the
    family's, `Layout.config_name`: the names `kmlm convert` reads)."""
    fields = {
        "vocabulary_size": config.vocabulary_size,
        "hidden_dim": config.hidden_dim,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "intermediate_dim": config.intermediate_dim,
        "activation": HF_ACTIVATIONS[config.activation],
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "max_position": config.max_position + layout.position_offset(ids.pad),
        # A run without segment embeddings adds nothing: one all-zero segment row.
        "num_segments": max(config.num_segments, 1),
        "initializer_range": config.initializer_range,
        "layer_norm_epsilon": config.layer_norm_epsilon,
    }
    if layout.embedding_projection:
        fields["embedding_dim"] = config.embedding_dim or config.hidden_dim
    settings = {layout.config_name(field): value for field, value in fields.items()}
    settings.update({
        "architectures": [architecture],
        "model_type": layout.model_type,
        "pad_token_id": ids.pad,
        "bos_token_id": ids.cls,
        "eos_token_id": ids.sep,
        "position_embedding_type": "absolute",
        "is_decoder": False,
        "add_cross_attention": False,
        "tie_word_embeddings": True,
        "dtype": "float32",
        **layout.config_extras,
    })
    if config.document_positions:
        # transformers ignores this key (it numbers one input from 0, as kmlm does for a single
        # document); `kmlm convert` reads it back, so a packed run converts to the same run.
        settings["kmlm_document_positions"] = True
    return settings


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


def _add_identity_projection(arrays, config, layout):
    """ALBERT always projects the embedding to the hidden width: a run with E == H (no kmlm
    projection) gets the identity there, which computes what kmlm computes."""
    if not layout.always_projects or config.embedding_dim is not None:
        return
    name = next(name for name in arrays if name.endswith(f"{layout.embeddings}word_embeddings.weight"))
    projection = name[: -len(f"{layout.embeddings}word_embeddings.weight")] + layout.embedding_projection
    arrays[f"{projection}.weight"] = np.eye(config.hidden_dim, dtype=np.float32)
    arrays[f"{projection}.bias"] = np.zeros(config.hidden_dim, np.float32)


def export_huggingface(run_dir, out, verbose=1):
    """Writes the Hugging Face transformers directory `out` for a kmlm run or classifier.

    Args:
        run_dir: a `kmlm pretrain` / `kmlm convert` run directory (a converted RoBERTa,
            ALBERT or ELECTRA is written in its own family's layout), or a `kmlm finetune`
            output of task classify or pair.
        out: the directory to write; must not exist or be empty. It is written under a
            temporary name beside it and renamed into place.
        verbose: print a summary.

    Returns:
        A `HuggingFaceExport`.

    Raises:
        ValueError: for a run option or tokenizer no transformers layout holds, a task without a
            transformers head, or an `out` that holds files.

    Example (needs a run directory, so not run here; tests/interop export tiny runs):
    >>> export_huggingface("runs/demo", "hf/demo").architecture  # doctest: +SKIP
    'RobertaPreLayerNormForMaskedLM'
    """
    from kmlm.pipelines import special_ids

    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out {out!r} already exists and is not empty; choose a new directory")
    config, vocabulary, lowercase, task, source = _source(run_dir)
    run_config = getattr(source, "config", None) if task is None else None
    family = ((run_config.converted_from if run_config else None) or {}).get("model_type")
    record = run_config.tokenizer if run_config else None
    layout = export_layout(config.norm_first, family)
    problem = unsupported_option(config, masked_lm=task is None, layout=layout) or unsupported_tokenizer(
        record, layout, family)
    if problem:
        raise ValueError(f"cannot export {run_dir!r} to Hugging Face: {problem}")
    ids = special_ids(vocabulary)
    left_out = []
    if task is None:
        kind, arrays, left_out = masked_lm_arrays(source, layout, ids)
    else:
        kind, arrays = EXPORTED_TASKS[task.task], classifier_arrays(source, layout, ids)
    _add_zero_segment_table(arrays, config)
    _add_identity_projection(arrays, config, layout)
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
    files = {"config.json": json.dumps(settings, indent=2, sort_keys=True) + "\n",
             **tokenizer_files(run_dir, vocabulary, lowercase, record, config.max_position)}
    _write_directory(out, files, arrays)
    result = HuggingFaceExport(path=out, model_type=layout.model_type, architecture=architecture,
                               tensors=len(arrays), labels=labels, left_out=left_out)
    if verbose:
        named = f", labels {', '.join(labels)}" if labels else ""
        print(f"wrote {architecture} ({layout.model_type}, {len(arrays)} tensors{named}) to {out}: "
              f"{', '.join(['model.safetensors', *files])}", flush=True)
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
            for name, content in files.items():
                data = content if isinstance(content, bytes) else content.encode("utf-8")
                with open(os.path.join(temp, name), "wb") as file:
                    file.write(data)
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


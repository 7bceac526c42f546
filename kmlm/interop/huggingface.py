"""Import a Hugging Face BERT checkpoint (config.json, model.safetensors, vocab.txt) as a
kmlm run directory; DistilBERT, RoBERTa, ALBERT and ELECTRA checkpoints too, each through
its layout (`kmlm.interop.huggingface_layouts`: tensor names, config keys, positions,
embedding projection, shared block) and its tokenizer (`kmlm.interop.huggingface_tokenizers`).

The mapping is exact: BERT is post-LN with learned position and segment embeddings, which is
kmlm's default architecture. Query/key/value kernels are fused into kmlm's one [H, 3H]
projection, PyTorch's [out, in] linear weights are transposed, and the MLM decoder stays tied
to the token embedding. Weights are read with `safetensors` only (never pickled `.bin`
files). A `roberta-prelayernorm` checkpoint with a WordPiece vocab.txt (what
`kmlm export --format huggingface` writes for a pre-LN run) imports as a pre-LN run; the
tensor names of both layouts are in `kmlm.interop.huggingface_layouts`.

```
kmlm convert HF_DIR --out RUN_DIR
```

writes `config.json`, `vocab.txt`, `model.keras` and, when the checkpoint has a pooler,
`pooler.safetensors` (the pooler and any next-sentence classifier). A checkpoint without an
MLM head (a plain `BertModel`) still gets a loadable `MaskedLMModel`, but its head is
untrained and config.json says so: `fill-mask`, `evaluate`, `score` and `generate` refuse it.
"""

import dataclasses
import json
import os

import numpy as np

from kmlm import run_directory as rd
from kmlm.config import ModelConfig
from kmlm.files import read_json, replace_atomically
from kmlm.interop.huggingface_layouts import LAYOUTS, encoder_tensors, masked_lm_head_tensors
from kmlm.interop.huggingface_tokenizers import read_tokenizer

# Hugging Face `hidden_act` values and the kmlm activation computing the same function.
ACTIVATION_NAMES = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}
SUPPORTED_MODEL_TYPES = tuple(LAYOUTS)
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"


def read_hf_config(hf_dir):
    """Reads and validates `config.json` of a Hugging Face BERT directory.

    Returns:
        The parsed dict.

    Raises:
        FileNotFoundError: When the directory or its config.json is missing.
        ValueError: For a model type or setting that kmlm cannot reproduce exactly.
    """
    if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"{hf_dir!r} is not a directory; pass a Hugging Face model directory")
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{hf_dir!r} has no config.json; pass a Hugging Face model directory")
    config = read_json(path)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        architectures = config.get("architectures")
        named = f" ({', '.join(architectures)})" if architectures else ""
        raise ValueError(
            f"unsupported architecture: model_type={model_type!r}{named}; kmlm converts "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} checkpoints only"
        )
    checks = (
        ("position_embedding_type", "absolute"),
        ("is_decoder", False),
        ("add_cross_attention", False),
    )
    for key, supported in checks:
        value = config.get(key, supported)
        if value != supported:
            raise ValueError(f"unsupported {model_type} config: {key}={value!r}; kmlm supports only "
                             f"{key}={supported!r}")
    layout = LAYOUTS[model_type]
    activation_key = layout.config_name("activation")
    activation = config.get(activation_key, "gelu")
    if activation not in ACTIVATION_NAMES:
        raise ValueError(
            f"unsupported {model_type} config: {activation_key}={activation!r}; supported: "
            f"{', '.join(sorted(ACTIVATION_NAMES))}"
        )
    for key in ("num_hidden_groups", "inner_group_num"):  # ALBERT: one group of one shared layer
        if int(config.get(key, 1)) != 1:
            raise ValueError(f"unsupported {model_type} config: {key}={config[key]}; kmlm shares one layer across "
                             f"all layers, as every released ALBERT does ({key}=1)")
    if config.get("sinusoidal_pos_embds"):
        raise ValueError(f"unsupported {model_type} config: sinusoidal_pos_embds=True; kmlm converts learned "
                         "position embeddings only")
    if LAYOUTS[model_type].pads_positions and "pad_token_id" not in config:
        raise ValueError(f"config.json of a {model_type} checkpoint lacks pad_token_id, which numbers its positions")
    return config


def model_config_from_hf(config):
    """The `ModelConfig` equivalent to a Hugging Face config dict of a supported family."""
    layout = LAYOUTS[config.get("model_type", "bert")]

    def value(field, default=None):
        key = layout.config_name(field)
        if key in config:
            return config[key]
        if default is None:
            raise ValueError(f"config.json lacks {key!r}, which every {layout.model_type} config has")
        return default

    embedding_dim = int(value("embedding_dim", value("hidden_dim")))
    return ModelConfig(
        vocabulary_size=int(value("vocabulary_size")),
        hidden_dim=int(value("hidden_dim")),
        num_layers=int(value("num_layers")),
        num_heads=int(value("num_heads")),
        intermediate_dim=int(value("intermediate_dim")),
        # Layouts that number positions after the padding id keep their first rows for it;
        # kmlm's positions start after them.
        max_position=int(value("max_position", 512)) - layout.position_offset(config.get("pad_token_id", 0)),
        num_segments=int(value("num_segments", 2)) if layout.segment_embeddings else 0,
        dropout=float(value("dropout", 0.1)),
        attention_dropout=float(value("attention_dropout", 0.1)),
        activation=ACTIVATION_NAMES[value("activation", "gelu")],
        norm_first=layout.norm_first,
        layer_norm_epsilon=float(value("layer_norm_epsilon", 1e-12)),
        initializer_range=float(value("initializer_range", 0.02)),
        embedding_dim=None if embedding_dim == int(value("hidden_dim")) else embedding_dim,
        share_layers=layout.shares_blocks,
        document_positions=bool(config.get("kmlm_document_positions", False)),
    )


class _Checkpoint:
    """Read access to the tensors of `model.safetensors` (or a sharded set with an index)."""

    def __init__(self, hf_dir):
        from safetensors import SafetensorError, safe_open

        single = os.path.join(hf_dir, WEIGHTS_FILE)
        index = os.path.join(hf_dir, WEIGHTS_INDEX_FILE)
        if os.path.isfile(single):
            files = [single]
        elif os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                files = sorted({os.path.join(hf_dir, name) for name in json.load(f)["weight_map"].values()})
        else:
            pickled = [name for name in ("pytorch_model.bin", "tf_model.h5") if os.path.isfile(os.path.join(hf_dir, name))]
            found = f" (found {', '.join(pickled)}, which kmlm does not read)" if pickled else ""
            raise FileNotFoundError(
                f"{hf_dir!r} has no {WEIGHTS_FILE}{found}; kmlm imports safetensors weights only"
            )
        self._files = {}
        for path in files:
            try:
                handle = safe_open(path, framework="numpy")
            except SafetensorError as error:
                raise ValueError(f"{path!r} is not a readable safetensors file ({error}); it is damaged or "
                                 "incomplete: download it again") from None
            for key in handle.keys():
                self._files[key] = (path, handle)
        self.used = set()

    def keys(self):
        return set(self._files)

    def __contains__(self, key):
        return key in self._files

    def get(self, key):
        path, handle = self._files[key]
        self.used.add(key)
        if handle.get_slice(key).get_dtype() == "BF16":
            from safetensors import safe_open

            # numpy has no bfloat16; TensorFlow reads it and widens to float32.
            with safe_open(path, framework="tf") as tf_handle:
                return tf_handle.get_tensor(key).numpy().astype(np.float32)
        return handle.get_tensor(key).astype(np.float32)


def _encoder_prefix(checkpoint, layout):
    """Where the encoder's tensors are: under the head class's prefix ("bert.") or at the top."""
    for prefix in (layout.prefix, ""):
        if f"{prefix}{layout.embeddings}word_embeddings.weight" in checkpoint:
            return prefix
    raise ValueError(
        f"the checkpoint has no {layout.model_type} embeddings ({layout.embeddings}word_embeddings.weight); "
        f"it is not a {layout.model_type} model"
    )


def _assign(variable, value, name):
    value = np.asarray(value, np.float32)
    if tuple(variable.shape) != value.shape:
        raise ValueError(
            f"tensor {name} has shape {value.shape}, but config.json implies {tuple(variable.shape)}; "
            "the weights do not belong to this config"
        )
    variable.assign(value)


def _load(tensors, checkpoint):
    """Assigns every `Tensor` of `tensors` (`kmlm.interop.huggingface_layouts`) from the checkpoint."""
    for tensor in tensors:
        _assign(tensor.variable, tensor.from_hf({name: checkpoint.get(name) for name in tensor.names}),
                ", ".join(tensor.names))


def load_encoder_weights(encoder, checkpoint, prefix, layout=LAYOUTS["bert"], pad_id=0):
    """Copies the embeddings and every block of a checkpoint in `layout` into a kmlm `Encoder`."""
    for i in range(encoder.config.num_layers):
        name = f"{prefix}{layout.block.format(i=i)}{layout.query_key_value[0]}.weight"
        if name not in checkpoint:
            raise ValueError(
                f"the checkpoint has no layer {i} ({name}), but config.json says "
                f"num_hidden_layers={encoder.config.num_layers}"
            )
    _load(encoder_tensors(encoder, layout, prefix, pad_id), checkpoint)


def _load_masked_lm_head(head, token_embeddings, checkpoint, layout=LAYOUTS["bert"]):
    tensors = masked_lm_head_tensors(head, layout)
    bias = tensors[-1]
    if bias.names[0] not in checkpoint:  # older checkpoints store only the decoder's bias
        bias = dataclasses.replace(bias, names=(f"{layout.mlm_decoder}.bias",))
    _load(tensors[:-1] + [bias], checkpoint)
    decoder = f"{layout.mlm_decoder}.weight"
    if decoder in checkpoint and not np.array_equal(checkpoint.get(decoder), token_embeddings):
        raise ValueError(
            f"unsupported checkpoint: its MLM decoder ({decoder}) is not tied to the word embeddings; "
            "kmlm's MLM head always shares the token embedding table"
        )


def _sentence_heads(checkpoint, prefix, layout=LAYOUTS["bert"]):
    """The pooler ([H, H] kernel, bias) and NSP classifier ([H, 2], bias) present, kmlm layout."""
    heads = {}
    for kmlm_name, name in (("pooler", f"{prefix}{layout.sentence_pooler}"), ("next_sentence", layout.next_sentence)):
        if name and f"{name}.weight" in checkpoint:
            heads[f"{kmlm_name}/kernel"] = checkpoint.get(f"{name}.weight").T
            heads[f"{kmlm_name}/bias"] = checkpoint.get(f"{name}.bias")
    return heads


def _write_bytes(path, content):
    with open(path, "wb") as f:
        f.write(content)


def convert_checkpoint(hf_dir, out, seq_len=128, verbose=1):
    """Writes the kmlm run directory `out` for the Hugging Face BERT directory `hf_dir`.

    Args:
        hf_dir: directory with config.json, model.safetensors (or a sharded index) and
            vocab.txt (and optionally tokenizer_config.json for `do_lower_case`).
        out: run directory to create; must not exist or be empty.
        seq_len: the default sequence length recorded for `evaluate` and `export`.
        verbose: print a summary.

    Returns:
        dict with `heads` (which of masked_lm, pooler, next_sentence were present),
        `ignored` (checkpoint tensors kmlm has no place for) and `parameters`.

    Example:
    (Needs a Hugging Face model directory, so not run as a test; tests/interop converts one.)
    >>> convert_checkpoint("all-MiniLM-L6-v2", "runs/minilm")["heads"]  # doctest: +SKIP
    {'masked_lm': False, 'pooler': True, 'next_sentence': False}
    """
    from kmlm.model import build_mlm_model
    from kmlm.pipelines import save_vocabulary, special_ids

    hf_config = read_hf_config(hf_dir)
    model_config = model_config_from_hf(hf_config)
    if seq_len > model_config.max_position:
        raise ValueError(f"--seq-len {seq_len} exceeds the checkpoint's max_position_embeddings={model_config.max_position}")
    layout = LAYOUTS[hf_config["model_type"]]
    tokenizer = read_tokenizer(hf_dir, layout.model_type)
    vocabulary = tokenizer.vocabulary
    if len(vocabulary) != model_config.vocabulary_size:
        raise ValueError(
            f"the tokenizer has {len(vocabulary)} tokens but config.json says vocab_size={model_config.vocabulary_size}"
        )
    pad_id = special_ids(vocabulary).pad
    if layout.pads_positions and int(hf_config["pad_token_id"]) != pad_id:
        raise ValueError(
            f"config.json says pad_token_id={hf_config['pad_token_id']} but [PAD] is id {pad_id} in the tokenizer; "
            f"a {layout.model_type} checkpoint numbers its positions from the padding id, so they must agree"
        )
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out {out!r} already exists and is not empty; choose a new run directory")
    checkpoint = _Checkpoint(hf_dir)
    prefix = _encoder_prefix(checkpoint, layout)
    has_mlm_head = f"{layout.mlm_transform}.weight" in checkpoint
    if has_mlm_head and layout.mlm_exact_gelu and model_config.activation != "gelu":
        raise ValueError(
            f"unsupported {layout.model_type} config: hidden_act={hf_config.get('hidden_act')!r}; its MLM head always "
            "applies exact GELU and kmlm's applies the feed-forward's activation, so only hidden_act='gelu' converts"
        )

    model = build_mlm_model(model_config)
    load_encoder_weights(model.encoder, checkpoint, prefix, layout, pad_id)
    if has_mlm_head:
        _load_masked_lm_head(model.get_layer("mlm_head"), model.encoder.embedding.token_embeddings.numpy(),
                             checkpoint, layout)
    sentence_heads = _sentence_heads(checkpoint, prefix, layout)
    heads = {
        "masked_lm": has_mlm_head,
        "pooler": "pooler/kernel" in sentence_heads,
        "next_sentence": "next_sentence/kernel" in sentence_heads,
    }
    # position_ids / token_type_ids are constant buffers some checkpoints store, not weights.
    buffers = ("embeddings.position_ids", "embeddings.token_type_ids")
    ignored = sorted(k for k in checkpoint.keys() - checkpoint.used if not k.endswith(buffers))

    os.makedirs(out, exist_ok=True)
    save_vocabulary(vocabulary, os.path.join(out, rd.VOCAB_FILE))
    for name, content in tokenizer.files.items():
        replace_atomically(os.path.join(out, name), lambda tmp, content=content: _write_bytes(tmp, content))
    if sentence_heads:
        rd.save_sentence_heads(out, sentence_heads)
    rd.RunConfig(
        model=model_config,
        # `evaluate` and `export` read these; the converted run learned no vocabulary.
        data=rd.DataRecord(seq_len=int(seq_len), batch_size=8, lowercase=tokenizer.lowercase),
        tokenizer=tokenizer.record,
        heads=rd.Heads(**heads),
        converted_from={
            "path": os.path.abspath(hf_dir),
            "model_type": hf_config.get("model_type"),
            "architectures": hf_config.get("architectures") or [],
            "hidden_act": hf_config.get("hidden_act", "gelu"),
            "ignored_tensors": ignored,
        },
    ).write(out)
    replace_atomically(os.path.join(out, rd.MODEL_FILE), model.save)
    result = {"heads": heads, "ignored": ignored, "parameters": int(model.count_params())}
    if verbose:
        present = ", ".join(name for name, present in heads.items() if present) or "none"
        print(
            f"converted {hf_config.get('model_type')} ({', '.join(hf_config.get('architectures') or ['?'])}): "
            f"{model_config.num_layers} layers, hidden {model_config.hidden_dim}, {len(vocabulary)} tokens, "
            f"heads: {present}; run directory {out}",
            flush=True,
        )
        if ignored:
            print(f"ignored {len(ignored)} tensors kmlm has no place for: {', '.join(ignored[:5])}"
                  + (" ..." if len(ignored) > 5 else ""), flush=True)
        if not has_mlm_head:
            print("no MLM head in the checkpoint: fill-mask, evaluate, score and generate are unavailable", flush=True)
    return result


"""Where each kmlm weight lives in a Hugging Face checkpoint, per model layout.

One table serves both directions: `kmlm convert` (import, `kmlm.interop.huggingface`) reads
the tensors it names and `kmlm export --format huggingface`
(`kmlm.interop.huggingface_export`) writes them.

| kmlm encoder | layout | transformers classes |
|---|---|---|
| post-LN (BERT) | `bert` | `BertForMaskedLM`, `BertForPreTraining`, `BertModel`, `BertForSequenceClassification` |
| pre-LN | `roberta-prelayernorm` | `RobertaPreLayerNormForMaskedLM`, `...Model`, `...ForSequenceClassification` |
| post-LN, no segments (import) | `distilbert` | `DistilBertForMaskedLM`, `DistilBertModel` |
| post-LN, positions after padding | `roberta` | `RobertaForMaskedLM`, `RobertaModel` |
| factorized embedding, one shared block | `albert` | `AlbertForMaskedLM`, `AlbertForPreTraining`, `AlbertModel` |
| embedding projection when E != H | `electra` | `ElectraForMaskedLM` (generator), `ElectraForPreTraining` (discriminator's encoder, import), `ElectraModel` |

`kmlm export --format huggingface` writes the first two layouts for kmlm's own runs, and a
run converted from roberta, albert or electra back in its family's layout
(`export_layout`); `distilbert` is read by `kmlm convert` only (its runs export as `bert`).

The pre-LN layout numbers positions from `pad_token_id + 1` (fairseq's convention, with the
padding tokens at `pad_token_id`), so kmlm's position row i is its row i + pad_token_id + 1
(`Layout.position_offset`); its MLM head always applies exact GELU. PyTorch `Linear` weights
are [out, in], kmlm kernels [in, out]; kmlm's fused [H, 3H] query|key|value kernel is three
tensors there.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
    """The names of one Hugging Face model layout.

    Attributes:
        model_type: `model_type` of its config.json.
        prefix: the encoder's tensor prefix under a head class ("bert.").
        norm_first: whether the blocks are pre-LN.
        attention_norm: per-block name of the LayerNorm of the attention sublayer.
        feed_forward_norm: per-block name of the LayerNorm of the feed-forward sublayer.
        final_norm: name (under `prefix`) of the LayerNorm after the last block, or None.
        mlm_transform, mlm_norm, mlm_bias, mlm_decoder: the MLM head's dense, LayerNorm,
            output bias and (tied) decoder.
        classifier_pooler, classifier_output: the sequence classifier's [CLS] dense + tanh
            and its output layer.
        sentence_pooler: the base model's [CLS] pooler (under `prefix`), or None.
        next_sentence: the next-sentence classifier, or None when the layout has none.
        classes: transformers class name per kind ("masked_lm", "pretraining", "base",
            "sequence_classification").
        pads_positions: positions start after `pad_token_id` (`position_offset`).
        embeddings: the embeddings' prefix (under `prefix`).
        segment_embeddings: the segment table's name (under `embeddings`), or None.
        embedding_projection: the Linear from embedding width to hidden width (under
            `prefix`), or None.
        block: per-block prefix, formatted with the block index `i`; one name for every
            block when the layout shares one block's weights across layers.
        query_key_value, attention_output, ffn_inner, ffn_output: per-block Linear names.
        config_names: `ModelConfig` field -> config.json key, where the family spells it
            differently from BERT.
        mlm_exact_gelu: the MLM head applies exact GELU whatever `hidden_act` says.
        always_projects: the embedding projection exists even when E == H (ALBERT).
        config_extras: fixed config.json entries an export writes for the family.
    """

    model_type: str
    prefix: str
    norm_first: bool
    attention_norm: str
    feed_forward_norm: str
    final_norm: str | None
    mlm_transform: str
    mlm_norm: str
    mlm_bias: str
    mlm_decoder: str
    classifier_pooler: str
    classifier_output: str
    sentence_pooler: str | None
    next_sentence: str | None
    classes: dict
    pads_positions: bool = False
    embeddings: str = "embeddings."
    segment_embeddings: str | None = "token_type_embeddings"
    embedding_projection: str | None = None
    block: str = "encoder.layer.{i}."
    query_key_value: tuple = ("attention.self.query", "attention.self.key", "attention.self.value")
    attention_output: str = "attention.output.dense"
    ffn_inner: str = "intermediate.dense"
    ffn_output: str = "output.dense"
    config_names: dict = dataclasses.field(default_factory=dict)
    mlm_exact_gelu: bool = False
    always_projects: bool = False
    config_extras: dict = dataclasses.field(default_factory=dict)

    @property
    def shares_blocks(self):
        """Whether every layer reads the same block weights (ALBERT)."""
        return "{i}" not in self.block

    def config_name(self, field):
        """The config.json key of a `ModelConfig` field in this family (BERT's by default)."""
        return self.config_names.get(field, BERT_CONFIG_NAMES[field])

    def position_offset(self, pad_id):
        """The Hugging Face position row of kmlm's position 0.

        Example:
        >>> LAYOUTS["roberta-prelayernorm"].position_offset(0), LAYOUTS["bert"].position_offset(0)
        (1, 0)
        """
        return int(pad_id) + 1 if self.pads_positions else 0


# `ModelConfig` field -> BERT's config.json key.
BERT_CONFIG_NAMES = {
    "vocabulary_size": "vocab_size",
    "hidden_dim": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_dim": "intermediate_size",
    "max_position": "max_position_embeddings",
    "num_segments": "type_vocab_size",
    "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
    "activation": "hidden_act",
    "layer_norm_epsilon": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "embedding_dim": "embedding_size",
}

LAYOUTS = {
    "bert": Layout(
        model_type="bert",
        prefix="bert.",
        norm_first=False,
        attention_norm="attention.output.LayerNorm",
        feed_forward_norm="output.LayerNorm",
        final_norm=None,
        mlm_transform="cls.predictions.transform.dense",
        mlm_norm="cls.predictions.transform.LayerNorm",
        mlm_bias="cls.predictions.bias",
        mlm_decoder="cls.predictions.decoder",
        classifier_pooler="bert.pooler.dense",
        classifier_output="classifier",
        sentence_pooler="pooler.dense",
        next_sentence="cls.seq_relationship",
        classes={"masked_lm": "BertForMaskedLM", "pretraining": "BertForPreTraining", "base": "BertModel",
                 "sequence_classification": "BertForSequenceClassification"},
    ),
    "roberta-prelayernorm": Layout(
        model_type="roberta-prelayernorm",
        prefix="roberta_prelayernorm.",
        norm_first=True,
        attention_norm="attention.LayerNorm",
        feed_forward_norm="intermediate.LayerNorm",
        final_norm="LayerNorm",
        mlm_transform="lm_head.dense",
        mlm_norm="lm_head.layer_norm",
        mlm_bias="lm_head.bias",
        mlm_decoder="lm_head.decoder",
        classifier_pooler="classifier.dense",
        classifier_output="classifier.out_proj",
        sentence_pooler="pooler.dense",
        next_sentence=None,
        classes={"masked_lm": "RobertaPreLayerNormForMaskedLM", "base": "RobertaPreLayerNormModel",
                 "sequence_classification": "RobertaPreLayerNormForSequenceClassification"},
        pads_positions=True,
        mlm_exact_gelu=True,
    ),
    "distilbert": Layout(
        model_type="distilbert",
        prefix="distilbert.",
        norm_first=False,
        attention_norm="sa_layer_norm",
        feed_forward_norm="output_layer_norm",
        final_norm=None,
        mlm_transform="vocab_transform",
        mlm_norm="vocab_layer_norm",
        mlm_bias="vocab_projector.bias",
        mlm_decoder="vocab_projector",
        classifier_pooler="pre_classifier",
        classifier_output="classifier",
        sentence_pooler=None,
        next_sentence=None,
        classes={"masked_lm": "DistilBertForMaskedLM", "base": "DistilBertModel",
                 "sequence_classification": "DistilBertForSequenceClassification"},
        segment_embeddings=None,
        block="transformer.layer.{i}.",
        query_key_value=("attention.q_lin", "attention.k_lin", "attention.v_lin"),
        attention_output="attention.out_lin",
        ffn_inner="ffn.lin1",
        ffn_output="ffn.lin2",
        config_names={"hidden_dim": "dim", "num_layers": "n_layers", "num_heads": "n_heads",
                      "intermediate_dim": "hidden_dim", "dropout": "dropout", "attention_dropout": "attention_dropout",
                      "activation": "activation"},
    ),
    "roberta": Layout(
        model_type="roberta",
        prefix="roberta.",
        norm_first=False,
        attention_norm="attention.output.LayerNorm",
        feed_forward_norm="output.LayerNorm",
        final_norm=None,
        mlm_transform="lm_head.dense",
        mlm_norm="lm_head.layer_norm",
        mlm_bias="lm_head.bias",
        mlm_decoder="lm_head.decoder",
        classifier_pooler="classifier.dense",
        classifier_output="classifier.out_proj",
        sentence_pooler="pooler.dense",
        next_sentence=None,
        classes={"masked_lm": "RobertaForMaskedLM", "base": "RobertaModel",
                 "sequence_classification": "RobertaForSequenceClassification"},
        pads_positions=True,
        mlm_exact_gelu=True,
    ),
    "albert": Layout(
        model_type="albert",
        prefix="albert.",
        norm_first=False,
        attention_norm="attention.LayerNorm",
        feed_forward_norm="full_layer_layer_norm",
        final_norm=None,
        mlm_transform="predictions.dense",
        mlm_norm="predictions.LayerNorm",
        mlm_bias="predictions.bias",
        mlm_decoder="predictions.decoder",
        classifier_pooler="albert.pooler",
        classifier_output="classifier",
        sentence_pooler="pooler",
        next_sentence="sop_classifier.classifier",
        classes={"masked_lm": "AlbertForMaskedLM", "pretraining": "AlbertForPreTraining", "base": "AlbertModel",
                 "sequence_classification": "AlbertForSequenceClassification"},
        embedding_projection="encoder.embedding_hidden_mapping_in",
        block="encoder.albert_layer_groups.0.albert_layers.0.",
        query_key_value=("attention.query", "attention.key", "attention.value"),
        attention_output="attention.dense",
        ffn_inner="ffn",
        ffn_output="ffn_output",
        always_projects=True,
        config_extras={"num_hidden_groups": 1, "inner_group_num": 1},
    ),
    # The generator (ElectraForMaskedLM); a discriminator (ElectraForPreTraining) converts its
    # encoder, and its replaced-token head is listed as ignored.
    "electra": Layout(
        model_type="electra",
        prefix="electra.",
        norm_first=False,
        attention_norm="attention.output.LayerNorm",
        feed_forward_norm="output.LayerNorm",
        final_norm=None,
        mlm_transform="generator_predictions.dense",
        mlm_norm="generator_predictions.LayerNorm",
        mlm_bias="generator_lm_head.bias",
        mlm_decoder="generator_lm_head",
        classifier_pooler="classifier.dense",
        classifier_output="classifier.out_proj",
        sentence_pooler=None,
        next_sentence=None,
        classes={"masked_lm": "ElectraForMaskedLM", "base": "ElectraModel",
                 "sequence_classification": "ElectraForSequenceClassification"},
        embedding_projection="embeddings_project",
        mlm_exact_gelu=True,
    ),
}


# Families a converted run is exported back to (a DistilBERT run is written as BERT).
EXPORTED_FAMILIES = ("roberta", "albert", "electra")


def layout_for(norm_first):
    """The layout of a kmlm encoder: `bert` for post-LN, `roberta-prelayernorm` for pre-LN."""
    return LAYOUTS["roberta-prelayernorm" if norm_first else "bert"]


def export_layout(norm_first, converted_from=None):
    """The layout an export writes: the family a run was converted from when it has one of
    `EXPORTED_FAMILIES`, else `layout_for(norm_first)`.

    Example:
    >>> export_layout(False, "albert").model_type, export_layout(False, "distilbert").model_type
    ('albert', 'bert')
    """
    if converted_from in EXPORTED_FAMILIES:
        return LAYOUTS[converted_from]
    return layout_for(norm_first)


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One kmlm variable and the Hugging Face tensor(s) holding it.

    `names` has one entry, or three for the fused query|key|value kernel or bias (split along
    its last axis). `transposed`: a Linear weight ([out, in] there). `row_offset`: the kmlm
    table starts at this row of the Hugging Face one (positions of the pre-LN layout).
    """

    names: tuple
    variable: object
    transposed: bool = False
    row_offset: int = 0

    def to_hf(self, value):
        """The Hugging Face tensors {name: array} of the kmlm `value` (an offset table gets
        `row_offset` zero rows first: the rows of padding)."""
        value = np.asarray(value, np.float32)
        if self.row_offset:
            table = np.zeros((self.row_offset + len(value), value.shape[1]), np.float32)
            table[self.row_offset:self.row_offset + len(value)] = value
            value = table
        parts = np.split(value, len(self.names), axis=-1)
        return {name: np.ascontiguousarray(part.T if self.transposed else part) for name, part in zip(self.names, parts)}

    def from_hf(self, tensors):
        """The kmlm value of the Hugging Face `tensors` (name -> array, for `names`)."""
        parts = [tensors[name].T if self.transposed else tensors[name] for name in self.names]
        value = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        rows = self.variable.shape[0]
        return value[self.row_offset:self.row_offset + rows] if self.row_offset else value


def layer_norm_tensors(norm, name):
    """The gamma and beta of a Keras LayerNormalization as `name`.weight and `name`.bias."""
    return [Tensor((f"{name}.weight",), norm.gamma), Tensor((f"{name}.bias",), norm.beta)]


def dense_tensors(kernel, bias, name):
    """A kmlm [in, out] kernel and its bias as the PyTorch Linear `name`."""
    return [Tensor((f"{name}.weight",), kernel, transposed=True), Tensor((f"{name}.bias",), bias)]


def encoder_tensors(encoder, layout, prefix, pad_id=0):
    """Every tensor of a kmlm `Encoder` in `layout`, its names under `prefix` ("" or
    `layout.prefix`): embeddings, each block, and the final LayerNorm of a pre-LN encoder."""
    embedding = encoder.embedding
    p = prefix + layout.embeddings
    tensors = [
        Tensor((p + "word_embeddings.weight",), embedding.token_embeddings),
        Tensor((p + "position_embeddings.weight",), embedding.position_embeddings,
               row_offset=layout.position_offset(pad_id)),
    ]
    if embedding.segment_embeddings is not None:
        tensors.append(Tensor((f"{p}{layout.segment_embeddings}.weight",), embedding.segment_embeddings))
    tensors += layer_norm_tensors(embedding.norm, p + "LayerNorm")
    if embedding.projection_kernel is not None:
        tensors += dense_tensors(embedding.projection_kernel, embedding.projection_bias,
                                 prefix + layout.embedding_projection)
    for i, block in enumerate(encoder.blocks):
        tensors += block_tensors(block, layout, prefix + layout.block.format(i=i))
    if layout.final_norm:
        tensors += layer_norm_tensors(encoder.get_layer("final_norm"), prefix + layout.final_norm)
    return tensors


def block_tensors(block, layout, p):
    """The tensors of one `EncoderBlock`, named under `p` ("bert.encoder.layer.0.")."""
    attention, ffn = block.attention, block.feed_forward
    qkv = [p + name for name in layout.query_key_value]
    return [
        Tensor(tuple(f"{name}.weight" for name in qkv), attention.qkv_kernel, transposed=True),
        Tensor(tuple(f"{name}.bias" for name in qkv), attention.qkv_bias),
        *dense_tensors(attention.output_kernel, attention.output_bias, p + layout.attention_output),
        *layer_norm_tensors(block.attention_norm, p + layout.attention_norm),
        *dense_tensors(ffn.inner_kernel, ffn.inner_bias, p + layout.ffn_inner),
        *dense_tensors(ffn.output_kernel, ffn.output_bias, p + layout.ffn_output),
        *layer_norm_tensors(block.feed_forward_norm, p + layout.feed_forward_norm),
    ]


def masked_lm_head_tensors(head, layout):
    """The MLM head's transform, LayerNorm and output bias (its decoder is the tied token table)."""
    return [
        *dense_tensors(head.transform_kernel, head.transform_bias, layout.mlm_transform),
        *layer_norm_tensors(head.norm, layout.mlm_norm),
        Tensor((layout.mlm_bias,), head.output_bias),
    ]

"""The kmlm encoder and masked-language model, composed from `kmlm.layers`."""

import keras

from kmlm.config import ModelConfig
from kmlm.layers import EncoderBlock, InputEmbedding, MaskedLMHead

ENCODER_INPUTS = ("token_ids", "segment_ids", "document_ids")


def _as_config(config):
    return config if isinstance(config, ModelConfig) else ModelConfig.from_dict(dict(config))


def model_inputs(names=ENCODER_INPUTS, prefix=""):
    """Symbolic int32 [B, S] Keras inputs, one per name (with an optional name prefix).

    Example:
    >>> sorted(model_inputs(ENCODER_INPUTS + ("mask_positions",)))
    ['document_ids', 'mask_positions', 'segment_ids', 'token_ids']
    """
    return {prefix + name: keras.Input(shape=(None,), dtype="int32", name=prefix + name) for name in names}


def _encoder_block(config, name):
    return EncoderBlock(
        config.num_heads,
        config.intermediate_dim,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation=config.activation,
        gated_ffn=config.gated_ffn,
        norm_first=config.norm_first,
        layer_norm_epsilon=config.layer_norm_epsilon,
        initializer_range=config.initializer_range,
        name=name,
    )


@keras.saving.register_keras_serializable(package="kmlm")
class Encoder(keras.Model):
    """Functional BERT-style encoder: inputs `token_ids`, `segment_ids`, `document_ids`
    [B, S] int32; output the sequence of hidden states [B, S, H].

    Options of `ModelConfig` beyond BERT: `embedding_dim` (narrower embedding tables
    projected to H, as ALBERT), `share_layers` (one block's weights for every layer, as
    ALBERT), `norm_first` (pre-LN blocks and a final LayerNorm), `gated_ffn`.

    Example:
    >>> encoder = Encoder(ModelConfig.from_preset("tiny", vocabulary_size=100))
    >>> sorted(encoder.input)
    ['document_ids', 'segment_ids', 'token_ids']
    """

    def __init__(self, config, **kwargs):
        config = _as_config(config)
        inputs = model_inputs(ENCODER_INPUTS)
        embedding = InputEmbedding(
            config.vocabulary_size,
            config.hidden_dim,
            max_position=config.max_position,
            num_segments=config.num_segments,
            dropout=config.dropout,
            layer_norm_epsilon=config.layer_norm_epsilon,
            initializer_range=config.initializer_range,
            embedding_dim=config.embedding_dim,
            document_positions=config.document_positions,
            name="embedding",
        )
        x = embedding(inputs["token_ids"], inputs["segment_ids"], inputs["document_ids"])
        # With share_layers (ALBERT) one block, "block_0", runs num_layers times.
        blocks = [_encoder_block(config, f"block_{i}") for i in range(1 if config.share_layers else config.num_layers)]
        for i in range(config.num_layers):
            x = blocks[i % len(blocks)](x, inputs["document_ids"])
        if config.norm_first:
            x = keras.layers.LayerNormalization(
                epsilon=config.layer_norm_epsilon, dtype="float32", name="final_norm"
            )(x)
        kwargs.setdefault("name", "encoder")
        super().__init__(inputs=inputs, outputs=x, **kwargs)
        self.config = config
        self.embedding = embedding
        self.blocks = blocks

    def block(self, i):
        """The `EncoderBlock` that layer `i` runs (the one shared block with `share_layers`)."""
        return self.blocks[i % len(self.blocks)]

    def encode_with_attention(self, inputs, token_vectors=None):
        """The sequence output and every block's attention probabilities, from the same
        layers called one by one (dropout off); for looking inside the model.

        Args:
            inputs: dict of `token_ids`, `segment_ids`, `document_ids` [B, S] int32.
            token_vectors: optional float [B, S, H] used in place of the token embeddings of
                `token_ids` (integrated gradients moves the input along a path in this space).

        Returns:
            (sequence [B, S, H], a list of `num_layers` float32 tensors [B, num_heads, S, S]).

        Example:
        >>> import numpy as np
        >>> encoder = Encoder(ModelConfig.from_preset("tiny", vocabulary_size=100))
        >>> ids = np.ones((1, 5), "int32")
        >>> sequence, attention = encoder.encode_with_attention(
        ...     {"token_ids": ids, "segment_ids": 0 * ids, "document_ids": ids})
        >>> len(attention), tuple(attention[0].shape)
        (2, (1, 2, 5, 5))
        """
        if token_vectors is None:
            token_vectors = self.embedding.token_vectors(inputs["token_ids"])
        x = self.embedding.from_token_vectors(token_vectors, inputs["segment_ids"], inputs["document_ids"], training=False)
        attention = []
        for i in range(self.config.num_layers):
            x, probabilities = self.block(i)(
                x, inputs["document_ids"], training=False, return_attention_scores=True)
            attention.append(probabilities)
        if self.config.norm_first:
            x = self.get_layer("final_norm")(x)
        return x, attention

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="kmlm")
class MaskedLMModel(keras.Model):
    """Encoder + tied MLM head: inputs `token_ids`, `segment_ids`, `document_ids` [B, S] and
    `mask_positions` [B, P] int32; output float32 logits [B, P, vocabulary_size].

    `model.encoder` is the reusable encoder (for fine-tuning and embeddings).
    """

    def __init__(self, config, **kwargs):
        config = _as_config(config)
        inputs = model_inputs(ENCODER_INPUTS + ("mask_positions",))
        encoder = Encoder(config)
        sequence = encoder({name: inputs[name] for name in ENCODER_INPUTS})
        head = MaskedLMHead(
            config.vocabulary_size,
            token_embedding=encoder.embedding,
            activation=config.activation,
            layer_norm_epsilon=config.layer_norm_epsilon,
            initializer_range=config.initializer_range,
            name="mlm_head",
        )
        logits = head(sequence, inputs["mask_positions"])
        kwargs.setdefault("name", "masked_lm")
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.config = config
        self.encoder = encoder

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def find_encoder(model):
    """The kmlm `Encoder` inside `model`: a masked LM, a fine-tuned task model or an encoder."""
    if isinstance(model, Encoder):
        return model
    if isinstance(getattr(model, "encoder", None), Encoder):
        return model.encoder
    for layer in model.layers:  # task models hold the encoder as a nested layer
        if isinstance(layer, Encoder):
            return layer
    raise ValueError(f"model {model.name!r} holds no kmlm Encoder; pass a kmlm run or fine-tuned model")


def build_encoder(config):
    """Builds an `Encoder` (sequence output) from a `ModelConfig` or its dict."""
    return Encoder(config)


def build_mlm_model(config, max_predictions=None):
    """Builds a `MaskedLMModel` from a `ModelConfig` (or its dict).

    Args:
        config: `ModelConfig` or dict.
        max_predictions: the P of the `mask_positions` input. The model accepts any P (and
            any S up to `max_position`); it is validated here so that a bad pipeline setting
            fails before training.

    Returns:
        A Keras functional model.

    Example:
    >>> model = build_mlm_model(ModelConfig.from_preset("tiny", vocabulary_size=100), 24)
    >>> model.output.shape
    (None, None, 100)
    """
    config = _as_config(config)
    if max_predictions is not None and int(max_predictions) < 1:
        raise ValueError(f"max_predictions={max_predictions} must be at least 1")
    return MaskedLMModel(config)

"""Token + position + segment embedding, with an optional projection to the hidden width."""

import keras
from keras import ops

from kmlm.layers.hash_dropout import HashDropout
from kmlm.layers.initializers import truncated_normal
from kmlm.layers.projection import project


@keras.saving.register_keras_serializable(package="kmlm")
class InputEmbedding(keras.layers.Layer):
    """Sums token, learned position and segment embeddings, then LayerNorm and dropout.

    The token table is exposed as `token_embeddings` so that an output projection
    (`MaskedLMHead`) can be tied to it. With `embedding_dim` smaller than `hidden_dim`
    (ALBERT's factorized embedding, ELECTRA's small models) the tables are `embedding_dim`
    wide and a dense projection (`projection_kernel`, `projection_bias`) maps the
    normalized sum to `hidden_dim` after dropout.

    Args:
        vocabulary_size: number of token ids.
        hidden_dim: embedding width.
        max_position: longest sequence the position table covers.
        num_segments: number of segment (sentence A/B) ids; 0 disables segment embeddings.
        dropout: dropout rate applied after the LayerNorm.
        layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal initializer.
        embedding_dim: width of the tables; None (or `hidden_dim`) for no projection.

    Call arguments:
        token_ids: int tensor [B, S].
        segment_ids: optional int tensor [B, S] (all zeros when omitted).
        training: whether dropout is active.

    Returns:
        float tensor [B, S, hidden_dim].

    Example:
    >>> layer = InputEmbedding(vocabulary_size=100, hidden_dim=16, max_position=32)
    >>> tuple(layer(ops.ones((2, 8), "int32")).shape)
    (2, 8, 16)
    >>> factorized = InputEmbedding(vocabulary_size=100, hidden_dim=16, max_position=32, embedding_dim=4)
    >>> tuple(factorized(ops.ones((2, 8), "int32")).shape), tuple(factorized.token_embeddings.shape)
    ((2, 8, 16), (100, 4))
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        max_position=512,
        num_segments=2,
        dropout=0.1,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        embedding_dim=None,
        document_positions=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.hidden_dim = int(hidden_dim)
        self.max_position = int(max_position)
        self.num_segments = int(num_segments)
        self.dropout = float(dropout)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.initializer_range = float(initializer_range)
        self.embedding_dim = self.hidden_dim if embedding_dim is None else int(embedding_dim)
        self.document_positions = bool(document_positions)

    def build(self, token_ids_shape, segment_ids_shape=None):
        self.token_embeddings = self.add_weight(
            name="token_embeddings", shape=(self.vocabulary_size, self.embedding_dim),
            initializer=truncated_normal(self.initializer_range),
        )
        self.position_embeddings = self.add_weight(
            name="position_embeddings", shape=(self.max_position, self.embedding_dim),
            initializer=truncated_normal(self.initializer_range),
        )
        self.segment_embeddings = None
        if self.num_segments > 0:
            self.segment_embeddings = self.add_weight(
                name="segment_embeddings", shape=(self.num_segments, self.embedding_dim),
                initializer=truncated_normal(self.initializer_range),
            )
        # LayerNorm statistics stay float32 under mixed precision.
        self.norm = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype="float32", name="norm")
        self.norm.build((None, None, self.embedding_dim))
        self.dropout_layer = HashDropout(self.dropout, dtype=self.dtype_policy, name="dropout")
        self.projection_kernel = self.projection_bias = None
        if self.embedding_dim != self.hidden_dim:  # created last: files of unprojected layers keep their order
            self.projection_kernel = self.add_weight(
                name="projection_kernel", shape=(self.embedding_dim, self.hidden_dim),
                initializer=truncated_normal(self.initializer_range),
            )
            self.projection_bias = self.add_weight(name="projection_bias", shape=(self.hidden_dim,), initializer="zeros")
        self.built = True

    def call(self, token_ids, segment_ids=None, document_ids=None, training=None):
        return self.from_token_vectors(self.token_vectors(token_ids), segment_ids, document_ids, training=training)

    def token_vectors(self, token_ids):
        """The rows of the token table for `token_ids` [B, S]: [B, S, embedding_dim]."""
        return ops.take(ops.cast(self.token_embeddings, self.compute_dtype), token_ids, axis=0)

    def from_token_vectors(self, token_vectors, segment_ids=None, document_ids=None, training=None):
        """The layer's output for given token vectors [B, S, embedding_dim] instead of ids: adds
        the position and segment embeddings, then LayerNorm, dropout and the projection to
        `hidden_dim` if any. Attribution methods (integrated gradients) move the inputs along a
        path in this space."""
        seq_len = ops.shape(token_vectors)[1]
        x = ops.cast(token_vectors, self.compute_dtype)
        positions = ops.cast(self.position_embeddings, self.compute_dtype)
        if self.document_positions and document_ids is not None:
            x = x + ops.take(positions, document_positions(document_ids), axis=0)
        else:
            x = x + ops.expand_dims(positions[:seq_len], 0)
        if self.segment_embeddings is not None and segment_ids is not None:
            x = x + ops.take(ops.cast(self.segment_embeddings, self.compute_dtype), segment_ids, axis=0)
        x = ops.cast(self.norm(x), self.compute_dtype)
        x = self.dropout_layer(x, training=training)
        if self.projection_kernel is not None:
            x = project(x, self.projection_kernel, self.projection_bias)
        return x

    def compute_output_shape(self, token_ids_shape, segment_ids_shape=None):
        return tuple(token_ids_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            hidden_dim=self.hidden_dim,
            max_position=self.max_position,
            num_segments=self.num_segments,
            dropout=self.dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            initializer_range=self.initializer_range,
            embedding_dim=self.embedding_dim,
            document_positions=self.document_positions,
        )
        return config


def document_positions(document_ids):
    """Position of each token within its document of a packed row: [B, S] int32.

    Documents of a packed row are contiguous runs of one id (padding, id 0, at the end); a
    token's position is the number of tokens before it in the row that carry its id.

    Example:
    >>> ops.convert_to_numpy(document_positions(ops.convert_to_tensor([[1, 1, 1, 2, 2, 0, 0]]))).tolist()
    [[0, 1, 2, 0, 1, 0, 1]]
    """
    document_ids = ops.convert_to_tensor(document_ids)
    seq_len = ops.shape(document_ids)[1]
    same = ops.equal(ops.expand_dims(document_ids, 2), ops.expand_dims(document_ids, 1))  # [B, S, S]
    index = ops.arange(seq_len)
    before = ops.expand_dims(ops.greater(ops.expand_dims(index, 1), ops.expand_dims(index, 0)), 0)
    return ops.sum(ops.cast(ops.logical_and(same, before), "int32"), axis=2)

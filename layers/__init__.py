"""Custom Keras layers of the kmlm encoder, one public class per module."""

from kmlm.layers.encoder_block import EncoderBlock
from kmlm.layers.feed_forward import FeedForward
from kmlm.layers.hash_dropout import HashDropout
from kmlm.layers.input_embedding import InputEmbedding
from kmlm.layers.masked_lm_head import MaskedLMHead
from kmlm.layers.multi_head_self_attention import MultiHeadSelfAttention, document_attention_bias
from kmlm.layers.pooler import Pooler
from kmlm.layers.sequence_pooling import POOLING_MODES, SequencePooling

__all__ = [
    "EncoderBlock",
    "FeedForward",
    "HashDropout",
    "InputEmbedding",
    "MaskedLMHead",
    "MultiHeadSelfAttention",
    "Pooler",
    "POOLING_MODES",
    "SequencePooling",
    "document_attention_bias",
]

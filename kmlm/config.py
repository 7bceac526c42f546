"""Model configuration and the BERT-miniature presets."""

import dataclasses
import json

from kmlm.layers.feed_forward import ACTIVATIONS

# (layers, hidden, heads) of the BERT miniatures; the feed-forward is 4x hidden.
PRESETS = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


@dataclasses.dataclass
class ModelConfig:
    """Shape and regularisation of a kmlm encoder.

    Example:
    >>> ModelConfig.from_preset("mini", vocabulary_size=8192).hidden_dim
    256
    """

    vocabulary_size: int = 8192
    hidden_dim: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_dim: int = 1024
    max_position: int = 512
    num_segments: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    gated_ffn: bool = False
    norm_first: bool = False
    layer_norm_epsilon: float = 1e-12
    initializer_range: float = 0.02
    # Options of converted families; config.json leaves them out at their defaults.
    embedding_dim: int | None = None  # token/position table width when it differs from hidden_dim (ALBERT)
    share_layers: bool = False  # one block's weights for every layer (ALBERT)
    # Positions counted from the start of each document of a packed row instead of the row:
    # a document reads the same wherever packing put it (a single document: no difference).
    document_positions: bool = False

    def __post_init__(self):
        for name in ("vocabulary_size", "hidden_dim", "num_layers", "num_heads", "intermediate_dim", "max_position"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim={self.hidden_dim} is not divisible by num_heads={self.num_heads}; "
                "choose a hidden size that is a multiple of the head count"
            )
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value} is outside [0, 1)")
        if self.embedding_dim is not None and (not isinstance(self.embedding_dim, int) or self.embedding_dim < 1):
            raise ValueError(f"embedding_dim={self.embedding_dim!r} must be a positive integer or None")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")

    @classmethod
    def from_preset(cls, name, **overrides):
        """Config of a named preset (tiny, mini, small, medium, base, large) with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        values = dict(num_layers=layers, hidden_dim=hidden, num_heads=heads, intermediate_dim=4 * hidden)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model settings {unknown}; valid: {sorted(known)}")
        return cls(**values)

    def to_dict(self):
        values = dataclasses.asdict(self)
        for name, default in (("embedding_dim", None), ("share_layers", False), ("document_positions", False)):
            if values[name] == default:  # config.json of a BERT-shaped model reads as before
                del values[name]
        return values

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

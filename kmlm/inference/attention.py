"""Attention maps: how much each token of a text attends to every other, per layer and head.

The probabilities come from the model's own layers (`Encoder.encode_with_attention`), so a
pretrained run, a converted checkpoint and a fine-tuned task model are read the same way.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from kmlm.inference.fill_mask import text_pieces
from kmlm.model import find_encoder
from kmlm.pipelines import make_tokenizer, special_ids


def _index(value, count, what):
    """`value` checked against range(count): one line naming the valid range otherwise."""
    if value is None:
        return list(range(count))
    if not 0 <= value < count:
        raise ValueError(f"--{what} {value} is outside the model's {count} {what}s; use 0 to {count - 1} "
                         f"({what}s are numbered from 0)")
    return [value]


@dataclasses.dataclass
class AttentionMaps:
    """The attention probabilities of one input.

    Attributes:
        text, text_pair: the input (text_pair None for a single text).
        tokens: the model's input tokens, [CLS] and [SEP] included.
        segment_ids: 0 for the first text, 1 for the second.
        attention: float32 [layers, heads, S, S]; attention[l, h, i, j] is how much token i
            (the query) attends to token j (the key) in head h of layer l; rows sum to 1.
    """

    text: str
    text_pair: str | None
    tokens: list
    segment_ids: list
    attention: np.ndarray

    @property
    def num_layers(self):
        return self.attention.shape[0]

    @property
    def num_heads(self):
        return self.attention.shape[1]

    def select(self, layer=None, head=None):
        """[(layer, head, matrix [S, S])] for one layer and/or head, or all of them; a layer
        or head outside the model raises a one-line ValueError."""
        layers = _index(layer, self.num_layers, "layer")
        heads = _index(head, self.num_heads, "head")
        return [(l, h, self.attention[l, h]) for l in layers for h in heads]

    def to_dict(self, layer=None, head=None):
        """A JSON-ready dict: the input, its tokens and one `maps` entry per layer and head
        (`layer`, `head`, `weights` [S][S], rows are queries)."""
        return {
            "text": self.text, "text_pair": self.text_pair, "tokens": list(self.tokens),
            "segment_ids": list(self.segment_ids), "num_layers": int(self.num_layers),
            "num_heads": int(self.num_heads),
            "maps": [{"layer": l, "head": h, "weights": np.round(matrix.astype(float), 6).tolist()}
                     for l, h, matrix in self.select(layer, head)],
        }


class AttentionReader:
    """Reads the attention maps of texts from a kmlm model.

    Args:
        model: a `MaskedLMModel`, a fine-tuned task model or an `Encoder`.
        vocabulary: the tokens in id order.
        lowercase: whether the tokenizer lowercases (as in training).

    Example:
    >>> import kmlm
    >>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat"]
    >>> model = kmlm.build_mlm_model(kmlm.ModelConfig.from_preset("tiny", vocabulary_size=len(vocabulary)))
    >>> maps = AttentionReader(model, vocabulary)("the cat sat")
    >>> maps.tokens, maps.attention.shape
    (['[CLS]', 'the', 'cat', 'sat', '[SEP]'], (2, 2, 5, 5))
    """

    def __init__(self, model, vocabulary, lowercase=True):
        self.encoder = find_encoder(model)
        self.vocabulary = list(vocabulary)
        self.tokenizer = make_tokenizer(self.vocabulary, lowercase=lowercase)
        self.ids = special_ids(self.vocabulary)
        self.max_length = self.encoder.config.max_position

    def features(self, text, text_pair=None):
        """(token ids, segment ids) of `[CLS] text [SEP]` or `[CLS] text [SEP] text_pair [SEP]`."""
        first = text_pieces(self.tokenizer, text)
        if not first:
            raise ValueError(f"text {text!r} has no tokens; give a text to look inside")
        token_ids = [self.ids.cls] + first + [self.ids.sep]
        segment_ids = [0] * len(token_ids)
        if text_pair is not None:
            second = text_pieces(self.tokenizer, text_pair) + [self.ids.sep]
            token_ids += second
            segment_ids += [1] * len(second)
        if len(token_ids) > self.max_length:
            raise ValueError(f"text is {len(token_ids)} tokens long, more than the model's {self.max_length}; "
                             "shorten it")
        return token_ids, segment_ids

    def __call__(self, text, text_pair=None):
        """The `AttentionMaps` of one text (or text pair)."""
        token_ids, segment_ids = self.features(text, text_pair)
        inputs = {"token_ids": tf.constant([token_ids], tf.int32),
                  "segment_ids": tf.constant([segment_ids], tf.int32),
                  "document_ids": tf.ones((1, len(token_ids)), tf.int32)}
        _, attention = self.encoder.encode_with_attention(inputs)
        stacked = np.stack([np.asarray(probabilities, np.float32)[0] for probabilities in attention])
        return AttentionMaps(text=text, text_pair=text_pair, tokens=[self.vocabulary[i] for i in token_ids],
                             segment_ids=segment_ids, attention=stacked)


def most_attended(tokens, matrix, top=3):
    """Per query token of an attention `matrix` [S, S]: (token, [(key index, key token,
    probability)] of its `top` most attended keys, largest first, ties by position).

    Example:
    >>> most_attended(["[CLS]", "hi", "[SEP]"], np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [1, 0, 0]]), top=2)[0]
    ('[CLS]', [(1, 'hi', 0.5), (2, '[SEP]', 0.3)])
    """
    rows = []
    for i, row in enumerate(np.asarray(matrix, np.float64)):
        best = sorted(range(len(row)), key=lambda j: (-row[j], j))[:top]
        rows.append((tokens[i], [(j, tokens[j], float(row[j])) for j in best]))
    return rows


def plot_attention(maps, path, layer=None, head=None):
    """Draws the attention maps of `maps` as a grid of heat maps (one row per layer, one
    column per head; queries down, keys across, each axis labelled with the tokens) and
    writes it to `path` as PNG.

    Args:
        maps: `AttentionMaps`.
        path: the PNG to write.
        layer, head: draw only this layer and/or head (numbered from 0).

    Returns:
        The number of maps drawn.
    """
    from kmlm.figures import save_png, token_fonts

    selected = maps.select(layer, head)
    layers = sorted({l for l, _, _ in selected})
    heads = sorted({h for _, h, _ in selected})
    count = len(maps.tokens)
    side = min(max(2.6, 0.3 * count), 9.0)  # inches per map: room for one label per token
    font = max(5, min(9, int(200 / max(count, 1))))
    with token_fonts() as plt:
        figure, axes = plt.subplots(len(layers), len(heads), squeeze=False,
                                    figsize=(side * len(heads) + 1.2, side * len(layers) + 0.8))
        for l, h, matrix in selected:
            axis = axes[layers.index(l)][heads.index(h)]
            image = axis.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
            axis.set_title(f"layer {l}, head {h}", fontsize=font + 1)
            axis.set_xticks(range(count), maps.tokens, rotation=90, fontsize=font)
            # Every map of a row has the same queries: label them once, left of the row.
            axis.set_yticks(range(count), maps.tokens if heads.index(h) == 0 else [], fontsize=font)
            axis.set_ylabel("query" if heads.index(h) == 0 else "", fontsize=font)
            axis.set_xlabel("key", fontsize=font)
        figure.colorbar(image, ax=axes, shrink=0.6, label="attention (row: query, column: key)")
        figure.suptitle(" ".join(maps.tokens) if count <= 24 else f"{count} tokens", fontsize=font + 2)
        save_png(figure, path)
    return len(selected)

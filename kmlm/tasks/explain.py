"""Per-token attributions of a classification (classify, pair): integrated gradients in
embedding space.

The score explained is the logit of the target class (softmax probabilities saturate, so
their path integral piles into a few steps). The baseline keeps [CLS], [SEP], the positions,
segments and `document_ids` of the input and replaces the token vector of every other token
by the vector of [MASK] (default): the token pretraining taught the model to read as "a word
is here, which one is unknown". [PAD] is the other choice; its vector is never attended to in
training, so the model has no reading of it. Integrated gradients (Sundararajan et al. 2017)
averages the gradient of the score along the straight path from the baseline's token vectors
to the input's (midpoint rule, `steps` points) and multiplies it by their difference; summed
over the hidden size, a token's attribution is its share of score(input) - score(baseline),
and the shares add up to that difference (completeness) up to the error of the rule.
"""

import dataclasses
import html

import keras
import numpy as np
import tensorflow as tf

from kmlm.model import find_encoder
from kmlm.tasks.encoding import text_rows, to_dense

BASELINES = ("mask", "pad")


@dataclasses.dataclass
class Attribution:
    """The attributions of one input.

    Attributes:
        text, text_pair: the input.
        tokens: the model's input tokens, [CLS] and [SEP] included (theirs are 0: the
            baseline keeps them).
        scores: float [S], each token's share of `score - baseline_score`.
        label: the target label; `probability` its softmax probability on the input.
        score, baseline_score: the target logit on the input and on the baseline.
        baseline: "mask" or "pad"; steps: points of the path integral.
    """

    text: str
    text_pair: str | None
    tokens: list
    scores: np.ndarray
    label: str
    probability: float
    score: float
    baseline_score: float
    baseline: str
    steps: int

    @property
    def completeness_error(self):
        """sum(scores) - (score - baseline_score): 0 for exact integrated gradients."""
        return float(np.sum(self.scores) - (self.score - self.baseline_score))

    def to_dict(self):
        return {"text": self.text, "text_pair": self.text_pair, "label": self.label, "probability": self.probability,
                "tokens": list(self.tokens), "attributions": [round(float(s), 6) for s in self.scores],
                "score": self.score, "baseline_score": self.baseline_score, "baseline": self.baseline,
                "steps": self.steps, "completeness_error": self.completeness_error}


class Explainer:
    """Integrated-gradients attributions for a fine-tuned classify or pair model.

    Args:
        tasker: a `kmlm.tasks.finetune.Tasker` of a classify or pair model.
        baseline: "mask" or "pad", the token whose vector replaces the input's tokens.
        steps: points of the path integral (more: smaller completeness error).
        batch_size: path points per model call.
    """

    def __init__(self, tasker, baseline="mask", steps=50, batch_size=32):
        if tasker.info.task not in ("classify", "pair"):
            raise ValueError(f"--explain works for classify and pair models; this is a {tasker.info.task} model")
        if baseline not in BASELINES:
            raise ValueError(f"--baseline {baseline!r} is not one of {', '.join(BASELINES)}")
        if int(steps) < 1:
            raise ValueError(f"--ig-steps {steps} must be at least 1")
        self.tasker = tasker
        self.baseline = baseline
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.encoder = find_encoder(tasker.model)
        # The classifier above the encoder (`build_classifier`): pooler -> dropout -> logits.
        self.head = keras.Model(tasker.model.get_layer("pooler").input, tasker.model.output)
        ids = tasker.ids
        self.baseline_id = ids.mask if baseline == "mask" else ids.pad
        self.kept_ids = (ids.cls, ids.sep)
        self._encode = None

    def features(self, text, text_pair=None):
        """The model inputs [1, S] of one example, encoded as in training and `kmlm predict`."""
        if self._encode is None:
            tasker = self.tasker

            # In a graph, as the datasets do (the tokenizer returns ragged rows); one trace
            # per input kind, whatever the text's length.
            @tf.function(reduce_retracing=True)
            def encode(text, text_pair):
                tokens, segments = text_rows(tasker.tokenizer, tasker.ids, text, text_pair, seq_len=tasker.info.seq_len)
                return to_dense(tokens, segments, tasker.ids, tf.reduce_max(tokens.row_lengths()))

            self._encode = encode
        pair = None if text_pair is None else tf.constant([text_pair])
        return {name: value.numpy() for name, value in self._encode(tf.constant([text]), pair).items()}

    def baseline_features(self, features):
        """`features` with every token but [CLS] and [SEP] replaced by the baseline token."""
        token_ids = features["token_ids"]
        kept = np.isin(token_ids, self.kept_ids)
        return {**features, "token_ids": np.where(kept, token_ids, self.baseline_id).astype(np.int32)}

    def _logits(self, features):
        return np.asarray(self.tasker.model(features, training=False), np.float64)[0]

    def _path_gradients(self, features, start, end, target):
        """The mean over the path points of d logit[target] / d token vectors: [S, H]."""
        alphas = (np.arange(self.steps, dtype=np.float32) + 0.5) / self.steps
        total = np.zeros(start.shape, np.float64)
        for first in range(0, self.steps, self.batch_size):
            batch = alphas[first:first + self.batch_size]
            rows = {name: tf.constant(np.repeat(value, len(batch), axis=0)) for name, value in features.items()}
            path = tf.constant(start[None] + batch[:, None, None] * (end - start)[None], tf.float32)
            total += np.asarray(self._gradients(rows, path, tf.constant(target, tf.int32)), np.float64).sum(axis=0)
        return total / self.steps

    @tf.function(reduce_retracing=True)
    def _gradients(self, rows, path, target):
        """d logit[target] / d path for a batch of path points [N, S, H] (one graph: eager
        calls would re-run every op of every block from Python)."""
        with tf.GradientTape() as tape:
            tape.watch(path)
            sequence, _ = self.encoder.encode_with_attention(rows, token_vectors=path)
            logits = self.head(sequence, training=False)
            objective = tf.reduce_sum(tf.gather(tf.cast(logits, tf.float32), target, axis=1))
        return tape.gradient(objective, path)

    def label_index(self, target):
        """The index of the label `target`; one line naming the labels when it is not one."""
        labels = self.tasker.info.labels
        if target not in labels:
            raise ValueError(f"--target {target!r} is not a label of this model; its labels are {', '.join(labels)}")
        return labels.index(target)

    def __call__(self, text, text_pair=None, target=None):
        """The `Attribution` of one text (or pair) for the `target` label (default: the
        predicted one)."""
        labels = self.tasker.info.labels
        features = self.features(text, text_pair)
        logits = self._logits(features)
        index = int(np.argmax(logits)) if target is None else self.label_index(target)
        baseline = self.baseline_features(features)
        embedding = self.encoder.embedding
        start = np.asarray(embedding.token_vectors(baseline["token_ids"]), np.float64)[0]
        end = np.asarray(embedding.token_vectors(features["token_ids"]), np.float64)[0]
        gradients = self._path_gradients(features, start, end, index)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        vocabulary = self.tasker.vocabulary
        return Attribution(
            text=text, text_pair=text_pair, tokens=[vocabulary[i] for i in features["token_ids"][0]],
            scores=((end - start) * gradients).sum(axis=-1), label=labels[index],
            probability=float(probabilities[index]), score=float(logits[index]),
            baseline_score=float(self._logits(baseline)[index]), baseline=self.baseline, steps=self.steps)


def _colour(score, largest):
    """Red for a token that raises the target logit, blue for one that lowers it: (r, g, b, alpha)."""
    strength = min(1.0, abs(score) / largest) if largest > 0 else 0.0
    return (0.84, 0.15, 0.16, strength) if score >= 0 else (0.12, 0.47, 0.71, strength)


def _caption(attribution):
    pair = f" / {attribution.text_pair}" if attribution.text_pair is not None else ""
    return (f"{attribution.label} (p={attribution.probability:.3f}) for: {attribution.text}{pair} | "
            f"sum {np.sum(attribution.scores):+.3f}, logit {attribution.score:+.3f} - baseline "
            f"[{attribution.baseline.upper()}] {attribution.baseline_score:+.3f}")


def highlight_html(attributions):
    """A standalone HTML page: each input's tokens on a background whose red (raises the
    target logit) or blue (lowers it) deepens with the attribution; hover shows the score."""
    blocks = []
    for attribution in attributions:
        largest = float(np.max(np.abs(attribution.scores))) if len(attribution.scores) else 0.0
        spans = []
        for token, score in zip(attribution.tokens, attribution.scores):
            r, g, b, a = _colour(score, largest)
            spans.append(f'<span title="{score:+.4f}" style="background: rgba({int(255 * r)}, {int(255 * g)}, '
                         f'{int(255 * b)}, {a:.2f}); padding: 2px 3px; margin: 1px; border-radius: 3px">'
                         f"{html.escape(token)}</span>")
        blocks.append(f"<p>{html.escape(_caption(attribution))}</p>\n<p style=\"font-size: 1.3em; line-height: 2\">"
                      + " ".join(spans) + "</p>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>kmlm attributions</title></head>\n"
            "<body style=\"font-family: sans-serif\">\n<h3>Integrated-gradients attributions</h3>\n"
            "<p>red: raises the logit of the label, blue: lowers it; hover a token for its score</p>\n"
            + "\n".join(blocks) + "\n</body></html>\n")


def plot_highlight(attributions, path, width=9.0):
    """Draws the tokens of each input on red/blue backgrounds (as `highlight_html`) with
    their scores under them, and writes the picture to `path` as PNG."""
    from kmlm.figures import save_png, token_fonts

    with token_fonts() as plt:
        dpi, line = 110, 0.62  # inches per line of tokens (token above, score below)
        figure = plt.figure(figsize=(width, 1.0), dpi=dpi)
        renderer = figure.canvas.get_renderer()
        placed, y = [], 0.0  # (attribution, token index, x, y) in inches from the top left
        for attribution in attributions:
            y += 0.45
            placed.append((attribution, None, 0.1, y))
            x = 0.1
            y += line
            for i, token in enumerate(attribution.tokens):
                probe = figure.text(0, 0, token, fontsize=13)
                token_width = probe.get_window_extent(renderer).width / dpi + 0.16
                probe.remove()
                if x + token_width > width - 0.1:
                    x, y = 0.1, y + line
                placed.append((attribution, i, x, y))
                x += max(token_width, 0.55)
            y += 0.25
        height = y + 0.2
        figure.set_size_inches(width, height)
        for attribution, i, x, top in placed:
            if i is None:
                figure.text(x / width, 1 - top / height, _caption(attribution), fontsize=9, va="bottom")
                continue
            score = attribution.scores[i]
            largest = float(np.max(np.abs(attribution.scores)))
            figure.text(x / width, 1 - top / height, attribution.tokens[i], fontsize=13, va="bottom",
                        bbox={"facecolor": _colour(score, largest), "edgecolor": "none", "pad": 2})
            figure.text(x / width, 1 - (top + 0.2) / height, f"{score:+.2f}", fontsize=7, va="bottom",
                        color="0.35")
        save_png(figure, path)

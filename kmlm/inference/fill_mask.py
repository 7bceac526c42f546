"""Fill-mask predictions: the top-k tokens for every [MASK] in a text."""

import numpy as np
import tensorflow as tf

from kmlm.pipelines import make_tokenizer, never_predicted, special_ids


class MaskedLMPredictor:
    """What every predictor over a masked-LM model holds: the model, its vocabulary, the
    in-graph tokenizer, the special ids, the longest input and the ids never predicted
    (`kmlm.pipelines.never_predicted`). `FillMask` and `MaskFillingGenerator` build on it."""

    def __init__(self, model, vocabulary, lowercase=True, max_length=512):
        self.model = model
        self.vocabulary = list(vocabulary)
        self.tokenizer = make_tokenizer(self.vocabulary, lowercase=lowercase)
        self.ids = special_ids(self.vocabulary)
        self.max_length = int(max_length)
        self.never_predicted = never_predicted(self.vocabulary)


class FillMask(MaskedLMPredictor):
    """Predicts the tokens behind `[MASK]` with a trained `MaskedLMModel`.

    Special and reserved tokens (`kmlm.pipelines.never_predicted`) are never proposed; scores
    are the softmax over the remaining vocabulary.

    Args:
        model: the masked-LM model.
        vocabulary: the tokens in id order.
        lowercase: whether the tokenizer lowercases (as in training).
        max_length: longest tokenized input accepted, [CLS] and [SEP] included.

    Example:
    >>> import kmlm
    >>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "the", "cat", "sat", "on"]
    >>> config = kmlm.ModelConfig.from_preset("tiny", vocabulary_size=len(vocabulary))
    >>> model = kmlm.build_mlm_model(config)  # untrained: the predictions are random
    >>> fill_mask = FillMask(model, vocabulary, max_length=16)
    >>> sorted(p["token"] for p in fill_mask("the cat [MASK] on", top_k=10)[0]["predictions"])
    ['cat', 'on', 'sat', 'the']
    """

    def __call__(self, text, top_k=5):
        """Returns, for each [MASK] in `text`, a dict with `position` (token index in the
        model input) and `predictions` (top-k dicts of `token`, `id`, `score`)."""
        if top_k < 1:
            raise ValueError(f"--top-k {top_k} must be at least 1")
        pieces = self._pieces(text)
        ids = [self.ids.cls] + pieces + [self.ids.sep]
        positions = [i for i, token in enumerate(ids) if token == self.ids.mask]
        if not positions:
            hint = "the mask token is upper case: " if "[mask]" in text.lower() else ""
            raise ValueError(
                f"text has no [MASK] token: {text!r}; {hint}write [MASK] where a word should be predicted"
            )
        if len(ids) > self.max_length:
            raise ValueError(
                f"text is {len(ids)} tokens long, more than the model's {self.max_length}; shorten it"
            )
        features = {
            "token_ids": tf.constant([ids], tf.int32),
            "segment_ids": tf.zeros((1, len(ids)), tf.int32),
            "document_ids": tf.ones((1, len(ids)), tf.int32),
            "mask_positions": tf.constant([positions], tf.int32),
        }
        logits = self.model(features, training=False).numpy()[0].astype(np.float64)
        logits[:, self.never_predicted] = -np.inf
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        k = min(top_k, int((~self.never_predicted).sum()))
        results = []
        for slot, position in enumerate(positions):
            best = np.argsort(-probabilities[slot], kind="stable")[:k]
            results.append(
                {
                    "position": position,
                    "predictions": [
                        {"token": self.vocabulary[i], "id": int(i), "score": float(probabilities[slot, i])} for i in best
                    ],
                }
            )
        return results

    def _pieces(self, text):
        return text_pieces(self.tokenizer, text)

    def filled_text(self, text, results):
        """The tokenized text with every [MASK] replaced by its top prediction, pieces joined."""
        pieces = self._pieces(text)
        best = iter(result["predictions"][0]["token"] for result in results)
        tokens = [next(best) if i == self.ids.mask else self.vocabulary[i] for i in pieces]
        return join_wordpieces(tokens)


def text_pieces(tokenizer, text):
    """The WordPiece ids of one text (no [CLS]/[SEP]) as a list of ints."""
    tokens = tokenizer.tokenize(tf.constant([text]))
    # Eagerly, keras-hub returns Python lists; inside a graph, a RaggedTensor.
    tokens = tokens.to_list() if hasattr(tokens, "to_list") else tokens
    return [int(i) for i in tokens[0]]


def join_wordpieces(tokens):
    """Joins WordPiece tokens into text: `##` pieces attach to the token before them."""
    words = []
    for token in tokens:
        if token.startswith("##") and words:
            words[-1] += token[2:]
        else:
            words.append(token)
    return " ".join(words)

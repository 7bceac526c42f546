"""Text generation with a masked language model by iterative mask filling.

The seed text is followed by `length` [MASK] tokens (any [MASK] inside the seed is filled
too), and the masks are filled by one of two methods:

- `mask-predict` (Ghazvininejad et al., 2019): predict every mask at once, then for
  iterations t = 1..T-1 re-mask the n = floor(N (T - t) / T) generated tokens the model is
  least confident about and predict them again: a linear schedule from all N to none.
- `gibbs` (Wang and Cho, 2019, "BERT has a mouth, and it must speak"): fill the masks left
  to right one at a time, then for T sweeps visit every generated position in a random
  order, mask it and resample it given all the others. During the first `burn_in` sweeps
  tokens are drawn from the whole distribution (exploration); afterwards from the top-k.

Tokens are drawn from softmax(logits / temperature) restricted to the top-k (temperature 0:
the most likely token). Special and reserved tokens ([CLS], [SEP], [PAD], [UNK], [MASK],
[unused0], ...) are never produced. The same seed gives the same text.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from kmlm.inference.fill_mask import MaskedLMPredictor, join_wordpieces, text_pieces

GENERATION_METHODS = ("mask-predict", "gibbs")
DEFAULT_ITERATIONS = {"mask-predict": 10, "gibbs": 4}


@dataclasses.dataclass
class Generation:
    """A generated text.

    Attributes:
        text: the seed and the generated tokens, WordPiece pieces joined.
        token_ids: the full model input ([CLS] ... [SEP]) after generation.
        positions: the positions in `token_ids` that were generated.
        model_calls: how many forward passes it took.
    """

    text: str
    token_ids: list
    positions: list
    model_calls: int

    def to_dict(self):
        return dataclasses.asdict(self)


class MaskFillingGenerator(MaskedLMPredictor):
    """Generates text with a `MaskedLMModel` by iterative mask filling.

    Args:
        model: the masked-LM model.
        vocabulary: the tokens in id order.
        lowercase: whether the tokenizer lowercases (as in training).
        max_length: longest model input, [CLS] and [SEP] included.

    Example:
    >>> import kmlm
    >>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "the", "cat", "sat", "on"]
    >>> config = kmlm.ModelConfig.from_preset("tiny", vocabulary_size=len(vocabulary))
    >>> model = kmlm.build_mlm_model(config)  # untrained: the predictions are random
    >>> generator = MaskFillingGenerator(model, vocabulary, max_length=16)
    >>> generation = generator.generate("the cat", length=3, method="mask-predict", seed=0)
    >>> generation.positions, generation.text.startswith("the cat "), "[" in generation.text
    ([3, 4, 5], True, False)
    """

    def __init__(self, model, vocabulary, lowercase=True, max_length=512):
        super().__init__(model, vocabulary, lowercase=lowercase, max_length=max_length)
        if self.never_predicted.all():
            raise ValueError("the vocabulary has no ordinary tokens to generate")

        @tf.function(reduce_retracing=True, autograph=False)
        def logits_at(token_ids, positions):
            features = {
                "token_ids": token_ids[None],
                "segment_ids": tf.zeros_like(token_ids)[None],
                "document_ids": tf.ones_like(token_ids)[None],
                "mask_positions": positions[None],
            }
            return tf.cast(self.model(features, training=False)[0], tf.float32)

        self._logits_at = logits_at
        self._calls = 0

    def _logits(self, token_ids, positions):
        self._calls += 1
        logits = self._logits_at(np.asarray(token_ids, np.int32), np.asarray(positions, np.int32)).numpy()
        logits = logits.astype(np.float64)
        logits[:, self.never_predicted] = -np.inf
        return logits

    def _draw(self, logits, rng, top_k, temperature):
        """One token per row of `logits`: (ids, model probability of each id)."""
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        chosen = np.zeros(len(logits), np.int64)
        for row, scores in enumerate(logits):
            if temperature == 0:
                chosen[row] = int(np.argmax(scores))
                continue
            allowed = int((~self.never_predicted).sum())
            k = allowed if not top_k else min(top_k, allowed)
            candidates = np.argsort(-scores, kind="stable")[:k]
            tempered = scores[candidates] / temperature
            weights = np.exp(tempered - tempered.max())
            chosen[row] = candidates[rng.choice(k, p=weights / weights.sum())]
        return chosen, probabilities[np.arange(len(logits)), chosen]

    def generate(self, seed_text, length, method="mask-predict", iterations=None, top_k=10, temperature=1.0,
                 seed=0, burn_in=None):
        """Generates `length` tokens after `seed_text` (and fills any [MASK] in it).

        Args:
            seed_text: the text to continue; may be empty, may contain [MASK].
            length: number of tokens to append.
            method: "mask-predict" or "gibbs".
            iterations: mask-predict: refinement iterations T (default 10); gibbs: sweeps
                over the generated positions (default 4).
            top_k: draw among the k most likely tokens (0: all tokens).
            temperature: softmax temperature; 0 takes the most likely token.
            seed: seed of the random draws.
            burn_in: gibbs only: sweeps drawing from the whole distribution before the
                top-k ones (default: half of `iterations`).

        Returns:
            A `Generation`.
        """
        if method not in GENERATION_METHODS:
            raise ValueError(f"unknown generation method {method!r}; choose one of {', '.join(GENERATION_METHODS)}")
        if not isinstance(length, int) or length < 0:
            raise ValueError(f"--length {length!r} must be a non-negative integer")
        iterations = DEFAULT_ITERATIONS[method] if iterations is None else iterations
        if iterations < 1:
            raise ValueError(f"--iterations {iterations} must be at least 1")
        if top_k < 0:
            raise ValueError(f"--top-k {top_k} must be 0 (all tokens) or more")
        if temperature < 0:
            raise ValueError(f"--temperature {temperature} must be 0 (greedy) or positive")
        burn_in = iterations // 2 if burn_in is None else burn_in
        if not 0 <= burn_in <= iterations:
            raise ValueError(f"--burn-in {burn_in} must be between 0 and --iterations {iterations}")
        pieces = text_pieces(self.tokenizer, seed_text) if seed_text.strip() else []
        token_ids = [self.ids.cls] + pieces + [self.ids.mask] * length + [self.ids.sep]
        if len(token_ids) > self.max_length:
            raise ValueError(
                f"seed text plus --length is {len(token_ids)} tokens, more than the model's {self.max_length}; "
                "shorten the seed or lower --length"
            )
        positions = [i for i, token in enumerate(token_ids) if token == self.ids.mask]
        if not positions:
            raise ValueError("nothing to generate: give --length > 0 or put [MASK] in the seed text")
        rng = np.random.default_rng(seed)
        self._calls = 0
        tokens = np.array(token_ids, np.int64)
        if method == "mask-predict":
            self._mask_predict(tokens, np.array(positions), iterations, rng, top_k, temperature)
        else:
            self._gibbs(tokens, positions, iterations, burn_in, rng, top_k, temperature)
        content = [self.vocabulary[i] for i in tokens[1:-1]]
        return Generation(
            text=join_wordpieces(content),
            token_ids=[int(i) for i in tokens],
            positions=[int(p) for p in positions],
            model_calls=self._calls,
        )

    def _mask_predict(self, tokens, positions, iterations, rng, top_k, temperature):
        n = len(positions)
        confidence = np.zeros(n)
        to_predict = np.arange(n)
        for t in range(iterations):
            if t > 0:
                count = n * (iterations - t) // iterations
                if count == 0:
                    break
                to_predict = np.sort(np.argsort(confidence, kind="stable")[:count])
                tokens[positions[to_predict]] = self.ids.mask
            logits = self._logits(tokens, positions[to_predict])
            chosen, probability = self._draw(logits, rng, top_k, temperature)
            tokens[positions[to_predict]] = chosen
            confidence[to_predict] = probability

    def _gibbs(self, tokens, positions, sweeps, burn_in, rng, top_k, temperature):
        for position in positions:  # initial left-to-right fill
            chosen, _ = self._draw(self._logits(tokens, [position]), rng, 0 if burn_in else top_k, temperature)
            tokens[position] = chosen[0]
        for sweep in range(sweeps):
            k = 0 if sweep < burn_in else top_k
            for position in rng.permutation(positions):
                tokens[position] = self.ids.mask
                chosen, _ = self._draw(self._logits(tokens, [position]), rng, k, temperature)
                tokens[position] = chosen[0]

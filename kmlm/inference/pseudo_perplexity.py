"""Pseudo-log-likelihood scoring of sentences with a masked language model.

A masked LM gives no left-to-right probability of a sentence, but it can score each token
given all the others: mask token i, read log P(w_i | w_without_i), and sum over i (Salazar
et al., 2020, "Masked Language Model Scoring"). The pseudo-perplexity is
`exp(-PLL / N)` over the N scored tokens ([CLS] and [SEP] are context, never scored).
Every masked copy of every sentence goes through the model in fixed-size batches.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from kmlm.inference.fill_mask import text_pieces
from kmlm.pipelines import make_tokenizer, special_ids

# Row lengths are rounded up to a multiple of this, so a file of varied sentences compiles
# the scoring function for a few shapes only.
_LENGTH_BUCKET = 8


@dataclasses.dataclass
class SentenceScore:
    """The pseudo-likelihood of one sentence.

    Attributes:
        text: the sentence.
        tokens: its WordPiece tokens (no [CLS]/[SEP]).
        token_log_probs: log P(token | all other tokens), natural log, one per token.
    """

    text: str
    tokens: list
    token_log_probs: list

    @property
    def pseudo_log_likelihood(self):
        return float(sum(self.token_log_probs))

    @property
    def pseudo_perplexity(self):
        return math.exp(-self.pseudo_log_likelihood / len(self.tokens))

    def to_dict(self):
        return {
            "text": self.text,
            "tokens": self.tokens,
            "token_log_probs": [float(v) for v in self.token_log_probs],
            "pseudo_log_likelihood": self.pseudo_log_likelihood,
            "pseudo_perplexity": self.pseudo_perplexity,
        }


def corpus_pseudo_perplexity(scores):
    """exp(-sum of PLLs / number of scored tokens) over many `SentenceScore`s."""
    tokens = sum(len(score.tokens) for score in scores)
    if tokens == 0:
        raise ValueError("no tokens were scored; give at least one non-empty sentence")
    return math.exp(-sum(score.pseudo_log_likelihood for score in scores) / tokens)


class PseudoLikelihoodScorer:
    """Scores sentences by masking each of their tokens in turn.

    Args:
        model: a `MaskedLMModel` (inputs `token_ids`, `segment_ids`, `document_ids`,
            `mask_positions`; output logits [B, P, V]).
        vocabulary: the tokens in id order.
        lowercase: whether the tokenizer lowercases (as in training).
        max_length: longest tokenized sentence accepted, [CLS] and [SEP] included.
        batch_size: masked copies per model call.

    Example:
    >>> import kmlm
    >>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "the", "cat", "sat", "on"]
    >>> config = kmlm.ModelConfig.from_preset("tiny", vocabulary_size=len(vocabulary))
    >>> model = kmlm.build_mlm_model(config)  # untrained: the predictions are random
    >>> score = PseudoLikelihoodScorer(model, vocabulary, max_length=16).score(["the cat sat on"])[0]
    >>> score.tokens, len(score.token_log_probs), score.pseudo_perplexity > 1
    (['the', 'cat', 'sat', 'on'], 4, True)
    """

    def __init__(self, model, vocabulary, lowercase=True, max_length=512, batch_size=64):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.model = model
        self.vocabulary = list(vocabulary)
        self.tokenizer = make_tokenizer(self.vocabulary, lowercase=lowercase)
        self.ids = special_ids(self.vocabulary)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)

        @tf.function(reduce_retracing=True, autograph=False)
        def target_log_probs(token_ids, document_ids, positions, targets):
            features = {
                "token_ids": token_ids,
                "segment_ids": tf.zeros_like(token_ids),
                "document_ids": document_ids,
                "mask_positions": positions[:, None],
            }
            logits = tf.cast(self.model(features, training=False)[:, 0, :], tf.float32)
            log_probs = tf.nn.log_softmax(logits, axis=-1)
            return tf.gather(log_probs, targets[:, None], batch_dims=1)[:, 0]

        self._target_log_probs = target_log_probs

    def score(self, texts):
        """Returns one `SentenceScore` per text (in order)."""
        rows = []
        for number, text in enumerate(texts, 1):
            pieces = text_pieces(self.tokenizer, text)
            if not pieces:
                raise ValueError(f"sentence {number} ({text!r}) has no tokens to score")
            ids = [self.ids.cls] + pieces + [self.ids.sep]
            if len(ids) > self.max_length:
                raise ValueError(
                    f"sentence {number} is {len(ids)} tokens long, more than the model's {self.max_length}; shorten it"
                )
            rows.append(ids)
        # One masked copy per (sentence, scored position).
        copies = [(s, p) for s, ids in enumerate(rows) for p in range(1, len(ids) - 1)]
        log_probs = np.zeros(len(copies), np.float64)
        for start in range(0, len(copies), self.batch_size):
            chunk = copies[start : start + self.batch_size]
            longest = max(len(rows[s]) for s, _ in chunk)
            width = min(-(-longest // _LENGTH_BUCKET) * _LENGTH_BUCKET, self.max_length)
            # A full batch every time (padding copies are dropped) keeps shapes static.
            token_ids = np.full((self.batch_size, width), self.ids.pad, np.int32)
            document_ids = np.zeros((self.batch_size, width), np.int32)
            positions = np.zeros(self.batch_size, np.int32)
            targets = np.zeros(self.batch_size, np.int32)
            for row, (s, p) in enumerate(chunk):
                ids = rows[s]
                token_ids[row, : len(ids)] = ids
                token_ids[row, p] = self.ids.mask
                document_ids[row, : len(ids)] = 1
                positions[row] = p
                targets[row] = ids[p]
            values = self._target_log_probs(token_ids, document_ids, positions, targets).numpy()
            log_probs[start : start + len(chunk)] = values[: len(chunk)]
        scores, offset = [], 0
        for text, ids in zip(texts, rows):
            n = len(ids) - 2
            scores.append(
                SentenceScore(
                    text=text,
                    tokens=[self.vocabulary[i] for i in ids[1:-1]],
                    token_log_probs=log_probs[offset : offset + n].tolist(),
                )
            )
            offset += n
        return scores

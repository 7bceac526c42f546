"""What each pretraining objective adds to the one job of `kmlm.pretraining.job`.

`--objective mlm` trains the `MaskedLMModel` itself; `mlm+nsp` and `mlm+sop` train it
inside a wrapper with a pooler and a sentence-pair classifier
(`kmlm.pretraining.sentence_pairs`). An objective supplies only what differs between them:
the training batches, the model that `fit` trains and how it is compiled, the held-out
batches seen after every epoch and after training, the heads and files it adds to the run
directory, and the training keys config.json records. The job does everything else.
"""

import dataclasses

from kmlm.pipelines import mlm_dataset, split_documents
from kmlm.pipelines.sentence_pairs import sentence_pair_dataset
from kmlm.pretraining.evaluation import EVAL_SEED, eval_dataset
from kmlm.pretraining.sentence_pairs import (
    build_sentence_pretraining_model,
    compile_for_sentence_pretraining,
    evaluate_next_sentence,
    sentence_head_weights,
)
from kmlm import run_directory as rd
from kmlm.training import compile_for_pretraining


class MaskedLanguageModeling:
    """`--objective mlm`: the masked-LM loss alone, on packed rows of `mlm_dataset`.

    Args:
        settings: The job's `PretrainSettings`.

    Example:
    >>> from kmlm.pretraining.settings import PretrainSettings
    >>> objective = objective_for(PretrainSettings(objective="mlm"))
    >>> objective.name, objective.heads, objective.recorded_keys
    ('mlm', None, ('distribution',))
    """

    name = "mlm"
    # The keys of PretrainSettings, besides the shared ones, that config.json's "training" records.
    recorded_keys = ("distribution",)
    heads = None  # config.json records heads only for runs that have more than the MLM head

    def __init__(self, settings):
        self.settings = settings

    def training_dataset(self, documents, vocabulary, *, batch_size, masking, start_batch=0):
        """Endless training batches, starting at batch `start_batch` of the stream (a resume)."""
        settings = self.settings
        return mlm_dataset(documents, vocabulary, seq_len=settings.seq_len, batch_size=batch_size, masking=masking,
                           lowercase=settings.lowercase, packing=settings.packing, start_batch=start_batch)

    def validation_data(self, data, vocabulary, documents, verbose=0):
        """(dataset, steps) of the held-out batches evaluated after every epoch, or (None, None).

        Args:
            data: The run's `DataRecord`.
            vocabulary: The tokens in id order.
            documents: The whole corpus (train and held-out documents).
            verbose: Whether to print why there is no held-out evaluation.
        """
        if self.settings.eval_batches <= 0:
            return None, None
        # A few fixed held-out batches, cached: every epoch sees the same masks, cheaply.
        batches = eval_dataset(data, vocabulary).take(self.settings.eval_batches).cache()
        steps = sum(1 for _ in batches)
        # Repeated with exactly `steps` per epoch: Keras may keep one validation iterator
        # across epochs (and under tf.distribute a finite one raises at its end).
        return batches.repeat(), steps

    def trainer(self, model):
        """The model that `fit` trains: the `MaskedLMModel` itself."""
        return model

    def compile(self, trainer, **options):
        """Compiles `trainer`; `options` are those of `kmlm.training.compile_for_pretraining`."""
        return compile_for_pretraining(trainer, **options)

    def describe(self, model, length):
        """The line printed before training."""
        settings = self.settings
        return (f"training {settings.preset} ({model.count_params():,} parameters) for {length}, "
                f"{settings.batch_size}x{settings.seq_len} tokens a step, {settings.masking} masking at {settings.mask_rate}")

    def describe_evaluation(self, seconds):
        """The line printed after training, before the held-out evaluation."""
        return "evaluating on the held-out split ..."

    def save_heads(self, out, trainer):
        """Writes the files the objective adds to the run directory `out` (none)."""

    def evaluate(self, trainer):
        """Held-out metrics besides the masked-LM ones (none)."""
        return {}


class SentencePairPrediction(MaskedLanguageModeling):
    """`--objective mlm+nsp|mlm+sop`: the masked-LM loss plus next-sentence (NSP) or
    sentence-order (SOP) prediction on sentence pairs, on one device.

    Example:
    >>> from kmlm.pretraining.settings import PretrainSettings
    >>> objective = objective_for(PretrainSettings(objective="mlm+sop"))
    >>> objective.pair_objective, objective.recorded_keys
    ('sop', ('objective',))
    """

    # A sentence-pair run always runs on one device, so config.json records its objective
    # where an MLM run records its strategy.
    recorded_keys = ("objective",)
    heads = rd.Heads(masked_lm=True, pooler=True, next_sentence=True)

    def __init__(self, settings):
        super().__init__(settings)
        self.name = settings.objective
        self.pair_objective = settings.objective.split("+")[1]
        self.eval_pairs = None

    def training_dataset(self, documents, vocabulary, *, batch_size, masking, start_batch=0):
        return sentence_pair_dataset(documents, vocabulary, masking=masking, start_batch=start_batch,
                                     **self._pair_options(batch_size))

    def validation_data(self, data, vocabulary, documents, verbose=0):
        """As for MLM, on held-out sentence pairs; without any, training goes on without them."""
        settings = self.settings
        eval_masking = dataclasses.replace(settings.masking_config(), seed=EVAL_SEED)
        held_out = split_documents(documents, "eval", settings.eval_fraction)
        try:
            pairs = sentence_pair_dataset(held_out, vocabulary, masking=eval_masking, deterministic_eval=True,
                                          **self._pair_options(settings.batch_size))
            pairs = pairs.take(max(settings.eval_batches, 1)).cache()
            steps = sum(1 for _ in pairs)
        except ValueError as error:
            if verbose:
                print(f"no held-out {self.pair_objective} evaluation: {error}", flush=True)
            return None, None
        self.eval_pairs = pairs  # also scored after training, by `evaluate`
        if settings.eval_batches <= 0:
            return None, None
        return pairs.repeat(), steps

    def _pair_options(self, batch_size):
        settings = self.settings
        return dict(objective=self.pair_objective, seq_len=settings.seq_len, batch_size=batch_size,
                    lowercase=settings.lowercase)

    def trainer(self, model):
        """The `MaskedLMModel` wrapped with a pooler and the pair classifier (sharing its weights)."""
        return build_sentence_pretraining_model(model)

    def compile(self, trainer, **options):
        return compile_for_sentence_pretraining(trainer, **options)

    def describe(self, model, length):
        settings = self.settings
        return (f"training {settings.preset} with masked LM + {self.pair_objective.upper()} for {length}, "
                f"{settings.batch_size}x{settings.seq_len} tokens a step")

    def describe_evaluation(self, seconds):
        return f"trained in {seconds:.0f}s; evaluating on the held-out split ..."

    def save_heads(self, out, trainer):
        """Writes the pooler and the pair classifier to `out`/pooler.safetensors."""
        rd.save_sentence_heads(out, sentence_head_weights(trainer))

    def evaluate(self, trainer):
        """`next_sentence_accuracy` and `pairs` on the held-out pairs, and the objective."""
        if self.eval_pairs is None:
            return {}
        metrics = evaluate_next_sentence(trainer, self.eval_pairs)
        metrics["objective"] = self.settings.objective
        return metrics


def objective_for(settings):
    """The objective of `settings.objective` ("mlm", "mlm+nsp" or "mlm+sop")."""
    settings.validate_objective()
    if settings.objective == "mlm":
        return MaskedLanguageModeling(settings)
    return SentencePairPrediction(settings)

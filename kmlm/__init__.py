"""kmlm: BERT-style masked language modeling for TensorFlow/Keras.

The public API is imported lazily so that `kmlm --help` answers without loading
TensorFlow.

Example:
>>> import kmlm
>>> model = kmlm.build_mlm_model(kmlm.ModelConfig.from_preset("mini", vocabulary_size=8192))
"""

import importlib
import os

# kmlm's layers, pipelines and exports are TensorFlow graphs; pin the Keras backend before
# anything imports keras.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_EXPORTS = {
    "PRESETS": "kmlm.config",
    "ModelConfig": "kmlm.config",
    "Encoder": "kmlm.model",
    "MaskedLMModel": "kmlm.model",
    "build_encoder": "kmlm.model",
    "build_mlm_model": "kmlm.model",
    "compile_for_pretraining": "kmlm.training",
    "set_precision": "kmlm.training",
    "PretrainSettings": "kmlm.pretraining.settings",
    "pretrain": "kmlm.pretraining.job",
    "load_run": "kmlm.run_directory",
    "FillMask": "kmlm.inference.fill_mask",
    "evaluate_masked_lm": "kmlm.pretraining.evaluation",
    "WordVectors": "kmlm.wordvec.vectors",
    "Word2VecSettings": "kmlm.wordvec.word2vec",
    "train_word2vec": "kmlm.wordvec.word2vec",
    "GloveSettings": "kmlm.wordvec.glove",
    "train_glove": "kmlm.wordvec.glove",
    "export_run": "kmlm.serving.masked_lm",
    "convert_checkpoint": "kmlm.interop.huggingface",
    "PseudoLikelihoodScorer": "kmlm.inference.pseudo_perplexity",
    "MaskFillingGenerator": "kmlm.inference.generation",
    "FinetuneSettings": "kmlm.tasks.finetune",
    "finetune": "kmlm.tasks.finetune",
    "Tasker": "kmlm.tasks.finetune",
    "load_sentence_embedder": "kmlm.tasks.embed",
    "export_task": "kmlm.serving.tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kmlm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))

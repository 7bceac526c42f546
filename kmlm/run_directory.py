"""The run directory: everything needed to use a pretrained model later.

```
RUN_DIR/config.json     model, data and training settings
RUN_DIR/vocab.txt       WordPiece vocabulary, one token per line, id order
RUN_DIR/model.keras     the final model (Keras v3 format, loads in safe mode)
RUN_DIR/checkpoints/    weights saved during training
RUN_DIR/backup/         BackupAndRestore state while a run is unfinished
RUN_DIR/metrics.csv     per-epoch training and held-out metrics
RUN_DIR/logs/           TensorBoard logs
RUN_DIR/curves.png      loss / accuracy curves
RUN_DIR/pooler.safetensors  [CLS] pooler and next-sentence/sentence-order classifier, when the
                        run has them (converted checkpoints, `--objective mlm+nsp|mlm+sop`)
```
"""

import dataclasses
import json
import os
import zipfile

import keras

from kmlm.config import ModelConfig
from kmlm.model import MaskedLMModel  # noqa: F401  (registers the classes load_model needs)
from kmlm.training import GlobalClipAdamW  # noqa: F401  (registers the optimizer, for compile=True)
from kmlm.pipelines import load_vocabulary

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoints"
BACKUP_DIR = "backup"
METRICS_FILE = "metrics.csv"
LOG_DIR = "logs"
CURVES_FILE = "curves.png"
POOLER_FILE = "pooler.safetensors"


@dataclasses.dataclass
class Run:
    """A loaded run directory.

    Attributes:
        path: the directory.
        settings: the parsed config.json (keys "model", "data", "training").
        model_config: the `ModelConfig`.
        vocabulary: the tokens in id order.
        model: the final `MaskedLMModel`.
    """

    path: str
    settings: dict
    model_config: ModelConfig
    vocabulary: list
    model: keras.Model

    @property
    def data(self):
        return self.settings.get("data", {})

    @property
    def encoder(self):
        """The `Encoder` of the run (shared with `model`), for fine-tuning and embeddings."""
        return self.model.encoder

    @property
    def pooler_weights(self):
        """(kernel [H, H], bias [H]) of a pretrained [CLS] pooler, or None when the run has none."""
        heads = load_sentence_heads(self.path)
        if "pooler/kernel" not in heads:
            return None
        return heads["pooler/kernel"], heads["pooler/bias"]

    @property
    def has_masked_lm_head(self):
        """False for a converted checkpoint that had no MLM head (its head is untrained)."""
        return bool(self.settings.get("heads", {}).get("masked_lm", True))

    def require_masked_lm_head(self, command):
        """Raises a one-line ValueError when `command` needs an MLM head the run lacks."""
        if not self.has_masked_lm_head:
            raise ValueError(
                f"{self.path!r} has no trained masked-LM head (its checkpoint had none), so `kmlm {command}` "
                "cannot use it; convert a checkpoint with an MLM head (BertForMaskedLM, BertForPreTraining)"
            )


def save_sentence_heads(path, tensors):
    """Writes the pooler / next-sentence tensors (name -> float32 array) to pooler.safetensors."""
    import numpy as np
    from safetensors.numpy import save_file

    target = os.path.join(path, POOLER_FILE)
    save_file({name: np.ascontiguousarray(value, np.float32) for name, value in tensors.items()}, target + ".tmp")
    os.replace(target + ".tmp", target)


def load_sentence_heads(path):
    """The tensors of pooler.safetensors (`pooler/kernel`, `pooler/bias`, `next_sentence/kernel`,
    `next_sentence/bias` when present), or {} when the run has none."""
    target = os.path.join(path, POOLER_FILE)
    if not os.path.isfile(target):
        return {}
    from safetensors.numpy import load_file

    return load_file(target)


def write_settings(path, settings):
    """Writes config.json atomically (temporary file, then rename)."""
    target = os.path.join(path, CONFIG_FILE)
    tmp = target + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, target)


def read_settings(path):
    """Reads config.json of a run directory, with a clear error when it is not one."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"run directory {path!r} does not exist; pass the --out of a `kmlm pretrain` run")
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise ValueError(f"{path!r} is not a kmlm run directory (no {CONFIG_FILE}); pass the --out of a `kmlm pretrain` run")
    with open(config_path, encoding="utf-8") as f:
        try:
            settings = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path!r} is not valid JSON ({error})") from None
    if not isinstance(settings, dict) or "model" not in settings:
        raise ValueError(f"{config_path!r} has no \"model\" section; it was not written by kmlm")
    _check_version(config_path, settings.get("kmlm_version"))
    return settings


def _check_version(config_path, written_by):
    """Refuses a run written by a newer kmlm (older runs stay readable)."""
    from kmlm import __version__

    def release(version):
        try:
            return tuple(int(part) for part in str(version).split(".")[:2])
        except ValueError:
            return None

    if written_by is None:
        return
    theirs, ours = release(written_by), release(__version__)
    if theirs is None or theirs > ours:
        raise ValueError(
            f"{config_path!r} was written by kmlm {written_by}, which this kmlm {__version__} cannot read; "
            f"upgrade kmlm (pip install -U kmlm) or use a run written by kmlm <= {__version__}"
        )


def load_run(path, compile=False):
    """Loads a finished run directory: settings, vocabulary and the final model.

    Example:
    >>> run = load_run("runs/demo")
    >>> run.model_config.hidden_dim
    256
    """
    settings = read_settings(path)
    model_path = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise ValueError(
            f"{path!r} has no {MODEL_FILE}: its training did not finish; re-run the same "
            "`kmlm pretrain` command to resume it"
        )
    vocabulary = load_vocabulary(os.path.join(path, VOCAB_FILE))
    model_config = ModelConfig.from_dict(settings["model"])
    if len(vocabulary) != model_config.vocabulary_size:
        raise ValueError(
            f"{os.path.join(path, VOCAB_FILE)!r} has {len(vocabulary)} tokens but the run's model has "
            f"vocabulary_size={model_config.vocabulary_size}; restore the vocab.txt that the run was trained with"
        )
    model = load_model_safely(model_path, compile=compile)
    return Run(
        path=path,
        settings=settings,
        model_config=model_config,
        vocabulary=vocabulary,
        model=model,
    )


def load_model_safely(model_path, compile=False):
    """Loads a `.keras` file in Keras safe mode: a file that would run Python code on load
    (a `Lambda` layer holding a function) is refused, as is a corrupted file, in one line."""
    corrupted = "it is corrupted or was not written by kmlm: re-run `kmlm pretrain` with --overwrite"
    if not zipfile.is_zipfile(model_path):  # e.g. truncated by a kill during a plain copy
        raise ValueError(f"{model_path!r} is not a readable Keras model (not a complete .keras zip archive); {corrupted}")
    try:
        return keras.saving.load_model(model_path, compile=compile, safe_mode=True)
    except Exception as error:  # zipfile, h5py and Keras each raise their own types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise ValueError(
                f"refused to load {model_path!r}: it holds Python code (a Lambda layer), which safe mode never "
                "runs; kmlm writes no such models, so do not trust this file"
            ) from None
        raise ValueError(f"{model_path!r} is not a readable Keras model ({type(error).__name__}: {first[:200]}); {corrupted}") from None

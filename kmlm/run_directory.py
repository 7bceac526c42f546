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
```
"""

import dataclasses
import json
import os

import keras

from kmlm.config import ModelConfig
from kmlm.model import MaskedLMModel  # noqa: F401  (registers the classes load_model needs)
from kmlm.pipelines import load_vocabulary

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoints"
BACKUP_DIR = "backup"
METRICS_FILE = "metrics.csv"
LOG_DIR = "logs"
CURVES_FILE = "curves.png"


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
        return None


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
    if "model" not in settings:
        raise ValueError(f"{config_path!r} has no \"model\" section; it was not written by kmlm")
    return settings


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
    model = keras.saving.load_model(model_path, compile=compile, safe_mode=True)
    return Run(
        path=path,
        settings=settings,
        model_config=ModelConfig.from_dict(settings["model"]),
        vocabulary=vocabulary,
        model=model,
    )

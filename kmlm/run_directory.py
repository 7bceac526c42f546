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
RUN_DIR/merges.txt      byte-level BPE merges of a converted RoBERTa (config.json "tokenizer")
RUN_DIR/sentencepiece.model  SentencePiece model of a converted ALBERT (config.json "tokenizer")
```

config.json is one `RunConfig`: every writer builds one and every reader gets one from
`load_run(...).config`, so no reader assumes its own defaults for a missing key.
"""

import dataclasses
import json
import os
import zipfile

import keras

from kmlm import __version__
from kmlm.config import ModelConfig
from kmlm.files import read_json, replace_atomically, write_text_atomically
from kmlm.model import MaskedLMModel  # noqa: F401  (registers the classes load_model needs)
from kmlm.training import GlobalClipAdamW  # noqa: F401  (registers the optimizer, for compile=True)
from kmlm.pipelines import load_vocabulary, max_predictions_for
from kmlm.pipelines.tokenizer import TokenizerFiles, register_tokenizer

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoints"
BACKUP_DIR = "backup"
METRICS_FILE = "metrics.csv"
LOG_DIR = "logs"
CURVES_FILE = "curves.png"
POOLER_FILE = "pooler.safetensors"
# The files of each tokenizer kind besides vocab.txt.
TOKENIZER_FILES = {"byte_bpe": "merges.txt", "sentencepiece": "sentencepiece.model"}


def _check_keys(values, record, section, source):
    """Refuses keys that `record` (a dataclass) has no field for, naming them and the valid ones."""
    if not isinstance(values, dict):
        raise ValueError(f"{source} has a {section} section that is not an object: {values!r}")
    known = {field.name for field in dataclasses.fields(record)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source} has unknown {section} settings {unknown}; valid: {sorted(known)}")


@dataclasses.dataclass
class DataRecord:
    """How a run read and masked its text: the "data" section of config.json.

    A key missing from an older config.json takes the value kmlm has always assumed for it
    (lowercase text, rows of 128 tokens, BERT token masking at 0.15, ...); `max_predictions`
    defaults to what `seq_len` and `mask_rate` give. `vocab_method` is None when the run did
    not learn its vocabulary (a converted checkpoint), and is then left out of config.json.

    Example:
    >>> data = DataRecord.from_dict({"seq_len": 64})
    >>> data.lowercase, data.mask_rate, data.max_predictions
    (True, 0.15, 16)
    """

    corpus: str | None = None
    one_per_line: bool = False
    seq_len: int = 128
    batch_size: int = 32
    masking: str = "token"
    mask_rate: float = 0.15
    mask_token_rate: float = 0.8
    random_token_rate: float = 0.1
    lowercase: bool = True
    packing: bool = True
    eval_fraction: float = 0.02
    max_predictions: int | None = None
    vocab_method: str | None = None
    segmenter: str | None = None

    def __post_init__(self):
        if self.max_predictions is None:
            self.max_predictions = max_predictions_for(self.seq_len, self.mask_rate)

    @classmethod
    def from_dict(cls, values, source="the run config"):
        """Reads a "data" section; an unknown key is refused (ValueError naming it)."""
        _check_keys(values, cls, "data", source)
        return cls(**values)

    def to_dict(self):
        values = dataclasses.asdict(self)
        if self.vocab_method is None:
            del values["vocab_method"]
        if self.segmenter is None:  # a run without one reads as before
            del values["segmenter"]
        return values


@dataclasses.dataclass
class Heads:
    """Which trained heads a run's weights hold: the "heads" section of config.json.

    Converted checkpoints and sentence-pair pretraining write it; a run without one holds a
    trained masked-LM head and no pooler (`RunConfig.heads` is None).

    Example:
    >>> Heads.from_dict({"masked_lm": False, "pooler": True, "next_sentence": False}).pooler
    True
    """

    masked_lm: bool = True
    pooler: bool = False
    next_sentence: bool = False

    @classmethod
    def from_dict(cls, values, source="the run config"):
        """Reads a "heads" section; an unknown key is refused (ValueError naming it)."""
        _check_keys(values, cls, "heads", source)
        return cls(**values)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TokenizerRecord:
    """A tokenizer other than WordPiece: the "tokenizer" section of config.json, written by
    `kmlm convert` for RoBERTa (byte_bpe, with merges.txt) and ALBERT (sentencepiece, with
    sentencepiece.model). A run without one tokenizes with WordPiece over vocab.txt.

    `special_tokens` maps kmlm's names of the specials in vocab.txt to the checkpoint's own
    ("[CLS]": "<s>"), so an export can give them back.

    Example:
    >>> TokenizerRecord.from_dict({"kind": "byte_bpe"}).special_tokens
    {}
    """

    kind: str
    strip_accents: bool = False
    special_tokens: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, values, source="the run config"):
        """Reads a "tokenizer" section; an unknown key or kind is refused (ValueError naming it)."""
        _check_keys(values, cls, "tokenizer", source)
        if values.get("kind") not in TOKENIZER_FILES:
            raise ValueError(f"{source} has an unknown tokenizer kind {values.get('kind')!r}; valid: "
                             f"{sorted(TOKENIZER_FILES)}")
        return cls(**values)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RunConfig:
    """A run's config.json: model, data, training record, heads and provenance.

    `to_dict()` gives the JSON that config.json holds and `from_dict()` reads it back, so
    `RunConfig.from_dict(config.to_dict()) == config`; a config.json written by any earlier
    kmlm reads too. Keys: "model" (required, a `ModelConfig`), "data" (a `DataRecord`; missing
    keys take its defaults), "training" (how the weights were trained, kept as written: kmlm
    reads nothing from it; {} for a converted checkpoint), "heads" (a `Heads`, only where
    written), "converted_from" (where a converted checkpoint came from) and "kmlm_version".
    An unknown key, in any section except "training" and "converted_from", is refused with a
    ValueError that names it: kmlm never writes one, so it is a typing mistake to report.

    Example:
    >>> config = RunConfig(ModelConfig.from_preset("tiny", vocabulary_size=100), DataRecord(seq_len=64))
    >>> RunConfig.from_dict(config.to_dict()) == config
    True
    >>> sorted(config.to_dict())
    ['data', 'kmlm_version', 'model', 'training']
    """

    model: ModelConfig
    data: DataRecord = dataclasses.field(default_factory=DataRecord)
    training: dict = dataclasses.field(default_factory=dict)
    heads: Heads | None = None
    converted_from: dict | None = None
    kmlm_version: str | None = __version__
    tokenizer: TokenizerRecord | None = None

    @property
    def has_masked_lm_head(self):
        """False for a converted checkpoint that had no MLM head (its head is untrained)."""
        return self.heads is None or bool(self.heads.masked_lm)

    @classmethod
    def from_dict(cls, values, source="the run config"):
        """Reads the dict of a config.json; `source` names it in errors.

        It does not check `kmlm_version` (`read` does, before this).
        """
        if not isinstance(values, dict) or "model" not in values:
            raise ValueError(f"{source} has no \"model\" section; it was not written by kmlm")
        _check_keys(values, cls, "top-level", source)
        training = values.get("training", {})
        if not isinstance(training, dict):
            raise ValueError(f"{source} has a training section that is not an object: {training!r}")
        heads = values.get("heads")
        return cls(
            model=ModelConfig.from_dict(values["model"]),
            data=DataRecord.from_dict(values.get("data", {}), source),
            training=dict(training),
            heads=None if heads is None else Heads.from_dict(heads, source),
            converted_from=values.get("converted_from"),
            kmlm_version=values.get("kmlm_version"),
            tokenizer=None if values.get("tokenizer") is None else TokenizerRecord.from_dict(values["tokenizer"], source),
        )

    def to_dict(self):
        values = {"model": self.model.to_dict(), "data": self.data.to_dict(), "training": dict(self.training)}
        if self.heads is not None:
            values["heads"] = self.heads.to_dict()
        if self.converted_from is not None:
            values["converted_from"] = self.converted_from
        if self.kmlm_version is not None:
            values["kmlm_version"] = self.kmlm_version
        if self.tokenizer is not None:
            values["tokenizer"] = self.tokenizer.to_dict()
        return values

    def differences(self, other):
        """The settings that differ between this record and `other`, as "section.key: this vs
        other" lines, sorted; the kmlm version that wrote each is not a setting and is left out.

        Example:
        >>> first = RunConfig.from_dict({"model": {"vocabulary_size": 100}, "data": {"mask_rate": 0.15}})
        >>> second = RunConfig.from_dict({"model": {"vocabulary_size": 100}, "data": {"mask_rate": 0.3}})
        >>> first.differences(second)
        ['data.mask_rate: 0.15 vs 0.3', 'data.max_predictions: 24 vs 40']
        """
        mine, theirs = _flat(self.to_dict()), _flat(other.to_dict())
        missing = object()
        return sorted(
            f"{key}: {mine.get(key)!r} vs {theirs.get(key)!r}"
            for key in set(mine) | set(theirs)
            if key != "kmlm_version" and mine.get(key, missing) != theirs.get(key, missing)
        )

    def write(self, path):
        """Writes `path`/config.json atomically (sorted keys, two-space indents)."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        write_text_atomically(os.path.join(path, CONFIG_FILE), text)

    @classmethod
    def read(cls, path):
        """Reads config.json of the run directory `path`, with one clear line when it is not one
        or was written by a newer kmlm."""
        if not os.path.isdir(path):
            raise FileNotFoundError(f"run directory {path!r} does not exist; pass the --out of a `kmlm pretrain` run")
        config_path = os.path.join(path, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise ValueError(f"{path!r} is not a kmlm run directory (no {CONFIG_FILE}); pass the --out of a `kmlm pretrain` run")
        values = read_json(config_path)
        if isinstance(values, dict):
            _check_version(config_path, values.get("kmlm_version"))
        return cls.from_dict(values, repr(config_path))


@dataclasses.dataclass
class Run:
    """A loaded run directory.

    Attributes:
        path: the directory.
        config: its config.json, a `RunConfig`.
        vocabulary: the tokens in id order.
        model: the final `MaskedLMModel`.
    """

    path: str
    config: RunConfig
    vocabulary: list
    model: keras.Model

    @property
    def model_config(self):
        """The `ModelConfig` of the run."""
        return self.config.model

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
        return self.config.has_masked_lm_head

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

    arrays = {name: np.ascontiguousarray(value, np.float32) for name, value in tensors.items()}
    replace_atomically(os.path.join(path, POOLER_FILE), lambda tmp: save_file(arrays, tmp))


def load_sentence_heads(path):
    """The tensors of pooler.safetensors (`pooler/kernel`, `pooler/bias`, `next_sentence/kernel`,
    `next_sentence/bias` when present), or {} when the run has none."""
    target = os.path.join(path, POOLER_FILE)
    if not os.path.isfile(target):
        return {}
    from safetensors.numpy import load_file

    return load_file(target)


def _check_version(config_path, written_by):
    """Refuses a run written by a newer kmlm (older runs stay readable)."""

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
    """Loads a finished run directory: config.json, vocabulary and the final model.

    Example (needs a trained run directory, so not run here):
    >>> run = load_run("runs/demo")  # doctest: +SKIP
    >>> run.model_config.hidden_dim, run.config.data.seq_len  # doctest: +SKIP
    (256, 128)
    """
    config = RunConfig.read(path)
    model_path = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise ValueError(
            f"{path!r} has no {MODEL_FILE}: its training did not finish; re-run the same "
            "`kmlm pretrain` command to resume it"
        )
    vocabulary = load_vocabulary(os.path.join(path, VOCAB_FILE))
    model_config = config.model
    if len(vocabulary) != model_config.vocabulary_size:
        raise ValueError(
            f"{os.path.join(path, VOCAB_FILE)!r} has {len(vocabulary)} tokens but the run's model has "
            f"vocabulary_size={model_config.vocabulary_size}; restore the vocab.txt that the run was trained with"
        )
    if config.tokenizer is not None:
        register_tokenizer(vocabulary, read_tokenizer_files(path, config))
    model = load_model_safely(model_path, compile=compile)
    return Run(path=path, config=config, vocabulary=vocabulary, model=model)


def read_tokenizer_files(path, config):
    """The `TokenizerFiles` of the run directory `path` whose config.json names a tokenizer."""
    record = config.tokenizer
    target = os.path.join(path, TOKENIZER_FILES[record.kind])
    if not os.path.isfile(target):
        raise ValueError(f"{path!r} has no {TOKENIZER_FILES[record.kind]}, which its {record.kind} tokenizer needs; "
                         "convert the checkpoint again")
    if record.kind == "byte_bpe":
        with open(target, encoding="utf-8") as f:
            merges = tuple(line.rstrip("\r\n") for line in f if line.strip() and not line.startswith("#version"))
        return TokenizerFiles(kind="byte_bpe", merges=merges)
    with open(target, "rb") as f:
        model = f.read()
    return TokenizerFiles(kind="sentencepiece", model=model, lowercase=config.data.lowercase,
                          strip_accents=record.strip_accents)


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


def _flat(values, prefix=""):
    """{"data": {"seq_len": 128}} -> {"data.seq_len": 128}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat

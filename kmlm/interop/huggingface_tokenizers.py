"""The tokenizer of a Hugging Face checkpoint directory, read as a kmlm vocabulary, and the
files that give it back (`read_tokenizer` for `kmlm convert`, `tokenizer_files` for
`kmlm export --format huggingface`).

| files | kind | kmlm run directory |
|---|---|---|
| `vocab.txt` (+ `tokenizer_config.json`) | WordPiece (BERT, DistilBERT) | `vocab.txt` |
| `vocab.json` + `merges.txt`, or `tokenizer.json` | byte-level BPE (RoBERTa) | `vocab.txt`, `merges.txt` |
| `spiece.model` (or another `*.model`) | SentencePiece (ALBERT) | `vocab.txt`, `sentencepiece.model` |

The special tokens take kmlm's names in vocab.txt (`<s>` is `[CLS]`, `<pad>` is `[PAD]`, ...)
at the checkpoint's ids, so everything that reads a kmlm vocabulary (fill-mask's `[MASK]`,
never-predicted tokens, packing) works unchanged; config.json's "tokenizer" section keeps
the original names, which an export writes back (vocab.json, tokenizer_config.json), so
`AutoTokenizer.from_pretrained` of an exported directory gives the checkpoint's ids.
"""

import dataclasses
import glob
import json
import os

from kmlm.files import read_json
from kmlm.pipelines import check_vocabulary, load_vocabulary
from kmlm.run_directory import TOKENIZER_FILES, TokenizerRecord

# The layouts each tokenizer kind is exported in (WordPiece: every other layout).
EXPORT_LAYOUTS = {"byte_bpe": ("roberta",), "sentencepiece": ("albert",)}
# kmlm special token -> tokenizer_config.json key and its default per kind.
SPECIAL_DEFAULTS = {
    "byte_bpe": {"[PAD]": ("pad_token", "<pad>"), "[UNK]": ("unk_token", "<unk>"), "[CLS]": ("cls_token", "<s>"),
                 "[SEP]": ("sep_token", "</s>"), "[MASK]": ("mask_token", "<mask>")},
    "sentencepiece": {"[PAD]": ("pad_token", "<pad>"), "[UNK]": ("unk_token", "<unk>"),
                      "[CLS]": ("cls_token", "[CLS]"), "[SEP]": ("sep_token", "[SEP]"),
                      "[MASK]": ("mask_token", "[MASK]")},
}


@dataclasses.dataclass
class ConvertedTokenizer:
    """A checkpoint's tokenizer in kmlm's terms.

    Attributes:
        vocabulary: the tokens in id order, specials under kmlm's names.
        lowercase: the run's `data.lowercase`.
        record: config.json's "tokenizer" section, or None for WordPiece.
        files: file name -> bytes to write into the run directory besides vocab.txt.
    """

    vocabulary: list
    lowercase: bool
    record: TokenizerRecord | None = None
    files: dict = dataclasses.field(default_factory=dict)


def _tokenizer_config(hf_dir):
    path = os.path.join(hf_dir, "tokenizer_config.json")
    return read_json(path) if os.path.isfile(path) else {}


def _special_names(settings, kind):
    """kmlm name -> the checkpoint's name of each special token."""
    names = {}
    for kmlm_name, (key, default) in SPECIAL_DEFAULTS[kind].items():
        value = settings.get(key, default)
        names[kmlm_name] = value.get("content", default) if isinstance(value, dict) else str(value)
    return names


def _renamed(pieces, names, origin):
    """`pieces` with each special token under its kmlm name; refuses a missing one."""
    index = {piece: i for i, piece in enumerate(pieces)}
    vocabulary = list(pieces)
    for kmlm_name, name in names.items():
        if name not in index:
            raise ValueError(f"{origin} has no {name!r} token, which kmlm uses as {kmlm_name}")
        vocabulary[index[name]] = kmlm_name
    check_vocabulary(vocabulary, origin)  # refuses a kmlm name held by an ordinary token too (repeated)
    return vocabulary


def _wordpiece(hf_dir):
    vocabulary = load_vocabulary(os.path.join(hf_dir, "vocab.txt"))
    lowercase = True
    settings = _tokenizer_config(hf_dir)
    if settings:
        lowercase = bool(settings.get("do_lower_case", True))
        strip_accents = settings.get("strip_accents")
        if strip_accents is not None and bool(strip_accents) != lowercase:
            raise ValueError(
                f"unsupported tokenizer: do_lower_case={lowercase} with strip_accents={strip_accents}; "
                "kmlm's tokenizer strips accents exactly when it lowercases"
            )
    return ConvertedTokenizer(vocabulary, lowercase)


def _byte_bpe(hf_dir):
    settings = _tokenizer_config(hf_dir)
    vocab_json, merges_txt = os.path.join(hf_dir, "vocab.json"), os.path.join(hf_dir, "merges.txt")
    if os.path.isfile(vocab_json) and os.path.isfile(merges_txt):
        ids = read_json(vocab_json)
        with open(merges_txt, encoding="utf-8") as f:
            merges = [line.rstrip("\r\n") for line in f if line.strip() and not line.startswith("#version")]
        origin = f"{vocab_json!r}"
    else:
        model = read_json(os.path.join(hf_dir, "tokenizer.json"))["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"{hf_dir!r}: tokenizer.json holds a {model.get('type')} model, not byte-level BPE")
        ids, merges = model["vocab"], [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        origin = f"{os.path.join(hf_dir, 'tokenizer.json')!r}"
    if settings.get("add_prefix_space"):
        raise ValueError("unsupported tokenizer: add_prefix_space=True; kmlm's byte-level BPE adds no prefix space")
    pieces = [None] * len(ids)
    for piece, i in ids.items():
        if not 0 <= int(i) < len(ids) or pieces[int(i)] is not None:
            raise ValueError(f"{origin} does not number its tokens 0..{len(ids) - 1} once each (id {i})")
        pieces[int(i)] = piece
    names = _special_names(settings, "byte_bpe")
    vocabulary = _renamed(pieces, names, origin)
    record = TokenizerRecord(kind="byte_bpe", special_tokens=names)
    return ConvertedTokenizer(vocabulary, False, record, {TOKENIZER_FILES["byte_bpe"]: "\n".join(merges).encode() + b"\n"})


def _sentencepiece_model(hf_dir):
    named = [os.path.join(hf_dir, "spiece.model"), os.path.join(hf_dir, "sentencepiece.model")]
    found = [p for p in named if os.path.isfile(p)] or sorted(glob.glob(os.path.join(hf_dir, "*.model")))
    return found[0] if found else None


def _sentencepiece(hf_dir, path):
    import tensorflow as tf
    import tensorflow_text as tf_text

    with open(path, "rb") as f:
        model = f.read()
    try:
        reader = tf_text.SentencepieceTokenizer(model=model)
        size = int(reader.vocab_size())
        pieces = [p.decode("utf-8") for p in reader.id_to_string(tf.range(size)).numpy()]
    except Exception as error:  # TF raises its own error types for a damaged proto
        raise ValueError(f"{path!r} is not a readable SentencePiece model ({type(error).__name__})") from None
    settings = _tokenizer_config(hf_dir)
    names = _special_names(settings, "sentencepiece")
    vocabulary = _renamed(pieces, names, repr(path))
    lowercase = bool(settings.get("do_lower_case", True))
    record = TokenizerRecord(kind="sentencepiece", strip_accents=not settings.get("keep_accents", False),
                             special_tokens=names)
    return ConvertedTokenizer(vocabulary, lowercase, record, {TOKENIZER_FILES["sentencepiece"]: model})


def read_tokenizer(hf_dir, model_type):
    """The `ConvertedTokenizer` of the Hugging Face directory `hf_dir`.

    Raises:
        FileNotFoundError: when no tokenizer file the family uses is there.
        ValueError: for a tokenizer kmlm cannot reproduce.
    """
    if model_type == "roberta":
        if os.path.isfile(os.path.join(hf_dir, "vocab.json")) or os.path.isfile(os.path.join(hf_dir, "tokenizer.json")):
            return _byte_bpe(hf_dir)
        raise FileNotFoundError(f"{hf_dir!r} has neither vocab.json + merges.txt nor tokenizer.json; kmlm needs the "
                                "byte-level BPE files of a RoBERTa checkpoint")
    if model_type == "albert":
        path = _sentencepiece_model(hf_dir)
        if path is None:
            raise FileNotFoundError(f"{hf_dir!r} has no spiece.model; kmlm needs the SentencePiece model of an "
                                    "ALBERT checkpoint")
        return _sentencepiece(hf_dir, path)
    if not os.path.isfile(os.path.join(hf_dir, "vocab.txt")):
        bpe = " (it has vocab.json: a byte-level BPE tokenizer, which kmlm reads for roberta checkpoints only)" \
            if os.path.isfile(os.path.join(hf_dir, "vocab.json")) else ""
        raise FileNotFoundError(f"{hf_dir!r} has no vocab.txt{bpe}; kmlm needs the WordPiece vocabulary file")
    return _wordpiece(hf_dir)


def wordpiece_settings(lowercase, max_length):
    """tokenizer_config.json of a WordPiece vocabulary: BERT's tokenizer over vocab.txt, as kmlm's
    tokenizer splits text (lowercasing and stripping accents together, every CJK character its
    own word)."""
    return {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": bool(lowercase),
        "strip_accents": None,  # follows do_lower_case, as kmlm's does
        "tokenize_chinese_chars": True,
        "model_max_length": int(max_length),
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }


def _special_settings(record):
    """tokenizer_config.json's special-token entries: the checkpoint's own names (`record`),
    [CLS] and [SEP] as its bos and eos too, as RoBERTa and ALBERT use them."""
    names = {kmlm_name: record.special_tokens.get(kmlm_name, default)
             for kmlm_name, (_, default) in SPECIAL_DEFAULTS[record.kind].items()}
    settings = {key: names[kmlm_name] for kmlm_name, (key, _) in SPECIAL_DEFAULTS[record.kind].items()}
    settings.update(bos_token=names["[CLS]"], eos_token=names["[SEP]"])
    return names, settings


def _read_run_file(run_dir, kind):
    with open(os.path.join(run_dir, TOKENIZER_FILES[kind]), "rb") as f:
        return f.read()


def tokenizer_files(run_dir, vocabulary, lowercase, record, max_length):
    """The Hugging Face tokenizer files {name: text or bytes} of a run's tokenizer, the inverse of
    `read_tokenizer`: vocab.txt (WordPiece), vocab.json + merges.txt (byte-level BPE) or
    spiece.model (SentencePiece), each with its tokenizer_config.json.

    Example:
    >>> from kmlm.pipelines import SPECIAL_TOKENS
    >>> sorted(tokenizer_files("unused", list(SPECIAL_TOKENS), True, None, 128))
    ['tokenizer_config.json', 'vocab.txt']
    """
    if record is None:
        return {"vocab.txt": "".join(token + "\n" for token in vocabulary),
                "tokenizer_config.json": _json(wordpiece_settings(lowercase, max_length))}
    names, specials = _special_settings(record)
    stored = _read_run_file(run_dir, record.kind)
    if record.kind == "byte_bpe":
        pieces = {names.get(token, token): i for i, token in enumerate(vocabulary)}
        settings = {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": False, "errors": "replace",
                    "model_max_length": int(max_length), **specials}
        # merges.txt as transformers and tokenizers write it, with its version line.
        return {"vocab.json": _json(pieces), "merges.txt": "#version: 0.2\n" + stored.decode("utf-8"),
                "tokenizer_config.json": _json(settings)}
    settings = {"tokenizer_class": "AlbertTokenizer", "do_lower_case": bool(lowercase),
                "keep_accents": not record.strip_accents, "remove_space": True, "model_max_length": int(max_length),
                **specials}
    return {"spiece.model": stored, "tokenizer_config.json": _json(settings)}


def _json(values):
    return json.dumps(values, indent=2, ensure_ascii=False) + "\n"

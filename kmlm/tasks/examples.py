"""Labelled examples for fine-tuning, from JSONL/CSV/TSV files or TensorFlow Datasets.

File fields (one JSON object per line, or a CSV/TSV header row):

| task | fields |
|---|---|
| classify | `text`, `label` |
| pair | `text`, `text_pair`, `label` |
| tag | `tokens`, `tags` (lists; in CSV/TSV space-separated strings) |
| similarity | `text`, `text_pair`, `label` (a similarity score; optional with contrastive training) |
| qa | `question`, `context`, `answers` (`{"text": [...], "answer_start": [...]}` or a list of `{"text", "answer_start"}`; empty, or `is_impossible` true, for no answer) |

For qa a `.json` file may also be a SQuAD file (v1.1 or v2.0: `{"data": [{"paragraphs": [{"context",
"qas": [{"question", "answers", "is_impossible"}]}]}]}`); `answer_start` counts characters.

TFDS sources are `tfds:NAME[/CONFIG][:SPLIT]` (e.g. `tfds:imdb_reviews:test`,
`tfds:glue/sst2:validation`, `tfds:conll2003`); the usual feature names are recognised
(`sentence`, `sentence1`/`sentence2`, `tokens`/`ner`, ...) and class labels keep their names;
`tfds:squad` (v1.1) and `tfds:squad/v2.0` give qa examples.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

TASKS = ("classify", "pair", "tag", "similarity", "qa")

_TEXT_FIELDS = ("text", "sentence", "sentence1", "question", "premise", "question1")
_PAIR_FIELDS = ("text_pair", "sentence2", "hypothesis", "question2")
_LABEL_FIELDS = ("label", "score")
_TAG_FIELDS = ("tags", "ner", "ner_tags")


@dataclasses.dataclass
class TaskExamples:
    """Examples of one task, in file order.

    Attributes:
        task: one of `TASKS`.
        texts: first texts (classify, pair, similarity).
        text_pairs: second texts (pair, similarity).
        labels: class names (classify, pair) or float scores (similarity); None when absent.
        tokens: words per sentence (tag).
        tags: BIO tags per word (tag).
        answers: gold answers per question (qa; `texts` are the questions, `text_pairs` the
            contexts): lists of {"text", "answer_start"}, empty for an unanswerable question.
    """

    task: str
    texts: list = dataclasses.field(default_factory=list)
    text_pairs: list | None = None
    labels: list | None = None
    tokens: list = dataclasses.field(default_factory=list)
    tags: list = dataclasses.field(default_factory=list)
    answers: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.tokens) if self.task == "tag" else len(self.texts)

    def label_names(self):
        """The sorted distinct labels (classification) or tags (tagging)."""
        if self.task == "tag":
            return sorted({tag for row in self.tags for tag in row})
        return sorted(set(self.labels or []), key=_label_sort_key)

    def take(self, count):
        """The first `count` examples."""
        def cut(values):
            return None if values is None else values[:count]
        return TaskExamples(self.task, self.texts[:count], cut(self.text_pairs), cut(self.labels),
                            self.tokens[:count], self.tags[:count], self.answers[:count])


def _label_sort_key(label):
    return (0, int(label), "") if str(label).lstrip("-").isdigit() else (1, 0, str(label))


def load_task_examples(source: str, task: str, *, tfds_data_dir: str | None = None) -> TaskExamples:
    """Reads the examples of `task` from a .jsonl/.json/.csv/.tsv file or a TFDS source.

    Raises:
        ValueError: on an unknown task, a missing field, or an empty source.
        FileNotFoundError: when the file does not exist or a TFDS dataset is not prepared.

    Example:
    (Needs a `train.jsonl` file, so not run as a test.)
    >>> examples = load_task_examples("train.jsonl", "classify")  # doctest: +SKIP
    >>> examples.texts[0], examples.labels[0]  # doctest: +SKIP
    ('a fine film', 'positive')
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if source.startswith("tfds:"):
        rows, class_names = _tfds_rows(source, tfds_data_dir)
    else:
        rows, class_names = _file_rows(source), {}
    examples = _examples_from_rows(rows, task, source, class_names)
    if len(examples) == 0:
        raise ValueError(f"{source!r} has no examples")
    return examples


def _file_rows(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"examples file {path!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"examples source {path!r} is a directory; pass a .jsonl, .csv or .tsv file")
    suffix = os.path.splitext(path)[1].lower()
    # utf-8-sig: spreadsheet tools start CSV files with a byte-order mark.
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            return [dict(row) for row in reader]
        if suffix == ".json":
            squad = _squad_rows(f.read(), path)
            if squad is not None:
                return squad
            f.seek(0)
        if suffix not in (".jsonl", ".json", ".ndjson"):
            raise ValueError(f"examples file {path!r} has an unknown format; use .jsonl (one JSON object per "
                             "line), .csv or .tsv with a header row")
        rows = []
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path!r} line {number} is not a JSON object ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path!r} line {number} is not a JSON object")
            rows.append(row)
        return rows


def _squad_rows(text, path):
    """The question rows of a SQuAD-format JSON document, or None when `text` is not one
    (then it is read as JSON lines)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        return None
    rows = []
    for article in document["data"]:
        for paragraph in article.get("paragraphs", []):
            if "context" not in paragraph:
                raise ValueError(f"{path!r} has a SQuAD paragraph without a 'context'")
            for qa in paragraph.get("qas", []):
                rows.append({"question": qa.get("question", ""), "context": paragraph["context"],
                             "answers": [] if qa.get("is_impossible") else qa.get("answers", [])})
    return rows


def _tfds_rows(source, data_dir):
    import tensorflow_datasets as tfds

    fields = source[len("tfds:"):].split(":")
    if len(fields) > 2 or not fields[0]:
        raise ValueError(f"examples source {source!r} is not of the form tfds:NAME[/CONFIG][:SPLIT], "
                         "e.g. tfds:glue/sst2:validation")
    name, split = fields[0], fields[1] if len(fields) > 1 and fields[1] else "train"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"tfds dataset {name!r} (from {source!r}) is not known to tensorflow-datasets") from None
    try:
        dataset = tfds.load(name, split=split, download=False, data_dir=data_dir)
    except AssertionError:
        raise FileNotFoundError(
            f"tfds dataset {name!r} is not prepared and kmlm never downloads; prepare it once with "
            f"`tfds build {name}` or set TFDS_DATA_DIR"
        ) from None
    except ValueError as error:
        raise ValueError(f"tfds dataset {name!r} cannot read split {split!r} ({str(error).splitlines()[0]})") from None
    class_names = {}
    for key, feature in builder.info.features.items():
        inner = getattr(feature, "feature", feature)  # Sequence(ClassLabel) -> ClassLabel
        if isinstance(inner, tfds.features.ClassLabel):
            class_names[key] = list(inner.names)
    rows = []
    for example in dataset.as_numpy_iterator():
        rows.append({key: _python_value(value) for key, value in example.items()})
    return rows, class_names


def _python_value(value):
    if isinstance(value, dict):  # a Sequence of features, e.g. SQuAD's answers
        return {key: _python_value(inner) for key, inner in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in value]
    return value


def _field(row, names, source, required, task):
    for name in names:
        if name in row and row[name] is not None and row[name] != "":
            return name
    if required:
        raise ValueError(f"{source!r} has no {names[0]!r} field (nor {', '.join(names[1:])}), which task "
                         f"{task!r} needs; its fields are: {', '.join(sorted(row))}")
    return None


def _examples_from_rows(rows, task, source, class_names):
    examples = TaskExamples(task)
    if not rows:
        return examples
    first = rows[0]
    if task == "qa":
        return _qa_examples(rows, source)
    if task == "tag":
        tokens_field = _field(first, ("tokens", "words"), source, True, task)
        tags_field = _field(first, _TAG_FIELDS, source, True, task)
        names = class_names.get(tags_field)
        for number, row in enumerate(rows, 1):
            tokens, tags = _as_list(row[tokens_field]), _as_list(row[tags_field])
            if names is not None:
                tags = [names[int(t)] for t in tags]
            if len(tokens) != len(tags):
                raise ValueError(f"{source!r} example {number} has {len(tokens)} tokens but {len(tags)} tags")
            examples.tokens.append([str(t) for t in tokens])
            examples.tags.append([str(t) for t in tags])
        return examples
    text_field = _field(first, _TEXT_FIELDS, source, True, task)
    pair_field = _field(first, _PAIR_FIELDS, source, task in ("pair", "similarity"), task)
    label_field = _field(first, _LABEL_FIELDS, source, task != "similarity", task)
    examples.texts = [str(row.get(text_field, "")) for row in rows]
    if task in ("pair", "similarity"):
        examples.text_pairs = [str(row.get(pair_field, "")) for row in rows]
    if label_field is not None:
        names = class_names.get(label_field)
        labels = []
        for number, row in enumerate(rows, 1):
            value = row.get(label_field)
            if value is None or value == "":
                raise ValueError(f"{source!r} example {number} has no {label_field!r}")
            if task == "similarity":
                try:
                    labels.append(float(value))
                except (TypeError, ValueError):
                    raise ValueError(f"{source!r} example {number}: similarity label {value!r} is not a number") from None
            elif names is not None:
                if int(value) < 0:
                    raise ValueError(f"{source!r} has unlabelled examples (label {value}); use a labelled split")
                labels.append(names[int(value)])
            else:
                labels.append(str(value))
        examples.labels = labels
    return examples


def _qa_examples(rows, source):
    examples = TaskExamples("qa", text_pairs=[])
    for number, row in enumerate(rows, 1):
        for name in ("question", "context"):
            if not isinstance(row.get(name), str):
                raise ValueError(f"{source!r} example {number} has no {name!r} text, which task 'qa' needs; its "
                                 f"fields are: {', '.join(sorted(row))}")
        examples.texts.append(row["question"])
        examples.text_pairs.append(row["context"])
        examples.answers.append([] if row.get("is_impossible") else _answer_list(row.get("answers"), source, number))
    return examples


def _answer_list(answers, source, number):
    """Answers given as {"text": [...], "answer_start": [...]} (TFDS, Hugging Face) or as a
    list of {"text", "answer_start"} (SQuAD) -> a list of {"text", "answer_start"}."""
    if answers is None:
        return []
    if isinstance(answers, dict):
        texts, starts = _as_list(answers.get("text", [])), list(answers.get("answer_start", []))
        answers = [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
    if not isinstance(answers, list) or not all(isinstance(a, dict) and "text" in a for a in answers):
        raise ValueError(f"{source!r} example {number}: answers must be a list of {{\"text\", \"answer_start\"}} "
                         f"or {{\"text\": [...], \"answer_start\": [...]}}")
    try:
        return [{"text": str(a["text"]), "answer_start": int(a.get("answer_start", -1))} for a in answers]
    except (TypeError, ValueError):
        raise ValueError(f"{source!r} example {number}: an answer_start is not a character offset") from None


def _as_list(value):
    return value.split() if isinstance(value, str) else list(value)

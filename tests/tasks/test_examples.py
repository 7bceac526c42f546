"""Reading fine-tuning examples from files."""

import pytest

from kmlm.tasks.examples import load_task_examples


@pytest.mark.parametrize("name, content", [
    ("train.csv", "text,label\ngood film,pos\nbad film,neg\n"),
    ("train.tsv", "text\tlabel\ngood film\tpos\nbad film\tneg\n"),
    ("train.jsonl", '{"text": "good film", "label": "pos"}\n{"text": "bad film", "label": "neg"}\n'),
])
def test_a_byte_order_mark_is_not_part_of_the_first_field(name, content, tmp_path):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8-sig")  # what spreadsheet tools write
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    examples = load_task_examples(str(path), "classify")
    assert examples.texts == ["good film", "bad film"] and examples.labels == ["pos", "neg"]

"""Task inputs: pair truncation, tag alignment on words split into several pieces, label
placement, and file/TFDS example loading."""

import json

import numpy as np
import pytest
import tensorflow as tf

from kmlm.pipelines import SPECIAL_TOKENS, make_tokenizer, special_ids
from kmlm.tasks.datasets import IGNORED, tag_dataset, text_dataset
from kmlm.tasks.encoding import text_rows, to_dense, word_rows
from kmlm.tasks.examples import TaskExamples, load_task_examples

# ids: [PAD]0 [UNK]1 [CLS]2 [SEP]3 [MASK]4 new5 york6 ##er7 is8 big9 un10 ##believ11 ##able12 .13
VOCAB = list(SPECIAL_TOKENS) + ["new", "york", "##er", "is", "big", "un", "##believ", "##able", "."]
TOKENIZER = make_tokenizer(VOCAB)
IDS = special_ids(VOCAB)


@tf.function
def _words(words, seq_len):
    return word_rows(TOKENIZER, IDS, words, seq_len=seq_len)


@tf.function
def _texts(a, b, seq_len):
    tokens, segments = text_rows(TOKENIZER, IDS, a, b, seq_len=seq_len)
    return to_dense(tokens, segments, IDS, seq_len)


def test_word_positions_point_at_first_pieces():
    words = tf.ragged.constant([["Yorker", "is", "unbelievable", "."], ["new", "york"]])
    tokens, positions = _words(words, 16)
    # [CLS] york ##er is un ##believ ##able . [SEP]: the words start at 1, 3, 4 and 7
    assert tokens.to_list() == [[2, 6, 7, 8, 10, 11, 12, 13, 3], [2, 5, 6, 3]]
    assert positions.numpy().tolist() == [[1, 3, 4, 7], [1, 2, -1, -1]]


def test_words_beyond_the_row_get_no_position():
    tokens, positions = _words(tf.ragged.constant([["Yorker", "is", "unbelievable", "."]]), 8)
    # 6 pieces fit between [CLS] and [SEP]: "." (the 7th piece) is cut
    assert tokens.to_list() == [[2, 6, 7, 8, 10, 11, 12, 3]]
    assert positions.numpy().tolist() == [[1, 3, 4, -1]]


def test_tag_labels_sit_on_first_pieces_only():
    examples = TaskExamples("tag", tokens=[["Yorker", "is", "unbelievable"]], tags=[["B-LOC", "O", "B-MISC"]])
    index = {"O": 0, "B-LOC": 1, "B-MISC": 2}
    (features, labels, weights), = list(tag_dataset(examples, TOKENIZER, IDS, seq_len=16, batch_size=4,
                                                     tag_index=index).as_numpy_iterator())
    # [CLS] york ##er is un ##believ ##able [SEP], padded to 32 but at most seq_len
    assert features["token_ids"].shape == (1, 16)
    assert features["token_ids"][0, :8].tolist() == [2, 6, 7, 8, 10, 11, 12, 3]
    assert features["document_ids"][0].tolist() == [1] * 8 + [0] * 8
    assert np.flatnonzero(weights[0]).tolist() == [1, 3, 4]
    assert labels[0, [1, 3, 4]].tolist() == [1, 0, 2]
    assert IGNORED < 0 and labels.min() >= 0  # ignored slots are clamped to a valid id with weight 0


def test_pair_truncation_longest_first():
    out = _texts(tf.constant(["new york is big", "un"]), tf.constant(["big", "unbelievable new york"]), 7)
    # budget 4: the 1-piece second text keeps its piece; a 1-piece first text keeps its piece
    assert out["token_ids"].numpy().tolist() == [[2, 5, 6, 8, 3, 9, 3], [2, 10, 3, 10, 11, 12, 3]]
    assert out["segment_ids"].numpy().tolist() == [[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1, 1]]


def test_batches_are_bucketed_to_multiples_of_32():
    examples = TaskExamples("classify", texts=["new york", " ".join(["big"] * 40)], labels=["a", "b"])
    batches = list(text_dataset(examples, TOKENIZER, IDS, seq_len=128, batch_size=1, label_ids=[0, 1]))
    assert [b[0]["token_ids"].shape[1] for b in batches] == [32, 64]


def test_load_examples_from_jsonl_and_csv(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"text": "x y", "text_pair": "z", "label": 1}) + "\n\n" + json.dumps(
            {"text": "p", "text_pair": "q", "label": 0}) + "\n", encoding="utf-8")
    pairs = load_task_examples(str(tmp_path / "a.jsonl"), "pair")
    assert (pairs.texts, pairs.text_pairs, pairs.labels) == (["x y", "p"], ["z", "q"], ["1", "0"])
    assert pairs.label_names() == ["0", "1"]
    (tmp_path / "t.csv").write_text("tokens,tags\nNew York is big,B-LOC I-LOC O O\n", encoding="utf-8")
    tags = load_task_examples(str(tmp_path / "t.csv"), "tag")
    assert tags.tokens == [["New", "York", "is", "big"]] and tags.tags == [["B-LOC", "I-LOC", "O", "O"]]


@pytest.mark.parametrize("content, task, message", [
    ('{"text": "a"}\n', "classify", "'{path}' has no 'label' field (nor score), which task 'classify' needs; "
                                    "its fields are: text"),
    ('{"tokens": ["a", "b"], "tags": ["O"]}\n', "tag", "'{path}' example 1 has 2 tokens but 1 tags"),
    ('{"text": "a", "text_pair": "b", "label": "high"}\n', "similarity",
     "'{path}' example 1: similarity label 'high' is not a number"),
    ("not json\n", "classify", "'{path}' line 1 is not a JSON object (Expecting value)"),
])
def test_bad_examples_files_name_the_problem(tmp_path, content, task, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as raised:
        load_task_examples(str(path), task)
    assert str(raised.value) == message.format(path=path)


def test_tfds_examples_keep_class_names():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        imdb = load_task_examples("tfds:imdb_reviews:train", "classify")
        stsb = load_task_examples("tfds:glue/stsb:validation", "similarity")
    assert len(imdb) == 6 and set(imdb.labels) <= {"neg", "pos"} and all(isinstance(t, str) for t in imdb.texts)
    assert len(stsb) == 6 and all(isinstance(s, float) for s in stsb.labels) and len(stsb.text_pairs) == 6

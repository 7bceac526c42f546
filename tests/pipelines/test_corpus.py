"""Corpus sources: text files, globs, gzip, invalid UTF-8, errors, tfds, builtin, splits."""

import gzip
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from kmlm.pipelines import (
    CorpusStats,
    extract_docstrings,
    load_documents,
    python_docs,
    split_documents,
)
from kmlm.pipelines import corpus as corpus_module

HINT = "give a file, directory, glob, tfds:NAME or builtin:python-docs"


def texts(documents):
    return [text.decode("utf-8") for text in documents.as_numpy_iterator()]


def write(path, content, compress=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_blank_lines_separate_documents(tmp_path):
    path = write(tmp_path / "a.txt", "first line\nsame doc\n\n\n  \t\nsecond doc\r\n\r\nthird\n")
    assert texts(load_documents(str(path))) == ["first line\nsame doc", "second doc", "third"]


def test_one_document_per_line(tmp_path):
    path = write(tmp_path / "a.txt", "one\ntwo\n   \n\nthree  \n")
    assert texts(load_documents(str(path), one_per_line=True)) == ["one", "two", "three"]


def test_directory_is_searched_recursively_for_txt_and_gz(tmp_path):
    write(tmp_path / "b.txt", "from b")
    write(tmp_path / "sub" / "deeper" / "c.txt.gz", "from c\n\nalso c", compress=True)
    write(tmp_path / "a.gz", "from a", compress=True)
    write(tmp_path / "notes.md", "not text")
    write(tmp_path / ".hidden.txt", "hidden")
    stats = CorpusStats()
    assert texts(load_documents(str(tmp_path), stats=stats)) == [
        "from a", "from b", "from c", "also c"]
    assert [os.path.relpath(p, tmp_path) for p in stats.files] == [
        "a.gz", "b.txt", os.path.join("sub", "deeper", "c.txt.gz")]


def test_glob_selects_files(tmp_path):
    write(tmp_path / "x1.txt", "one")
    write(tmp_path / "x2.txt", "two")
    write(tmp_path / "y.txt", "other")
    assert texts(load_documents(str(tmp_path / "x*.txt"))) == ["one", "two"]


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    # Three invalid sequences: a lone continuation byte, an invalid start byte and a
    # truncated 3-byte sequence; the genuine U+FFFD already in the text is not counted.
    content = b"caf\xc3\xa9 \x80 ok\n\n\xff broken \xe2\x82 end \xef\xbf\xbd\n"
    path = write(tmp_path / "bad.txt", content)
    stats = CorpusStats()
    documents = texts(load_documents(str(path), stats=stats))
    assert documents == ["caf\u00e9 \ufffd ok", "\ufffd broken \ufffd end \ufffd"]
    assert stats.invalid_utf8 == 3
    # A second pass over the same files does not double the count.
    texts(load_documents(str(path), stats=stats))
    assert stats.invalid_utf8 == 3


@pytest.mark.parametrize(
    "source, error, message",
    [
        ("missing.txt", FileNotFoundError, f"corpus 'missing.txt' does not exist; {HINT}"),
        ("nothing/*.txt", FileNotFoundError,
         f"corpus glob 'nothing/*.txt' matches no files; {HINT}"),
        ("builtin:wikipedia", ValueError,
         "unknown builtin corpus 'builtin:wikipedia'; the builtin corpora are: "
         "builtin:python-docs"),
        ("tfds:", ValueError,
         "corpus 'tfds:' is not of the form tfds:NAME[/CONFIG][:SPLIT][:FEATURE], "
         "e.g. tfds:imdb_reviews:train:text"),
    ],
)
def test_bad_sources_fail_eagerly_with_one_clear_message(source, error, message, tmp_path,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as raised:
        load_documents(source)
    assert str(raised.value) == message


def test_a_corpus_without_text_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "corpus" / "a.txt", " \n\n\t\n")
    write(tmp_path / "corpus" / "b.txt", "")
    with pytest.raises(ValueError) as raised:
        load_documents("corpus")
    assert str(raised.value) == (
        "corpus 'corpus' contains no text: its 2 file(s) are empty or whitespace only")


def test_a_directory_without_text_files_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "corpus" / "a.md", "text")
    with pytest.raises(FileNotFoundError) as raised:
        load_documents("corpus")
    assert str(raised.value) == f"corpus directory 'corpus' holds no .txt or .gz files; {HINT}"


def test_a_gz_file_that_is_not_gzip_is_refused(tmp_path):
    path = write(tmp_path / "a.gz", "plain text")
    with pytest.raises(ValueError, match="is not gzip-compressed"):
        load_documents(str(path))


def test_input_context_shards_documents(tmp_path):
    path = write(tmp_path / "a.txt", "\n\n".join(f"doc {i}" for i in range(10)))
    shards = [
        texts(load_documents(str(path), input_context=tf.distribute.InputContext(3, i, 1)))
        for i in range(3)
    ]
    assert sorted(sum(shards, [])) == sorted(f"doc {i}" for i in range(10))
    assert all(shards)


# ---------------------------------------------------------------------------------------
# builtin:python-docs


def test_builtin_corpus_is_real_english_prose(python_docs):
    documents = texts(load_documents())
    assert documents == python_docs
    assert len(documents) > 1000
    words = " ".join(documents).lower().split()
    common = {"the", "a", "of", "to", "is", "and", "if", "return", "returns", "in"}
    assert np.mean([w in common for w in words]) > 0.1
    assert all(len(d.split()) >= 4 for d in documents)
    assert len(set(documents)) == len(documents)


def test_docstring_extraction_skips_tests_and_tiny_docstrings_without_importing(tmp_path):
    write(tmp_path / "good.py", (
        'raise SystemExit("importing this module would stop the tests")\n'
        'def f():\n'
        '    """Return the sum of the first and the second value.\n\n'
        '        Indented detail line.\n    """\n'
        'class C:\n    """Tiny."""\n'
        '    def g(self):\n        """A method docstring with enough words in it."""\n'))
    write(tmp_path / "test" / "t.py", '"""A docstring inside a test package is skipped."""')
    write(tmp_path / "pkg" / "tests" / "t.py", '"""Also skipped because it is in tests."""')
    write(tmp_path / "pkg" / "test_mod.py", '"""Skipped: the file is a test module."""')
    write(tmp_path / "pkg" / "mod.py", '"""Kept: a module docstring of a package."""')
    write(tmp_path / "py2.py", 'print "python 2"\n"""Unparsable files are skipped."""')
    write(tmp_path / "noise.py", '"""== -- ** // ++ %% ## @@ !! x"""')
    assert extract_docstrings(str(tmp_path)) == [
        "Return the sum of the first and the second value.\n\nIndented detail line.",
        "A method docstring with enough words in it.",
        "Kept: a module docstring of a package.",
    ]


def test_python_docs_are_cached(tmp_path, monkeypatch):
    calls = []

    def fake_extract(folder):
        calls.append(folder)
        return ["A first document with several words.", "A second one, also\n\nwith lines."]

    monkeypatch.setattr(corpus_module, "extract_docstrings", fake_extract)
    first = python_docs(cache_dir=str(tmp_path))
    assert len(calls) == 1 and len(os.listdir(tmp_path)) == 1
    assert python_docs(cache_dir=str(tmp_path)) == first
    assert len(calls) == 1
    monkeypatch.setenv("KMLM_CACHE_DIR", str(tmp_path))
    assert python_docs() == first and len(calls) == 1


# ---------------------------------------------------------------------------------------
# Held-out split


def test_split_is_disjoint_covering_and_deterministic(python_docs):
    documents = tf.data.Dataset.from_tensor_slices(python_docs)
    train = texts(split_documents(documents, "train"))
    held_out = texts(split_documents(documents, "eval"))
    assert not set(train) & set(held_out)
    assert sorted(train + held_out) == sorted(python_docs)
    assert len(held_out) / len(python_docs) == pytest.approx(0.02, abs=0.006)
    assert texts(split_documents(documents, "eval")) == held_out
    # Membership depends on the text only, not on the order or the company it keeps.
    reordered = tf.data.Dataset.from_tensor_slices(python_docs[::-1])
    assert sorted(texts(split_documents(reordered, "eval"))) == sorted(held_out)


def test_split_of_a_tiny_corpus_keeps_eval_non_empty():
    documents = tf.data.Dataset.from_tensor_slices(["alpha beta", "gamma delta", "epsilon"])
    train = texts(split_documents(documents, "train"))
    held_out = texts(split_documents(documents, "eval"))
    assert len(held_out) >= 1 and len(train) >= 1
    assert sorted(train + held_out) == ["alpha beta", "epsilon", "gamma delta"]


@pytest.mark.parametrize(
    "documents, split, fraction, message",
    [
        (["only one"], "train", 0.02, "the corpus has 1 document(s), all with the same text; "
         "a train/eval split needs at least 2 different documents"),
        (["a", "b"], "test", 0.02, "split 'test' is not one of 'train', 'eval'"),
        (["a", "b"], "eval", 1.5, "eval_fraction 1.5 is outside (0, 1); use e.g. 0.02"),
    ],
)
def test_bad_splits_are_refused(documents, split, fraction, message):
    with pytest.raises(ValueError) as raised:
        split_documents(tf.data.Dataset.from_tensor_slices(documents), split, fraction)
    assert str(raised.value) == message


# ---------------------------------------------------------------------------------------
# TensorFlow Datasets (mocked: nothing is downloaded)


def test_tfds_source_reads_the_text_feature():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=7):
        documents = load_documents("tfds:imdb_reviews:train:text")
        values = list(documents.as_numpy_iterator())
    assert documents.element_spec == tf.TensorSpec([], tf.string)
    assert 1 <= len(values) <= 7 and all(isinstance(v, bytes) and v.strip() for v in values)


def test_tfds_defaults_to_train_split_and_text_feature():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3):
        assert len(list(load_documents("tfds:imdb_reviews").as_numpy_iterator())) >= 1


@pytest.mark.parametrize(
    "source, message",
    [
        ("tfds:imdb_reviews:train:title",
         "tfds dataset 'imdb_reviews' has no feature 'title'; its features are: label, text"),
        ("tfds:imdb_reviews:train:label",
         "tfds feature imdb_reviews:label is not text; pick a string feature of imdb_reviews"),
        ("tfds:no_such_dataset_kmlm",
         "tfds dataset 'no_such_dataset_kmlm' (from 'tfds:no_such_dataset_kmlm') is not known "
         "to tensorflow-datasets; see https://www.tensorflow.org/datasets/catalog for names"),
    ],
)
def test_tfds_errors_name_the_problem(source, message):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(ValueError) as raised:
            load_documents(source)
    assert str(raised.value) == message


def test_tfds_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        load_documents("tfds:imdb_reviews", tfds_data_dir=str(tmp_path))
    assert re.fullmatch(
        r"tfds dataset 'imdb_reviews' is not prepared in '.*' and kmlm never downloads; "
        r"prepare it once with `tfds build imdb_reviews` or set TFDS_DATA_DIR",
        str(raised.value),
    )
    assert os.listdir(tmp_path) == []

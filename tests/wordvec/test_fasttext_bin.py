"""Facebook fastText `.bin` files: the real models in gensim's test data read as gensim reads
them, and files we write read back by gensim (both directions)."""

import os

import numpy as np
import pytest

from kmlm.wordvec.fasttext_bin import FastTextArgs, load_fasttext_bin, save_fasttext_bin
from kmlm.wordvec.subwords import SubwordVectors

gensim_fasttext = pytest.importorskip("gensim.models.fasttext")
from gensim.test.utils import datapath  # noqa: E402

MODELS = ["lee_fasttext.bin", "lee_fasttext_new.bin", "non_ascii_fasttext.bin", "crime-and-punishment.bin",
          "toy-model.bin"]
UNSEEN = ["nightmaree", "recieve", "zzqxj", "walkingly", "été", "Привет", "universityy"]


def _same_vectors(ours, gensim_vectors, words):
    np.testing.assert_allclose([ours.vector(w) for w in words], [gensim_vectors[w] for w in words],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_facebook_models_give_gensims_vectors(name):
    path = datapath(name)
    if not os.path.exists(path):
        pytest.skip(f"{name} is not in this gensim's test data")
    gensim_model = gensim_fasttext.load_facebook_model(path)
    ours = load_fasttext_bin(path)
    vectors = ours.vectors
    assert vectors.words == gensim_model.wv.index_to_key
    assert (vectors.min_n, vectors.max_n, vectors.buckets) == (gensim_model.wv.min_n, gensim_model.wv.max_n,
                                                              gensim_model.wv.bucket)
    assert ours.args.model == ("skipgram" if gensim_model.sg else "cbow")
    _same_vectors(vectors, gensim_model.wv, vectors.words)
    _same_vectors(vectors, gensim_model.wv, UNSEEN + [w[:-1] + "x" for w in vectors.words[:50] if len(w) > 3])
    assert not any(w in vectors for w in UNSEEN)
    np.testing.assert_allclose(ours.output_rows, gensim_model.syn1neg, rtol=1e-6)
    assert vectors.most_similar("nightmaree", top_n=3)[0][0] == gensim_model.wv.most_similar("nightmaree", topn=3)[0][0]


def test_a_file_we_write_loads_in_gensim_with_the_same_vectors(tmp_path):
    rng = np.random.default_rng(0)
    words = ["walk", "walked", "talk", "été", "北京"]
    vectors = SubwordVectors(words, rng.normal(size=(5, 12)), rng.normal(size=(301, 12)), 2, 5,
                             counts=[9, 7, 5, 3, 2])
    output_rows = rng.normal(size=(5, 12))
    path = str(tmp_path / "model.bin")
    save_fasttext_bin(path, vectors, output_rows, FastTextArgs(model="cbow", window=3, epochs=2, min_count=2))
    gensim_model = gensim_fasttext.load_facebook_model(path)
    assert gensim_model.wv.index_to_key == words
    assert [gensim_model.wv.get_vecattr(w, "count") for w in words] == [9, 7, 5, 3, 2]
    assert (gensim_model.sg, gensim_model.window, gensim_model.epochs, gensim_model.wv.bucket) == (0, 3, 2, 301)
    _same_vectors(vectors, gensim_model.wv, words + ["walking", "talked", "étés"])
    np.testing.assert_allclose(gensim_model.syn1neg, output_rows, rtol=1e-6)
    again = load_fasttext_bin(path)
    np.testing.assert_array_equal(again.vectors.ngram_rows, vectors.ngram_rows)
    np.testing.assert_array_equal(again.vectors.counts, vectors.counts)


def test_a_gensim_saved_model_reads_back_with_gensims_vectors(tmp_path):
    from gensim.models import FastText

    sentences = [["the", "cat", "walks", "home"], ["the", "dog", "walked", "home"], ["a", "cat", "talks"]] * 20
    model = FastText(sentences, vector_size=8, min_count=1, epochs=2, bucket=500, min_n=2, max_n=4, workers=1, seed=3)
    path = str(tmp_path / "gensim.bin")
    gensim_fasttext.save_facebook_model(model, path)
    vectors = load_fasttext_bin(path).vectors
    assert vectors.words == model.wv.index_to_key
    _same_vectors(vectors, model.wv, vectors.words + ["walking", "cats", "dogg"])


def test_bad_files_are_refused_with_one_clear_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_fasttext_bin(str(tmp_path / "missing.bin"))
    text = tmp_path / "vectors.vec"
    text.write_text("2 3\n" + "a 1 2 3\n" * 20)
    with pytest.raises(ValueError, match="is not a fastText .bin"):
        load_fasttext_bin(str(text))
    whole = open(datapath("toy-model.bin"), "rb").read()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="is cut short at byte"):
        load_fasttext_bin(str(cut))
    with pytest.raises(ValueError, match="supervised fastText model"):
        load_fasttext_bin(datapath("pang_lee_polarity_fasttext.bin"))

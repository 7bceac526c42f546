"""fastText training: the subword table against gensim's n-gram hashes, a tiny model whose
unseen inflected forms land next to their base forms, the `.bin` it writes read by gensim
with the same vectors, and `kmlm fasttext` / `kmlm vectors` on words never seen."""

import dataclasses
import json
import random

import numpy as np
import pytest
import tensorflow as tf

from kmlm.cli.main import main
from kmlm.wordvec.fasttext import FastTextSettings, initial_rows, save_fasttext_run, subword_matrix, train_fasttext
from tests.helpers import write_corpus

gensim_fasttext = pytest.importorskip("gensim.models.fasttext")

STEMS = ["walk", "talk", "jump", "climb", "paint", "clean", "cook", "play", "watch", "open"]
COMMON = ["the", "a", "they", "we", "often", "today"]


def inflected_corpus(sentences=4000, seed=0):
    """Each stem, as `stem`, `stems` or `stemed`, among context words of its own; the `-ing`
    forms never occur, so only their n-grams can place them."""
    rng = random.Random(seed)
    contexts = {stem: [stem[::-1] + "q" + c for c in "abcd"] for stem in STEMS}
    documents = []
    for _ in range(sentences):
        stem = rng.choice(STEMS)
        words = [rng.choice([stem, stem + "s", stem + "ed"])] + rng.sample(contexts[stem], 2) + rng.sample(COMMON, 2)
        rng.shuffle(words)
        documents.append(" ".join(words))
    return documents


FAST = dict(dim=32, window=3, min_count=1, epochs=3, buckets=5000)


@pytest.fixture(scope="module")
def trained():
    settings = FastTextSettings(model="skipgram", **FAST)
    return settings, train_fasttext(tf.data.Dataset.from_tensor_slices(inflected_corpus()), settings)


def test_subword_rows_are_the_word_then_gensims_buckets():
    words = ["walk", "été", "a", "北京"]
    matrix = subword_matrix(words, 3, 6, 1000)
    for i, word in enumerate(words):
        rows = matrix[i][matrix[i] >= 0].tolist()
        assert rows == [i] + [len(words) + b for b in gensim_fasttext.ft_ngram_hashes(word, 3, 6, 1000)]
    assert subword_matrix(words, 3, 6, 0).tolist() == [[0], [1], [2], [3]] == subword_matrix(words, 0, 0, 10).tolist()


def test_unseen_inflected_forms_land_next_to_their_base_forms(trained):
    _, result = trained
    vectors = result.vectors
    assert not any(stem + "ing" in vectors for stem in STEMS)
    ranks = []
    for stem in STEMS:
        neighbours = [w for w, _ in vectors.most_similar(stem + "ing", top_n=len(vectors))]
        ranks.append(neighbours.index(stem) + 1)
        # among the base forms, its own is the nearest
        assert min(STEMS, key=lambda s: -vectors.similarity(stem + "ing", s)) == stem, stem
    assert np.median(ranks) <= 5, ranks  # of 132 words; the stem's other seen forms are near too


def test_the_bin_loads_in_gensim_with_the_same_vectors(trained, tmp_path):
    settings, result = trained
    save_fasttext_run(str(tmp_path), result, settings, corpus="inflected")
    gensim_model = gensim_fasttext.load_facebook_model(str(tmp_path / "model.bin"))
    vectors = result.vectors
    words = vectors.words + [s + "ing" for s in STEMS] + ["walkd", "climbbed", "zzqx"]
    np.testing.assert_allclose([vectors.vector(w) for w in words], [gensim_model.wv[w] for w in words],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gensim_model.syn1neg, result.output_rows, rtol=1e-6)
    assert (gensim_model.sg, gensim_model.negative, gensim_model.wv.bucket) == (1, 5, 5000)
    assert gensim_model.wv.most_similar("walking", topn=1)[0][0] == vectors.most_similar("walking", top_n=1)[0][0]
    text = open(tmp_path / "vectors.vec").read().split("\n")
    assert text[0] == f"{len(vectors)} 32"
    word, *numbers = text[1].split()
    np.testing.assert_allclose([float(x) for x in numbers], gensim_model.wv[word], rtol=1e-4, atol=1e-6)
    assert json.load(open(tmp_path / "fasttext.json"))["settings"]["buckets"] == 5000


def test_fasttext_command_then_vectors_answer_unseen_and_misspelled_words(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", inflected_corpus(1500, seed=1))
    out = tmp_path / "run"
    assert main(["fasttext", "--corpus", str(corpus), "--out", str(out), "--model", "cbow", "--dim", "16",
                 "--min-count", "1", "--epochs", "2", "--buckets", "3000", "--workers", "2", "--quiet"]) == 0
    assert "model.bin" in capsys.readouterr().out
    for source in (out, out / "model.bin"):
        assert main(["vectors", str(source), "--similar", "cooking", "paintde", "--top-n", "3", "--json"]) == 0
        answers = json.loads(capsys.readouterr().out)["similar"]
        assert set(answers) == {"cooking", "paintde"} and all(len(a) == 3 for a in answers.values())
    gensim_model = gensim_fasttext.load_facebook_model(str(out / "model.bin"))
    assert gensim_model.sg == 0 and gensim_model.wv.bucket == 3000
    expected = [w for w, _ in gensim_model.wv.most_similar("cooking", topn=3)]
    assert [w for w, _ in answers["cooking"]] == expected


def test_rows_start_in_fasttexts_range_not_word2vecs():
    """fastText (and gensim's FastText) start every word and n-gram row uniform in +-1/dim;
    word2vec's +-0.5/dim, further shrunk by averaging a word with its n-grams, left words
    without a random part to tell them apart after a short run (all neighbours at 1.000)."""
    from kmlm.wordvec.word2vec import Word2Vec

    dim, words = 20, [f"w{i}" for i in range(300)]
    ours = np.abs(initial_rows(len(words) + 2000, dim, seed=0))
    reference = gensim_fasttext.FastText(vector_size=dim, min_count=1, bucket=2000, workers=1)
    reference.build_vocab([words])
    theirs = np.abs(np.concatenate([reference.wv.vectors_vocab, reference.wv.vectors_ngrams]))
    assert ours.shape == theirs.shape
    assert ours.max() <= 1 / dim and theirs.max() <= 1 / dim
    np.testing.assert_allclose(ours.mean(), theirs.mean(), rtol=0.02)  # uniform in +-1/dim: mean |x| = 0.5/dim
    plain = Word2Vec(len(words), dim, len(words), seed=0)
    plain({"input_ids": tf.constant([[0]]), "output_ids": tf.constant([[0]])})
    assert np.abs(plain.input_embedding.embeddings.numpy()).max() <= 0.5 / dim  # word2vec.c keeps its own


def test_settings_recorded_in_fasttext_json_include_the_workers(trained, tmp_path):
    settings, result = trained
    save_fasttext_run(str(tmp_path), result, dataclasses.replace(settings, workers=2), corpus="inflected")
    record = json.load(open(tmp_path / "fasttext.json"))
    assert record["settings"]["workers"] == 2
    assert "batch_size" not in record["settings"] and "table_size" not in record["settings"]
    assert len(record["loss"]) == len(record["words_per_second"]) == settings.epochs
    assert record["loss"][-1] < record["loss"][0]

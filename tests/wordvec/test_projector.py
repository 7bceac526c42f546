"""Projector export files parse as TensorBoard reads them; plots are written; the
`kmlm vectors` command answers queries."""

import json
import os

import numpy as np
import pytest
from google.protobuf import text_format
from tensorboard.plugins import projector

from kmlm.cli.main import main
from kmlm.wordvec.projector import export_projector, plot_projection, project
from kmlm.wordvec.vectors import WordVectors

RNG = np.random.default_rng(0)
WORDS = [f"w{i}" for i in range(30)] + ["naïve", "日本"]


def _vectors(counts=True):
    return WordVectors(WORDS, RNG.normal(size=(len(WORDS), 5)), counts=list(range(100, 68, -1)) if counts else None)


@pytest.mark.parametrize("counts", [True, False])
def test_projector_files_parse(tmp_path, counts):
    vectors = _vectors(counts)
    assert export_projector(vectors, str(tmp_path), limit=20) == 20
    rows = (tmp_path / "vectors.tsv").read_text(encoding="utf-8").splitlines()
    metadata = (tmp_path / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 20 and all(len(r.split("\t")) == 5 for r in rows)
    np.testing.assert_allclose(np.array([r.split("\t") for r in rows], dtype=float), vectors.vectors[:20], rtol=1e-5)
    # The projector's rule: a header row only when metadata has two or more columns.
    if counts:
        assert metadata[0] == "word\tcount" and len(metadata) == 21 and metadata[1] == "w0\t100"
    else:
        assert len(metadata) == 20 and metadata[0] == "w0"
    config = text_format.Parse((tmp_path / "projector_config.pbtxt").read_text(), projector.ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.tensor_path == "vectors.tsv" and embedding.metadata_path == "metadata.tsv"
    assert list(embedding.tensor_shape) == [20, 5]


def test_pca_finds_the_main_axis_and_the_plot_is_a_png(tmp_path):
    line = np.outer(np.arange(10.0), [3.0, 4.0, 0.0]) + RNG.normal(scale=1e-3, size=(10, 3))
    points = project(line)
    assert np.abs(points[:, 0]).max() == pytest.approx(22.5, rel=1e-3)  # |t - 4.5| * 5 at the ends
    assert np.abs(points[:, 1]).max() < 0.01
    path = tmp_path / "pca.png"
    plotted = plot_projection(_vectors(), str(path), words=["w1", "w2", "naïve", "missing"])
    assert plotted == ["w1", "w2", "naïve"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unknown projection"):
        project(line, method="umap")


def test_tsne_needs_scikit_learn_or_says_so(tmp_path):
    try:
        import sklearn  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="scikit-learn"):
            project(np.eye(5), method="tsne")
        return
    assert project(RNG.normal(size=(12, 4)), method="tsne").shape == (12, 2)


def test_vectors_command(tmp_path, capsys):
    path = tmp_path / "v.txt"
    _vectors().save(str(path))
    code = main(["vectors", str(path), "--similar", "w0", "--analogy", "w0", "w1", "w2", "--top-n", "2",
                 "--projector", str(tmp_path / "proj"), "--plot", str(tmp_path / "p.png"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [w for w, _ in result["similar"]["w0"]] == [w for w, _ in WordVectors.load(str(path)).most_similar("w0", top_n=2)]
    assert len(result["analogy"]) == 2 and result["projector"]["words"] == len(WORDS)
    assert os.path.isfile(tmp_path / "p.png")
    assert main(["vectors", str(path), "--similar", "nope"]) == 2
    assert "'nope' is not in the vocabulary" in capsys.readouterr().err

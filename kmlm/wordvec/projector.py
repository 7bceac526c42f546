"""Looking at word vectors: TensorBoard Embedding Projector files and a labelled 2-D
scatter plot (PCA, or t-SNE with scikit-learn installed: `pip install kmlm[tsne]`).

Example:
>>> from kmlm.wordvec.vectors import WordVectors
>>> vectors = WordVectors(["king", "queen", "man", "woman"], [[1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]])
>>> export_projector(vectors, "projector", limit=5000)  # rows written
4
>>> plot_projection(vectors, "pca.png", words=["king", "queen", "man", "woman"])  # words labelled
['king', 'queen', 'man', 'woman']
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from kmlm.statistics import principal_components

PROJECTIONS = ("pca", "tsne")
TENSOR_FILE = "vectors.tsv"
METADATA_FILE = "metadata.tsv"
CONFIG_FILE = "projector_config.pbtxt"


def export_projector(vectors, out_dir, limit=None, tensor_name="word_vectors"):
    """Writes the files TensorBoard's Embedding Projector reads (`tensorboard --logdir
    OUT_DIR`, or upload both .tsv files to projector.tensorflow.org).

    `vectors.tsv` has one tab-separated row per word and no header; `metadata.tsv` has a
    header row "word<TAB>count" when counts are known, else one word per line and no header
    (the projector's rule: a header only with two or more columns); `projector_config.pbtxt`
    points the projector at both.

    Args:
        vectors: `WordVectors`.
        out_dir: folder to write (created).
        limit: export only the first `limit` words (the most frequent for trained vectors).
        tensor_name: the name the projector shows.

    Returns:
        The number of words written.
    """
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    count = len(vectors) if limit is None else min(limit, len(vectors))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, TENSOR_FILE), "w", encoding="utf-8") as f:
        for row in vectors.vectors[:count]:
            f.write("\t".join(f"{x:.6g}" for x in row) + "\n")
    with open(os.path.join(out_dir, METADATA_FILE), "w", encoding="utf-8") as f:
        if vectors.counts is not None:
            f.write("word\tcount\n")
            for word, n in zip(vectors.words[:count], vectors.counts[:count]):
                f.write(f"{word}\t{int(n)}\n")
        else:
            for word in vectors.words[:count]:
                f.write(f"{word}\n")
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = tensor_name
    embedding.tensor_path = TENSOR_FILE
    embedding.metadata_path = METADATA_FILE
    embedding.tensor_shape.extend([count, vectors.dim])
    with open(os.path.join(out_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
        f.write(text_format.MessageToString(config))
    return count


def project(matrix, method="pca", seed=0):
    """Projects rows to 2-D: PCA (`kmlm.statistics.principal_components`) or t-SNE (scikit-learn)."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    matrix = np.asarray(matrix, dtype=np.float64)
    if len(matrix) < 2:
        raise ValueError(f"a projection needs at least 2 words; got {len(matrix)}")
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise ValueError("t-SNE needs scikit-learn: pip install 'kmlm[tsne]'; or use --projection pca") from None
        perplexity = min(30.0, max(1.0, (len(matrix) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(matrix)
    return principal_components(matrix, 2)


def plot_projection(vectors, path, words=None, limit=300, method="pca", label_limit=60, title=None, seed=0):
    """Saves a PNG scatter plot of word vectors projected to 2-D, with labels.

    Args:
        vectors: `WordVectors`.
        path: the PNG to write.
        words: the words to plot and label (unknown ones are skipped); default the first
            `limit` words, of which the first `label_limit` get labels.
        method: "pca" or "tsne".

    Labels of words in scripts that the installed fonts lack (e.g. CJK without a CJK font)
    are drawn as boxes.

    Returns:
        The words plotted.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if words is not None:
        missing = [w for w in words if w not in vectors]
        words = [w for w in words if w in vectors]
        if not words:
            raise ValueError(f"none of the words {missing[:5]} is in the vocabulary")
        labelled = set(words)
    else:
        words = vectors.words[:limit]
        labelled = set(words[:label_limit])
    points = project(np.stack([vectors[w] for w in words]), method, seed)
    figure, axes = plt.subplots(figsize=(9, 7))
    axes.scatter(points[:, 0], points[:, 1], s=12, alpha=0.7)
    for word, (x, y) in zip(words, points):
        if word in labelled:
            axes.annotate(word, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    axes.set_title(title or f"{method.upper()} of {len(words)} word vectors")
    axes.set_xticks([])
    axes.set_yticks([])
    with warnings.catch_warnings():
        # Without a CJK font installed, such labels are drawn as boxes; say it once in the docs, not per glyph.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    plt.close(figure)
    return words

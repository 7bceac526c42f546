"""Large corpora are streamed: memory does not grow with the corpus, and one enormous line
is read in pieces. The full-size measurement (10 MB vs 1 GB, whole `kmlm pretrain` runs) is
`benchmarks/corpus_memory.py`; this test runs its corpus generator at 2 MB vs 40 MB."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("corpus_memory", os.path.join(ROOT, "benchmarks", "corpus_memory.py"))
corpus_memory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus_memory)

# What `kmlm pretrain` does with a corpus before training: split it, build the training
# pipeline, draw batches; then report the process's peak resident set size.
PIPELINE_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from kmlm.pipelines import load_documents, mlm_dataset, split_documents
    corpus, vocabulary = sys.argv[1], sys.argv[2].split(",")
    documents = split_documents(load_documents(corpus), "train")
    for batch in mlm_dataset(documents, vocabulary, seq_len=64, batch_size=16).take(40):
        pass
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "paragraph"] + sorted(set(corpus_memory.WORDS))
    peaks = {}
    for size in (2 << 20, 40 << 20):
        corpus = corpus_memory.write_corpus(str(tmp_path / f"corpus-{size}.txt"), size)
        result = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, corpus, ",".join(vocabulary)],
                                capture_output=True, text=True, timeout=300, cwd=ROOT,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert result.returncode == 0, result.stderr[-3000:]
        peaks[size] = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mib"]
        os.remove(corpus)
    print("peak RSS (MiB) by corpus size:", peaks)
    # Loading 40 MB of text as Python strings alone would add more than 60 MiB.
    assert peaks[40 << 20] - peaks[2 << 20] < 40


def test_an_enormous_line_is_read_in_pieces_cut_between_characters(tmp_path):
    from kmlm.pipelines import CorpusStats, load_documents
    from kmlm.pipelines.corpus import _MAX_DOCUMENT_CHARS, _read_line_pieces

    text = ("数据 model 模型 token " * 60_000).strip()  # ~1.3 MB of UTF-8 on one line, no newline
    path = tmp_path / "one-line.txt"
    path.write_text(text, encoding="utf-8")
    with open(path, "rb") as file:
        pieces = list(_read_line_pieces(file, limit=1000))
    assert len(pieces) > 1000 and max(len(p) for p in pieces) <= 1003
    assert b"".join(pieces) == text.encode()
    for piece in pieces:
        piece.decode("utf-8")  # every piece is whole characters

    stats = CorpusStats()
    documents = [d.decode() for d in load_documents(str(path), stats=stats).as_numpy_iterator()]
    assert len(documents) > 1 and max(len(d) for d in documents) <= _MAX_DOCUMENT_CHARS + (1 << 16)
    assert stats.invalid_utf8 == 0 and "\ufffd" not in "".join(documents)
    assert "".join(documents).replace("\n", "") == text

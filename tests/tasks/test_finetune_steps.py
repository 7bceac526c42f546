"""Fine-tuning's steps on a tiny random run: the task directory it writes, the stop on a
non-finite loss, and the correlations it reports for similarity."""

import os
import warnings

import numpy as np
import pytest
import scipy.stats

from kmlm.layers import Pooler
from kmlm.run_directory import MODEL_FILE, load_run
from kmlm.tasks.examples import TaskExamples
from kmlm.tasks.finetune import FinetuneSettings, TaskInfo, Tasker, evaluate_task, finetune
from kmlm.training import NonFiniteLossError
from tests.task_data import write_jsonl
from tests.tiny_run import make_tiny_run

ROWS = [{"text": "the cat sat on a mat", "label": "cat"}, {"text": "the big dog ran", "label": "dog"}] * 4
SETTINGS = dict(task="classify", seq_len=16, batch_size=4, epochs=1)


@pytest.fixture
def tiny_run(tmp_path):
    return make_tiny_run(tmp_path / "run")


def _examples(rows):
    return TaskExamples("classify", texts=[r["text"] for r in rows], labels=[r["label"] for r in rows])


def test_classify_writes_a_whole_task_directory_with_the_bert_pooler(tiny_run, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ROWS)
    out = str(tmp_path / "task")
    result = finetune(tiny_run, out, FinetuneSettings(train=train, eval=train, **SETTINGS), verbose=0)
    assert sorted(os.listdir(out)) == ["metrics.csv", "model.keras", "task.json", "vocab.txt"]  # no partial files
    tasker = Tasker.load(out)
    assert isinstance(tasker.model.get_layer("pooler"), Pooler)
    assert tasker.info.labels == ["cat", "dog"] and result["epochs"] == 1
    assert result["eval"] == evaluate_task(tasker, _examples(ROWS))


def test_a_non_finite_loss_stops_with_fine_tunings_message_and_leaves_nothing(tiny_run, tmp_path):
    run = load_run(tiny_run)
    table = run.model.encoder.embedding.token_embeddings
    table.assign(np.full(table.shape, np.nan, np.float32))
    run.model.save(os.path.join(tiny_run, MODEL_FILE))
    out = str(tmp_path / "task")
    with pytest.raises(NonFiniteLossError, match=r"^fine-tuning stopped: the loss became NaN; lower --learning-rate$"):
        finetune(tiny_run, out, FinetuneSettings(train=write_jsonl(tmp_path / "t.jsonl", ROWS), **SETTINGS), verbose=0)
    assert not os.path.exists(out)


class _FixedEmbedder:
    """A similarity `Tasker` stand-in whose sentence vectors are given."""

    info = TaskInfo(task="similarity", labels=[], seq_len=16, lowercase=True)

    def __init__(self, vectors):
        self.vectors = vectors

    def embed(self, texts, batch_size=32):
        return np.stack([self.vectors[text] for text in texts])


def test_similarity_correlations_match_scipy_and_constant_cosines_report_zero():
    rng = np.random.default_rng(0)
    texts = [f"s{i}" for i in range(12)]
    vectors = {text: rng.normal(size=4) for text in texts}
    examples = TaskExamples("similarity", texts=texts[:6], text_pairs=texts[6:], labels=[0.0, 1, 1, 2, 3, 5])
    metrics = evaluate_task(_FixedEmbedder(vectors), examples)
    a, b = np.stack([vectors[t] for t in texts[:6]]), np.stack([vectors[t] for t in texts[6:]])
    cosines = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert metrics["spearman"] == pytest.approx(scipy.stats.spearmanr(cosines, examples.labels).statistic, abs=1e-9)
    assert metrics["pearson"] == pytest.approx(scipy.stats.pearsonr(cosines, examples.labels).statistic, abs=1e-9)
    constant = evaluate_task(_FixedEmbedder({text: np.ones(4) for text in texts}), examples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(scipy.stats.spearmanr(np.ones(6), examples.labels).statistic)  # undefined ...
    assert constant["spearman"] == 0.0 and constant["pearson"] == 0.0  # ... reported as no relation

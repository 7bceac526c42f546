"""Test order for two workers: the longest test files start first.

`pytest -n 2 --dist loadfile` hands out whole files, in collection order (pyproject.toml sets
`--no-loadscope-reorder`, so xdist does not reorder them by test count). Starting the files
that take longest first and ending on the short ones keeps both workers busy to the end
instead of one finishing a long file alone. The order below is by measured seconds (setup
and calls, from `--durations`); a file not named keeps its place after them. It only
orders: a stale list costs time, never a test.
"""

import os

LONGEST_FIRST = (
    "tasks/test_finetune.py",
    "tasks/test_qa.py",
    "cli/test_main.py",
    "serving/test_masked_lm.py",
    "test_readme_examples.py",
    "pretraining/test_termination.py",
    "pretraining/test_distributed.py",
    "pretraining/test_checkpointing.py",
    "pretraining/test_learning.py",
    "pretraining/test_time_budget_runs.py",
    "tasks/test_finetune_defaults.py",
    "tasks/test_finetune_interrupted.py",
    "pretraining/test_reproducible.py",
    "test_bench_scaling.py",
    "interop/test_families.py",
    "test_disk_full.py",
    "pipelines/test_vocabulary.py",
    "tasks/test_qa_windows.py",
    "pretraining/test_sentence_pairs.py",
    "interop/test_huggingface.py",
    "serving/test_quantize.py",
    "pretraining/test_distill.py",
    "test_bench_train_throughput.py",
    "test_bench_end_to_end.py",
    "test_bench_fill_mask_latency.py",
    "pretraining/test_corpus_changes.py",
    "pretraining/test_job.py",
    "test_bench_input_pipeline.py",
)
_RANK = {name: rank for rank, name in enumerate(LONGEST_FIRST)}
_TESTS = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        path = os.path.relpath(str(item.path), _TESTS).replace(os.sep, "/")
        return _RANK.get(path, len(_RANK))

    items.sort(key=rank)  # stable: tests keep their order within a file

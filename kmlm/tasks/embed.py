"""Sentence vectors without fine-tuning (a pretrained run's encoder, mean-pooled) or from a
fine-tuned similarity model, and nearest-sentence search by cosine similarity."""

import os

import numpy as np

from kmlm.tasks.finetune import TASK_FILE, TaskInfo, Tasker, unit_rows


def load_sentence_embedder(path, *, pooling="mean", seq_len=128):
    """A `Tasker` whose `embed(texts)` gives sentence vectors [N, H].

    Args:
        path: a pretrained run directory, or a `kmlm finetune --task similarity` output.
        pooling: "mean" (real tokens only) or "cls", for a pretrained run.
        seq_len: longest row in tokens, for a pretrained run (at most its max_position).

    Example:
    (Needs a trained run directory such as `runs/demo`, so not run as a test.)
    >>> load_sentence_embedder("runs/demo").embed(["a cat sat", "a dog sat"]).shape  # doctest: +SKIP
    (2, 256)
    """
    if os.path.isfile(os.path.join(path, TASK_FILE)):
        tasker = Tasker.load(path)
        if tasker.info.task != "similarity":
            raise ValueError(f"{path!r} is a fine-tuned {tasker.info.task!r} model; embed with a pretrained run "
                             "directory or a --task similarity model")
        return tasker
    from kmlm.run_directory import load_run
    from kmlm.tasks.models import build_sentence_encoder

    run = load_run(path)
    if seq_len > run.model_config.max_position:
        raise ValueError(f"seq_len={seq_len} exceeds the model's max_position={run.model_config.max_position}; "
                         f"use --seq-len <= {run.model_config.max_position}")
    info = TaskInfo(task="similarity", labels=[], seq_len=seq_len, lowercase=run.config.data.lowercase,
                    pooling=pooling)
    return Tasker(build_sentence_encoder(run.encoder, pooling=pooling), run.vocabulary, info)


def nearest(queries, vectors, top_n):
    """For each query vector, the (index, cosine) of the `top_n` most similar rows of `vectors`."""
    scores = unit_rows(queries) @ unit_rows(vectors).T
    answers = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:top_n]
        answers.append([(int(i), float(row[i])) for i in order])
    return answers

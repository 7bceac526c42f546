"""Writes reference.npz: outputs of the run directories in this folder as kmlm wrote them.

The runs were written by kmlm at commit 2fd6b77 (before the package was split into
subpackages) with:

    kmlm pretrain --preset tiny --hidden-dim 64 --num-heads 2 --intermediate-dim 128 \
        --vocab-size 400 --steps 6 --log-points 2 --seq-len 32 --batch-size 4 --eval-batches 1 --out run
    kmlm finetune run --task classify --train cls.jsonl --out task --epochs 1

(checkpoints/, logs/ and curves.png removed). This script ran at that commit too; the test
`tests/test_legacy_runs.py` loads the same directories with today's code and compares.
"""

import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TEXTS = ["the [MASK] of a list .", "raise an [MASK] if the file does not exist ."]
TASK_TEXTS = ["alpha beta good", "gamma delta bad", "zeta eta theta"]


def main():
    import kmlm

    run = kmlm.load_run(os.path.join(HERE, "run"))
    rng = np.random.default_rng(0)
    token_ids = rng.integers(5, len(run.vocabulary), size=(2, 16)).astype("int32")
    features = {
        "token_ids": token_ids,
        "segment_ids": np.zeros_like(token_ids),
        "document_ids": np.ones_like(token_ids),
        "mask_positions": np.array([[1, 3, 5, 7], [0, 2, 4, 15]], "int32"),
    }
    logits = np.asarray(run.model(features, training=False))
    fill_mask = kmlm.FillMask(run.model, run.vocabulary, lowercase=True)
    fill = [fill_mask(text, top_k=5) for text in TEXTS]
    tasker = kmlm.Tasker.load(os.path.join(HERE, "task"))
    probabilities = np.asarray(tasker.class_probabilities(TASK_TEXTS))
    np.savez(os.path.join(HERE, "reference.npz"), token_ids=token_ids, mask_positions=features["mask_positions"],
             logits=logits, probabilities=probabilities)
    with open(os.path.join(HERE, "fill_mask.json"), "w", encoding="utf-8") as file:
        json.dump(fill, file, indent=1, default=float)


if __name__ == "__main__":
    main()

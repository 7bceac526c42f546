"""Latency of the exported `fill_mask` signature and of the int8 TF Lite export vs the Hugging
Face fill-mask pipeline, on CPU; with `--run`, the int8 model's top-1 agreement with the float
model on held-out text; with `--classifier`, a fine-tuned classifier's accuracy before/after.

All arms are models of the same shape (default: BERT-mini, L4/H256/4 heads/FFN 1024,
vocabulary 8192; random weights unless `--run` gives a trained run), take raw strings and
return the top-5 tokens per [MASK]:

- `export`: `kmlm.export_run` of the `MaskedLMModel`, loaded with `tf.saved_model.load`
  and called through `signatures["fill_mask"]` (in-graph WordPiece, fixed S=128, no XLA),
  as TF Serving runs it minus the network (float32);
- `tflite-int8`: `kmlm export --format tflite --quantize int8` of the same model, run by
  `kmlm.serving.tflite.TFLiteFillMask` (the run's WordPiece in Python, the TF Lite
  interpreter on ids, padding to the longest text rounded up to 16);
- `tflite-float`: the same with `--quantize none` (what int8 itself buys);
- `hf-pad128`: `transformers.pipeline("fill-mask")` on `BertForMaskedLM` (PyTorch, eager,
  `torch.no_grad`), every text padded to 128 tokens like the export;
- `hf-dynamic`: the same pipeline with its default padding (to the longest text in a batch).

The HF tokenizer is a `BertTokenizerFast` over the same vocabulary file; nothing is downloaded.
Calls are interleaved (export, tflite-int8, tflite-float, hf-pad128, hf-dynamic, export, ...)
after warmup; medians.

Agreement (`--run`): over the run's held-out batches (token masking at 0.15, the fixed
evaluation seed of `kmlm evaluate`), the share of masked slots where the int8 model's top-1
token equals the float Keras model's (both over the predictable tokens), and each one's
masked accuracy. Classifier (`--classifier DIR --classifier-test FILE`): accuracy and
macro-F1 of the float model (`Tasker`) and of its int8 TF Lite export on the same examples.
`--write-debian-task DIR` writes a real-text classifier task from this machine's Debian
package list (short description -> section, 4 sections) as train/dev/test JSONL.

    python benchmarks/fill_mask_latency.py
    python benchmarks/fill_mask_latency.py --repeats 30 --batch-sizes 1 32 --json out.json
    python benchmarks/fill_mask_latency.py --run runs/mini --classifier runs/sections \
        --classifier-test tasks/sections/test.jsonl
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (benchmarks/common.py)

WORDS = ("the list of values is sorted before the function returns a new object with each item "
         "in the order given by the key argument and the default value is used when no match is found").split()


def make_texts(count, seed=0):
    """Sentences of 20-40 words with one [MASK], about 30-60 WordPiece tokens."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        words = list(rng.choice(WORDS, size=int(rng.integers(20, 41))))
        words[int(rng.integers(0, len(words)))] = "[MASK]"
        texts.append(" ".join(words) + ".")
    return texts


def make_vocabulary(size):
    """A WordPiece vocabulary learned from the built-in Python docs corpus."""
    from kmlm.pipelines import learn_vocabulary, load_documents

    return learn_vocabulary(load_documents("builtin:python-docs"), size)


def random_run(vocabulary, preset, seq_len, workdir):
    """A `Run` holding a randomly initialised `MaskedLMModel` of `preset`."""
    from kmlm import ModelConfig, build_mlm_model
    from kmlm.run_directory import DataRecord, Run, RunConfig

    config = ModelConfig.from_preset(preset, vocabulary_size=len(vocabulary))
    return Run(path=workdir, config=RunConfig(config, DataRecord(seq_len=seq_len, lowercase=True, mask_rate=0.15)),
               vocabulary=vocabulary, model=build_mlm_model(config))


def build_export(run, seq_len, top_k, workdir):
    import tensorflow as tf

    from kmlm.serving.masked_lm import export_run

    export = export_run(run, os.path.join(workdir, "serving"), seq_len=seq_len, top_k=top_k)
    signature = tf.saved_model.load(export.path).signatures["fill_mask"]
    return lambda texts: signature(text=tf.constant(texts))["top_k_tokens"].numpy()


def build_tflite(run, seq_len, top_k, workdir, quantize, threads):
    """The TF Lite export's runner (`TFLiteFillMask`) and its file size in bytes."""
    from kmlm.serving.tflite import export_tflite, load_tflite

    export = export_tflite(run, os.path.join(workdir, f"tflite-{quantize}"), quantize=quantize, seq_len=seq_len,
                           top_k=top_k, verbose=0)
    return load_tflite(export.path, num_threads=threads), export.size_bytes


def build_hf(vocabulary, config, top_k, seq_len, workdir):
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast, pipeline

    torch.manual_seed(0)
    vocab_file = os.path.join(workdir, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(vocabulary) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True)
    model = BertForMaskedLM(BertConfig(
        vocab_size=len(vocabulary), hidden_size=config.hidden_dim, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_dim,
        max_position_embeddings=config.max_position, hidden_act="gelu",
    )).eval()
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, device=-1, top_k=top_k)
    padded = {"padding": "max_length", "max_length": seq_len, "truncation": True}

    def run(texts, tokenizer_kwargs=None):
        with torch.no_grad():
            return fill(texts, batch_size=len(texts), tokenizer_kwargs=tokenizer_kwargs)

    return {"hf-pad128": lambda texts: run(texts, padded), "hf-dynamic": run}


PEERS = ("hf-pad128", "hf-dynamic")


def measure(arms, texts, repeats, warmup):
    for call in arms.values():
        for _ in range(warmup):
            call(texts)
    times = {name: [] for name in arms}
    for _ in range(repeats):
        for name, call in arms.items():
            start = time.perf_counter()
            call(texts)
            times[name].append(time.perf_counter() - start)
    return times


def top1_agreement(run, runner, batches):
    """Over the run's held-out masked slots: the share where the TF Lite model's top-1 equals
    the float Keras model's (both over the predictable tokens), and each one's accuracy."""
    from kmlm.pipelines import never_predicted
    from kmlm.pretraining.evaluation import eval_dataset

    blocked = never_predicted(run.vocabulary)
    same = right_float = right_tflite = slots = 0
    for features, mask_ids, mask_weights in eval_dataset(run.config.data, run.vocabulary).take(batches):
        logits = run.model(features, training=False).numpy()
        logits[..., blocked] = -np.inf
        float_top1 = logits.argmax(-1)
        tflite_top1 = runner.run_ids(**{name: features[name].numpy() for name in runner.meta["inputs"]})
        tflite_top1 = tflite_top1["top_k_ids"][..., 0]
        real = mask_weights.numpy() > 0
        truth = mask_ids.numpy()
        same += int((float_top1 == tflite_top1)[real].sum())
        right_float += int((float_top1 == truth)[real].sum())
        right_tflite += int((tflite_top1 == truth)[real].sum())
        slots += int(real.sum())
    if not slots:
        raise SystemExit("the run's held-out split gave no masked slots; pass a run with held-out text")
    return {"agreement": same / slots, "float_accuracy": right_float / slots, "int8_accuracy": right_tflite / slots,
            "slots": slots}


def classifier_scores(classifier_dir, test_file, workdir, threads):
    """Accuracy and macro-F1 of a fine-tuned classify/pair model, float (`Tasker`) and int8
    TF Lite, on the examples of `test_file`."""
    from kmlm.serving.tflite import export_tflite, load_tflite
    from kmlm.tasks.finetune import Tasker

    tasker = Tasker.load(classifier_dir)
    examples = [json.loads(line) for line in open(test_file, encoding="utf-8") if line.strip()]
    texts = [row["text"] for row in examples]
    pairs = [row["text_pair"] for row in examples] if tasker.info.task == "pair" else None
    labels = list(tasker.info.labels)
    truth = np.array([labels.index(str(row["label"])) for row in examples])
    export = export_tflite(classifier_dir, os.path.join(workdir, "classifier-int8"), quantize="int8", verbose=0)
    runner = load_tflite(export.path, num_threads=threads)
    predicted = {"float": tasker.class_probabilities(texts, pairs).argmax(1),
                 "int8": runner.class_probabilities(texts, pairs).argmax(1)}
    scores = {name: {"accuracy": float((guess == truth).mean()), "macro_f1": macro_f1(truth, guess, len(labels))}
              for name, guess in predicted.items()}
    scores["agreement"] = float((predicted["float"] == predicted["int8"]).mean())
    scores["examples"] = len(examples)
    return scores


def macro_f1(truth, guess, classes):
    """The unweighted mean over classes of F1 (a class never predicted nor present counts 0)."""
    f1 = []
    for c in range(classes):
        tp = int(((guess == c) & (truth == c)).sum())
        predicted, actual = int((guess == c).sum()), int((truth == c).sum())
        f1.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return float(np.mean(f1))


DEBIAN_PACKAGES = "/var/lib/apt/lists/*_dists_*_main_binary-*_Packages*"
DEBIAN_SECTIONS = ("games", "graphics", "science", "sound")


def write_debian_task(out, per_section=(300, 100, 200), seed=0):
    """train/dev/test.jsonl: Debian package short descriptions labelled by their section."""
    import glob
    import random
    import subprocess

    lists = sorted(glob.glob(DEBIAN_PACKAGES), key=os.path.getsize, reverse=True)  # the main archive first
    if not lists:
        raise SystemExit(f"no Debian package list matches {DEBIAN_PACKAGES}; run apt-get update first")
    text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", lists[0]], capture_output=True, text=True,
                          check=True).stdout
    by_section = {section: set() for section in DEBIAN_SECTIONS}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Section") in by_section and fields.get("Description"):
            by_section[fields["Section"]].add(fields["Description"].strip())
    rng = random.Random(seed)
    splits = {"train": [], "dev": [], "test": []}
    for section, descriptions in sorted(by_section.items()):
        chosen = sorted(descriptions)
        rng.shuffle(chosen)
        start = 0
        for name, count in zip(splits, per_section):
            splits[name] += [{"text": d, "label": section} for d in chosen[start: start + count]]
            start += count
    os.makedirs(out, exist_ok=True)
    for name, rows in splits.items():
        rng.shuffle(rows)
        with open(os.path.join(out, f"{name}.jsonl"), "w", encoding="utf-8") as file:
            file.writelines(json.dumps(row) + "\n" for row in rows)
    say(f"wrote {', '.join(f'{name} {len(rows)}' for name, rows in splits.items())} examples of "
        f"{len(DEBIAN_SECTIONS)} sections to {out}")


def say(*parts):
    print(*parts, file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", default="mini", help="kmlm preset of both models")
    parser.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size of both models")
    parser.add_argument("--seq-len", type=int, default=128, help="S of the export (and of hf-pad128)")
    parser.add_argument("--top-k", type=int, default=5, help="predictions per [MASK]")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32], help="texts per call")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per arm and batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per arm first")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of both (default: all cores)")
    parser.add_argument("--run", default=None, help="a trained kmlm run to measure (its model and vocabulary; "
                        "default: random weights of --preset) and whose held-out text the agreement is measured on")
    parser.add_argument("--agreement-batches", type=int, default=16, help="held-out batches for the agreement")
    parser.add_argument("--classifier", default=None, help="a `kmlm finetune` classify/pair output to score "
                        "before/after int8 quantization")
    parser.add_argument("--classifier-test", default=None, help="JSONL examples (text[, text_pair], label) for it")
    parser.add_argument("--write-debian-task", default=None, metavar="DIR",
                        help="write a classifier task from the Debian package list to DIR and exit")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--jsonl", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    if args.write_debian_task:
        write_debian_task(args.write_debian_task)
        return
    if (args.classifier is None) != (args.classifier_test is None):
        parser.error("--classifier and --classifier-test go together")

    threads = args.threads or os.cpu_count()
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    torch.set_num_threads(threads)

    with tempfile.TemporaryDirectory() as workdir:
        if args.run:
            from kmlm.run_directory import load_run

            run = load_run(args.run)
            args.preset = f"run:{os.path.basename(os.path.normpath(args.run))}"
        else:
            run = random_run(make_vocabulary(args.vocab_size), args.preset, args.seq_len, workdir)
        vocabulary, config = run.vocabulary, run.model_config
        int8, int8_bytes = build_tflite(run, args.seq_len, args.top_k, workdir, "int8", threads)
        float_tflite, float_bytes = build_tflite(run, args.seq_len, args.top_k, workdir, "none", threads)
        arms = {"export": build_export(run, args.seq_len, args.top_k, workdir), "tflite-int8": int8,
                "tflite-float": float_tflite, **build_hf(vocabulary, config, args.top_k, args.seq_len, workdir)}
        results = {"preset": args.preset, "vocabulary_size": len(vocabulary), "seq_len": args.seq_len,
                   "top_k": args.top_k, "threads": threads, "repeats": args.repeats, "batches": {},
                   "tflite_bytes": {"int8": int8_bytes, "float": float_bytes}}
        say(f"{args.preset} (L{config.num_layers}/H{config.hidden_dim}), vocabulary {len(vocabulary)}, "
              f"S={args.seq_len}, top-{args.top_k}, {threads} threads, {args.repeats} interleaved calls per arm; "
              f"model.tflite {int8_bytes / 1e6:.1f} MB int8, {float_bytes / 1e6:.1f} MB float")
        say(f"{'batch':>5}  {'arm':<12} {'median ms':>10} {'min ms':>8} {'ms/text':>8} {'vs export':>10} "
            f"{'vs hf-dyn':>10}")
        for batch in args.batch_sizes:
            times = measure(arms, make_texts(batch, seed=batch), args.repeats, args.warmup)
            medians = {name: statistics.median(values) for name, values in times.items()}
            results["batches"][batch] = {
                name: {"median_ms": 1e3 * medians[name], "min_ms": 1e3 * min(values),
                       "ratio_to_export": medians[name] / medians["export"],
                       "ratio_to_hf_dynamic": medians[name] / medians["hf-dynamic"]}
                for name, values in times.items()
            }
            shape = {"preset": args.preset, "vocabulary_size": len(vocabulary), "seq_len": args.seq_len,
                     "top_k": args.top_k, "batch_size": batch, "threads": threads}
            extra = {"shape": shape, "machine": common.machine()}
            for name, values in times.items():
                common.emit(common.record("fill_mask_latency", "latency_ms", name, 1e3 * medians[name], "ms",
                                          higher_is_better=False, min_ms=1e3 * min(values), **extra),
                            jsonl_path=args.jsonl)
            # ratio = arm latency / baseline latency (the target: tflite-int8 / hf <= 0.5 at batch 1)
            for arm, baselines in (("export", PEERS), ("tflite-int8", ("export", "tflite-float", *PEERS))):
                for name in baselines:
                    common.emit(common.record(
                        "fill_mask_latency", "latency_ratio", arm, 1e3 * medians[arm], "ms",
                        baseline=name, baseline_value=1e3 * medians[name], higher_is_better=False, **extra),
                        jsonl_path=args.jsonl)
            for name, values in times.items():
                say(f"{batch:>5}  {name:<12} {1e3 * medians[name]:>10.1f} {1e3 * min(values):>8.1f} "
                    f"{1e3 * medians[name] / batch:>8.2f} {medians[name] / medians['export']:>9.2f}x "
                    f"{medians[name] / medians['hf-dynamic']:>9.2f}x")
        if args.run:
            agreement = top1_agreement(run, int8, args.agreement_batches)
            results["agreement"] = agreement
            extra = {"shape": {"preset": args.preset, "seq_len": run.config.data.seq_len, "slots": agreement["slots"]},
                     "machine": common.machine()}
            common.emit(common.record("fill_mask_latency", "top1_agreement", "tflite-int8", agreement["agreement"],
                                      "share", compared_with="float", **extra), jsonl_path=args.jsonl)
            for arm in ("float", "int8"):
                common.emit(common.record("fill_mask_latency", "masked_accuracy", arm, agreement[f"{arm}_accuracy"],
                                          "share", **extra), jsonl_path=args.jsonl)
            say(f"held-out top-1 agreement int8 vs float: {agreement['agreement']:.4f} over {agreement['slots']} "
                f"masked slots; masked accuracy float {agreement['float_accuracy']:.4f}, int8 "
                f"{agreement['int8_accuracy']:.4f}")
        if args.classifier:
            scores = classifier_scores(args.classifier, args.classifier_test, workdir, threads)
            results["classifier"] = scores
            extra = {"shape": {"classifier": os.path.basename(os.path.normpath(args.classifier)),
                               "examples": scores["examples"]}, "machine": common.machine()}
            for arm in ("float", "int8"):
                for metric in ("accuracy", "macro_f1"):
                    common.emit(common.record("fill_mask_latency", f"classifier_{metric}", arm, scores[arm][metric],
                                              "share", **extra), jsonl_path=args.jsonl)
            say(f"classifier on {scores['examples']} examples: accuracy float {scores['float']['accuracy']:.4f}, "
                f"int8 {scores['int8']['accuracy']:.4f}; macro-F1 float {scores['float']['macro_f1']:.4f}, int8 "
                f"{scores['int8']['macro_f1']:.4f}; same label {scores['agreement']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
